"""The optional models Yingyan supports: where each file is published, its pinned sha256 and
size, its licence and what it was trained on.

Only these files are installed by `yingyan models fetch` / `models add`: a file is identified by
its sha256, never by its name, so a renamed copy is recognised and a changed one refused. The
addresses are the publishers' repositories at the commit the pinned files were taken from
(`github.com/OWNER/REPO/raw/COMMIT/PATH` follows GitHub's redirect to the raw or LFS content).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from yingyan.errors import ModelError
from yingyan.modelstore.licences import apache_2_0

Kind = Literal["detector", "recognizer", "liveness"]


@dataclass(frozen=True, slots=True)
class ModelAsset:
    """One file of a model: its installed name, its publisher's address and its pinned digest."""

    file: str
    url: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class SupportedModel:
    name: str
    kind: Kind
    title: str
    assets: tuple[ModelAsset, ...]
    licence: str  # SPDX identifier
    licence_text: str  # the publisher's LICENSE file, installed beside the model
    publisher: str  # who publishes the files and where (repository and commit)
    training_data: str
    notes: str = ""
    manifest: str | None = None  # the built-in recognizer manifest that pins these weights

    @property
    def primary(self) -> ModelAsset:
        """The file the engine is pointed at (the first)."""
        return self.assets[0]


_YUNET_REPO = "ShiqiYu/libfacedetection.train"
_YUNET_COMMIT = "0047ac24afb1a50a0c6105001c89d1b5b805dbf1"
_MFN_REPO = "foamliu/MobileFaceNet"
_MFN_COMMIT = "a6cc9032a659b615f477833e1a70b5e7931bcccc"
_FAS_REPO = "PragatheeshP/Facial_recognition_Attendance_System-with-SCRFD-MobileFaceNet-MiniFASNet"
_FAS_COMMIT = "e8fb986504d07c121ebed35340e9fc1fe43dec2b"
_FAS_ORIGIN = "minivision-ai/Silent-Face-Anti-Spoofing"
_FAS_ORIGIN_COMMIT = "b6d5f04ad78778917853b25c778acef6d5626d15"


def _github(repo: str, commit: str, path: str) -> str:
    return f"https://github.com/{repo}/raw/{commit}/{path}"


YUNET = SupportedModel(
    name="yunet",
    kind="detector",
    title="YuNet face detector (2023mar), ONNX, for OpenCV's FaceDetectorYN",
    assets=(
        ModelAsset(
            file="face_detection_yunet_2023mar.onnx",
            url=_github(_YUNET_REPO, _YUNET_COMMIT, "onnx/yunet_s_640_640.onnx"),
            sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
            size=232_589,
        ),
    ),
    licence="Apache-2.0",
    licence_text=apache_2_0(
        "Copyright 2018-2022 OpenMMLab. All rights reserved.\n"
        "Copyright 2022 OpenMMLab. All rights reserved.\n"
        "Copyright (c) 2022 Shiqi Yu <shiqi.yu@gmail.com>\n\n",
        "Copyright 2018-2023 OpenMMLab.",
    ),
    publisher=(
        f"Shiqi Yu et al., {_YUNET_REPO} at commit {_YUNET_COMMIT}, onnx/yunet_s_640_640.onnx; "
        "the same bytes as OpenCV Zoo's models/face_detection_yunet/"
        "face_detection_yunet_2023mar.onnx"
    ),
    training_data="WIDER FACE (train split); OpenCV Zoo reports val AP 0.884 / 0.866 / 0.750 "
    "(easy / medium / hard)",
    notes="Five landmarks (eyes, nose tip, mouth corners) per face; faces of about 10-300 px.",
)

MOBILEFACENET = SupportedModel(
    name="mobilefacenet",
    kind="recognizer",
    title="MobileFaceNet face recognizer (128-d), ONNX",
    assets=(
        ModelAsset(
            file="MobileFaceNet.onnx",
            url=_github(_MFN_REPO, _MFN_COMMIT, "weights/MobileFaceNet.onnx"),
            sha256="b7120c095d60094f28a4a54ba6a8bf51b297a6273fb40ef6350dfec1f63d9507",
            size=3_998_070,
        ),
    ),
    licence="Apache-2.0",
    licence_text=apache_2_0(),
    publisher=f"{_MFN_REPO} at commit {_MFN_COMMIT}, weights/MobileFaceNet.onnx",
    training_data="a refined MS-Celeb-1M (85,164 identities); Microsoft withdrew MS-Celeb-1M in "
    "2019 and its images were collected without the consent of the people in them: weigh the "
    "training data's terms before deploying",
    notes="Its built-in manifest (and shipped thresholds) pins these weights.",
    manifest="mobilefacenet",
)

MINIFASNET = SupportedModel(
    name="minifasnet",
    kind="liveness",
    title="MiniFASNet V2 + V1SE passive presentation-attack detection, ONNX",
    assets=tuple(
        ModelAsset(
            file=file,
            url=_github(_FAS_REPO, _FAS_COMMIT, f"resources/anti_spoof_models/{file}"),
            sha256=sha,
            size=size,
        )
        for file, sha, size in (
            (
                "2.7_80x80_MiniFASNetV2.onnx",
                "7886c41bcbcc1be00cf8700eddbd8cbd4b1ad138e69010790de2a57a3b01d7e5",
                1_743_495,
            ),
            (
                "4_0_0_80x80_MiniFASNetV1SE.onnx",
                "e67aedf72df3e1912dbf6baa5f7406b8b30c3cb43234170a70dd9d143fea358e",
                1_742_663,
            ),
        )
    ),
    licence="Apache-2.0",
    licence_text=apache_2_0(copyright="Copyright 2020 Minivision", brackets="{}"),
    publisher=(
        f"Minivision, {_FAS_ORIGIN} at commit {_FAS_ORIGIN_COMMIT} (PyTorch weights "
        "resources/anti_spoof_models/*.pth); these ONNX exports of exactly those weights are "
        f"fetched from {_FAS_REPO} at commit {_FAS_COMMIT}"
    ),
    training_data="not published with the weights (Minivision's own data); the vendor reports "
    "its own figures, not an ISO/IEC 30107-3 evaluation",
    notes="Two models used together (softmax outputs averaged) on face crops scaled 2.7x and 4x "
    "about the box; fooled by good screen replays and edge-less prints: one cue among several.",
)

SUPPORTED: dict[str, SupportedModel] = {m.name: m for m in (YUNET, MOBILEFACENET, MINIFASNET)}


def supported_model(name: str) -> SupportedModel:
    """The registry entry for `name`; an unknown name is a ModelError listing the known ones."""
    try:
        return SUPPORTED[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; supported: {', '.join(SUPPORTED)}") from None


def identify(sha256: str) -> tuple[SupportedModel, ModelAsset] | None:
    """The supported model file whose pinned sha256 this is, if any."""
    for model in SUPPORTED.values():
        for asset in model.assets:
            if asset.sha256 == sha256:
                return model, asset
    return None


def largest_size() -> int:
    """The largest pinned file: anything bigger is not a supported model file."""
    return max(a.size for m in SUPPORTED.values() for a in m.assets)
