"""`yingyan calibrate`: fit a label-free fair-score profile, pick a threshold that holds for
the worst measured group, fit a fusion, and measure the impostor tail of the CompreFace
similarity scale."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import numpy as np
import typer
from rich.console import Console

from yingyan.cli.options import (
    DEFAULT_DETECTOR,
    CalibrationOpt,
    DatasetOpt,
    DatasetRootOpt,
    DetectorOpt,
    HalfOpt,
    WorkersOpt,
    YunetOpt,
    engine_config,
    handles_errors,
    load_calibration,
)

if TYPE_CHECKING:
    from yingyan.config import EngineConfig

calibrate_app = typer.Typer(help="Score calibration: fairness profiles, thresholds.")
out = Console()


@calibrate_app.command("fit")
@handles_errors
def fit(
    dataset: DatasetOpt,
    root: DatasetRootOpt,
    out_file: Annotated[Path, typer.Option("--out", help="profile file to write (JSON)")],
    half: HalfOpt = None,
    method: Annotated[
        str, typer.Option(help="cohort (adaptive score normalisation) or clusters (k-means)")
    ] = "cohort",
    top_k: Annotated[int, typer.Option(min=2, help="cohort: highest scores per template")] = 50,
    clusters: Annotated[int, typer.Option(min=2, max=1000, help="clusters: k-means k")] = 40,
    target_fmr: Annotated[float, typer.Option(min=1e-6, max=0.5)] = 1e-3,
    name: Annotated[str | None, typer.Option(help="profile name (default: the file stem)")] = None,
    detector: DetectorOpt = DEFAULT_DETECTOR,
    yunet_model: YunetOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Fit a fair-score normalisation on reference images of different people. Labels in
    the data are ignored: only templates are used. `cohort` stores the reference templates in
    the profile (treat it as biometric data); `clusters` stores centroids and offsets only."""
    from yingyan.calibration import fit_cohort_profile, fit_profile
    from yingyan.calibration.fair_score import METHODS, CalibrationError
    from yingyan.engine import Engine
    from yingyan.evaluation.fairness import acquire_dataset

    if method not in METHODS:
        raise CalibrationError(f"unknown method {method!r}: choose {', '.join(METHODS)}")
    config = engine_config(detector, None, yunet_model)
    images, acquired = acquire_dataset(dataset, root, half, config, workers=workers)
    # one template per identity: pairs of the reference set must be impostor pairs
    seen: set[str] = set()
    vectors = []
    for im, a in zip(images, acquired, strict=True):
        if a.vector is not None and (im.identity is None or im.identity not in seen):
            vectors.append(a.vector)
            seen.add(im.identity or "")
    fitter = (
        partial(fit_cohort_profile, top_k=top_k)
        if method == "cohort"
        else partial(fit_profile, clusters=clusters)
    )
    profile = fitter(
        np.stack(vectors),
        model=str(Engine(config).model_id),
        name=name or out_file.stem,
        target_fmr=target_fmr,
        fitted_on={"dataset": dataset, "root": str(root), "half": half, "detector": detector},
    )
    if method == "cohort":
        shape = f"top-{top_k} cohort of {len(vectors)} templates"
    else:
        shape = (
            f"{clusters} clusters on {len(vectors)} templates, offsets "
            f"{min(profile.deltas):+.4f}..{max(profile.deltas):+.4f}"
        )
    profile.save(out_file)
    out.print(
        f"profile {profile.name} v{profile.version} ({profile.method}): {shape}; threshold "
        f"{profile.global_threshold:.4f} at FMR {target_fmr:g} on the reference pairs "
        f"→ {out_file}",
        markup=False,
    )


@calibrate_app.command("threshold")
@handles_errors
def threshold(
    dataset: DatasetOpt,
    root: DatasetRootOpt,
    target_fmr: Annotated[float, typer.Option(min=1e-7, max=0.5)] = 1e-4,
    half: HalfOpt = None,
    calibration: CalibrationOpt = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="write the record (JSON)")] = None,
    into: Annotated[
        Path | None,
        typer.Option(help="fusion file: measure with it and store the threshold in it"),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="--into: threshold name (default strict / standard)")
    ] = None,
    detector: DetectorOpt = DEFAULT_DETECTOR,
    yunet_model: YunetOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """The lowest threshold at which every group's same-group FMR meets the target (the
    worst group, not the average), recorded with the data it was measured on. With --into, the
    fusion is measured and the threshold stored in its file as a new thresholds version (its
    model id, hence its templates, unchanged)."""
    from yingyan.evaluation.fairness import acquire_dataset, worst_group_threshold

    profile = load_calibration(calibration)  # before the long acquisition: fail early
    config = engine_config(detector, None, yunet_model)
    if into is not None:
        config = _into_config(config, into, profile is not None)
    images, acquired = acquire_dataset(dataset, root, half, config, workers=workers)
    result = worst_group_threshold(
        images, acquired, target_fmr, score=profile.scores if profile else None
    )
    record = {
        "threshold": result.threshold,
        "target_fmr": target_fmr,
        "worst_group": result.worst_group,
        "group_fmr": result.group_fmr,
        "pairs_per_group": result.pairs,
        "dataset": dataset,
        "root": str(root),
        "half": half,
        "calibration": {"name": profile.name, "version": profile.version} if profile else None,
        "detector": detector,
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out.print(
        f"threshold {result.threshold:.4f}: FMR <= {target_fmr:g} in every group "
        f"(binding group: {result.worst_group})",
        markup=False,
    )
    if min(result.pairs.values()) * target_fmr < 1:
        out.print(
            f"warning: the smallest group has {min(result.pairs.values())} impostor pairs, "
            f"fewer than 1/{target_fmr:g}: the threshold is set by its top score",
            markup=False,
        )
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(record, indent=2))
    if into is not None:
        _store_in_fusion(into, record, name, dataset, root, half, detector)


def _into_config(config: EngineConfig, into: Path, calibrated: bool) -> EngineConfig:
    """The engine measuring a fusion's threshold: that fusion, on plain fused cosine scores."""
    from yingyan.errors import ConfigError

    if calibrated:
        raise ConfigError("--into stores a threshold on plain scores: leave out --calibration")
    if config.fusion is not None and Path(config.fusion).resolve() != into.resolve():
        raise ConfigError(f"YINGYAN_FUSION names {config.fusion}, --into {into}: give one fusion")
    if not into.is_file():
        raise ConfigError(f"--into {into}: no such fusion file")
    return config.with_(fusion=into)


def _store_in_fusion(
    into: Path,
    record: dict[str, object],
    name: str | None,
    dataset: str,
    root: Path,
    half: int | None,
    detector: str,
) -> None:
    """Write the measured threshold into the fusion file as its next thresholds version."""
    import math

    from yingyan.calibration.fusion_fit import save_fusion, with_threshold
    from yingyan.embedding.fusion import load_fusion

    target = float(str(record["target_fmr"]))
    label = name or {1e-4: "strict", 1e-3: "standard"}.get(target, f"fmr-{target:g}")
    pairs = cast(dict[str, int], record["pairs_per_group"])
    row = {
        "name": label,
        # rounded up, so the stored threshold still meets the target on the measured pairs
        "score": math.ceil(float(str(record["threshold"])) * 1e4) / 1e4,
        "fmr": target,
        "worst_group": record["worst_group"],
        "dataset": f"{dataset} {root} half={half} ({min(pairs.values())} to "
        f"{max(pairs.values())} same-group impostor pairs per group)",
        "measured": str(record["measured"])[:10],
        "source": f"worst group's same-group FMR <= {target:g}, detector {detector}: "
        f"`yingyan calibrate threshold --dataset {dataset} --root {root} --target-fmr "
        f"{target:g} --into {into}`",
    }
    spec = with_threshold(load_fusion(into), row)
    save_fusion(spec, into)
    out.print(
        f"{spec.model_id}: threshold {label} = {row['score']} stored, thresholds version "
        f"{spec.thresholds_version} → {into}",
        markup=False,
    )


@calibrate_app.command("tail")
@handles_errors
def tail(
    root: Annotated[Path, typer.Option(help="LFW folder: pairs.txt + lfw-deepfunneled/")],
    into: Annotated[
        Path | None,
        typer.Option(help="fusion file: measure with it and store the tail in it"),
    ] = None,
    max_images: Annotated[
        int | None, typer.Option(min=100, help="only the first N view-2 images")
    ] = None,
    detector: DetectorOpt = DEFAULT_DETECTOR,
    yunet_model: YunetOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """The impostor tail the CompreFace similarity is read through: -log10 FMR of every pair of
    images of different people in LFW view 2, every 0.25 decade. Prints the tail table for the
    recognizer's manifest; with --into, the fusion is measured and the tail stored in its file
    as a new tail version (its model id, hence its templates, unchanged)."""
    import os
    import shlex

    from yingyan.calibration.fusion_fit import save_fusion
    from yingyan.comparison.similarity import SimilarityScale, tail_toml, threshold_score_at
    from yingyan.comparison.thresholds import default_threshold
    from yingyan.embedding.fusion import load_fusion, with_tail
    from yingyan.engine import Engine
    from yingyan.errors import ConfigError
    from yingyan.evaluation.similarity_tail import (
        all_impostor_scores,
        view2_tail,
        view2_templates,
    )

    config = engine_config(detector, None, yunet_model)
    if into is not None:
        if config.recognizer_model is not None:
            raise ConfigError("--into measures a fusion: unset YINGYAN_RECOGNIZER_MODEL")
        config = _into_config(config, into, False)
        load_fusion(into)  # an edited or malformed file fails before any work
    if not (root / "pairs.txt").is_file():
        raise ConfigError(f"--root {root}: no pairs.txt (LFW view 2) there")
    model = Engine(config).model_id  # a fusion is loaded here: its thresholds become known
    env = [
        f"{k}={shlex.quote(os.environ[k])}"
        for k in ("YINGYAN_RECOGNIZER_MODEL", "YINGYAN_RECOGNIZER_MANIFEST")
        if os.environ.get(k)
    ]
    options = [f"--root {shlex.quote(str(root))}", f"--detector {detector}"]
    if config.yunet_model is not None and detector == "yunet":
        options.append(f"--yunet-model {shlex.quote(str(config.yunet_model))}")
    options += [f"--max-images {max_images}"] if max_images else []
    options += [f"--into {shlex.quote(str(into))}"] if into is not None else []
    command = " ".join([*env, "yingyan calibrate tail", *options])

    t = view2_templates(root, config, workers=workers, max_images=max_images)
    impostor = all_impostor_scores(t.names, t.vectors)
    measured = view2_tail(t, impostor, model.name, detector, command)
    out.print(
        f"{model}: tail of {len(impostor):,} impostor pairs ({len(t.names)} of "
        f"{len(t.selected)} images), {len(measured.scores)} knots down to FMR "
        f"1e-{measured.decades[-1]:g}",
        markup=False,
    )
    try:
        anchor = default_threshold(str(model))
    except ConfigError:
        anchor = None
    if anchor is not None:
        scale = SimilarityScale("tail", anchor.score, measured)
        for s in (0.5, 0.9, 0.99):
            cut = threshold_score_at(scale, s)
            out.print(
                f"similarity {s} (0.5 = {anchor.name} {anchor.score}): cosine {cut:.4f}, "
                f"FMR promised {scale.fmr_at(s):.1e}, on these pairs "
                f"{float(np.mean(impostor >= cut)):.1e}",
                markup=False,
            )
    if into is None:
        out.print(f"\nthe [tail] table of {model.name}'s manifest:\n", markup=False)
        out.print(tail_toml(measured), markup=False, soft_wrap=True)
        return
    spec = with_tail(load_fusion(into), measured)
    save_fusion(spec, into)
    out.print(
        f"{spec.model_id}: tail stored, tail version {spec.tail_version} → {into}", markup=False
    )


def register(app: typer.Typer) -> None:
    app.add_typer(calibrate_app, name="calibrate")


@calibrate_app.command("fusion")
@handles_errors
def fusion(
    dataset: DatasetOpt,
    root: DatasetRootOpt,
    out_file: Annotated[Path, typer.Option("--out", help="fusion file to write (JSON)")],
    member: Annotated[
        list[str],
        typer.Option(help="a recognizer: dlib_resnet_v1 or an ONNX file with its manifest"),
    ],
    manifest: Annotated[
        list[str] | None,
        typer.Option(help="manifest per --member, in order ('-' for the usual lookup)"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="fusion name (default: the file stem)")] = None,
    half: HalfOpt = None,
    detector: DetectorOpt = DEFAULT_DETECTOR,
    yunet_model: YunetOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Fit a fusion of two or more recognizers on reference images (e.g. lfw-unpaired: LFW's
    people in no view-2 pair), never on evaluation data: per-model standardisation by impostor
    scores and the weight with the largest genuine/impostor separation."""
    import tempfile

    from yingyan.calibration.fusion_fit import (
        fit_fusion,
        member_of,
        provisional,
        save_fusion,
        split_members,
    )
    from yingyan.embedding.fusion import fusion_json
    from yingyan.errors import ConfigError
    from yingyan.evaluation.fairness import acquire_dataset

    manifests = list(manifest or [])
    if len(member) < 2 or (manifests and len(manifests) != len(member)):
        raise ConfigError("give two or more --member, and one --manifest per member if any")
    config = engine_config(detector, None, yunet_model)
    members = [
        member_of(config, m, None if not manifests or manifests[i] == "-" else manifests[i])
        for i, m in enumerate(member)
    ]
    label = name or out_file.stem
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "provisional.json"
        spec_path.write_text(fusion_json(provisional(members, label)))
        images, acquired = acquire_dataset(
            dataset, root, half, config.with_(fusion=spec_path), workers=workers
        )
    kept = [(im, a) for im, a in zip(images, acquired, strict=True) if a.vector is not None]
    from yingyan.engine import make_recognizer

    dims = [
        make_recognizer(
            config, None if m.recognizer == "dlib_resnet_v1" else Path(m.recognizer), m.manifest
        ).manifest.dimension
        for m in members
    ]
    fused = np.stack([np.asarray(a.vector, dtype=np.float32) for _, a in kept])
    spec = fit_fusion(
        members,
        split_members(fused, dims),
        [im.identity or str(im.path) for im, _ in kept],
        name=label,
        fitted_on=f"{dataset} {root} half={half} detector={detector} "
        f"({len(kept)} of {len(images)} images acquired)",
    )
    save_fusion(spec, out_file)
    ref = spec.reference
    out.print(
        f"fusion {spec.model_id}: weights "
        + ", ".join(f"{m.model_id}={m.weight}" for m in spec.members)
        + f"; reference {ref['genuine_pairs']} genuine / {ref['impostor_pairs']} impostor pairs; "
        f"d' fused {ref['fused']['d_prime']} vs "
        + ", ".join(f"{k} {v['d_prime']}" for k, v in ref["members"].items())
        + f" → {out_file}",
        markup=False,
    )
