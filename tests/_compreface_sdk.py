"""Exadel's CompreFace Python SDK, driven in its own environment (`.venv-compreface`, made by
`make test`): the SDK pins requests-toolbelt 0.9.1 and so the end-of-life urllib3 1.x, which the
main environment does not carry. tests/test_compreface.py runs this file with that environment's
Python against a real `yingyan serve`; it imports nothing of Yingyan nor of pytest.

stdin: a JSON plan {"scenario", "host", "port", "key", "stills"}; stdout: the SDK's answers of
that scenario as JSON, which the test checks. An SDK exception ends it with a traceback on stderr
and a non-zero exit, which the test shows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compreface import CompreFace  # type: ignore[import-not-found]

Answers = dict[str, Any]


def unchanged(host: str, port: str, key: str, stills: Path) -> Answers:
    """Add faces for two subjects, recognize, verify, detect, rename, list and delete."""
    compre_face = CompreFace(
        host, port, {"limit": 0, "det_prob_threshold": 0.5, "prediction_count": 2, "status": True}
    )
    recognition = compre_face.init_face_recognition(key)
    faces = recognition.get_face_collection()
    subjects = recognition.get_subjects()
    out: Answers = {"subject_added": subjects.add("biden")}
    added = {
        "obama": faces.add(str(stills / "obama.jpg"), "obama"),
        "biden": faces.add(str(stills / "biden.jpg"), "biden"),
    }
    out["added"] = added
    out["subjects"] = subjects.list()
    out["faces"] = faces.list()
    out["recognized"] = recognition.recognize(str(stills / "obama2.jpg"))
    out["recognized_two"] = recognition.recognize(str(stills / "two_people.jpg"))
    verification = compre_face.init_face_verification(key)
    out["verify_same"] = verification.verify(str(stills / "obama.jpg"), str(stills / "obama2.jpg"))
    out["verify_other"] = verification.verify(str(stills / "obama.jpg"), str(stills / "biden.jpg"))
    out["verify_by_id"] = faces.verify(str(stills / "obama2.jpg"), added["obama"]["image_id"])
    detection = compre_face.init_face_detection(key)
    out["detected"] = detection.detect(
        str(stills / "two_people.jpg"), {"face_plugins": "landmarks"}
    )
    out["renamed"] = subjects.update("biden", "joe_biden")
    out["deleted_face"] = faces.delete(added["obama"]["image_id"])
    out["deleted_all_faces"] = faces.delete_all("joe_biden")
    out["faces_after"] = faces.list()
    out["recognized_after"] = recognition.recognize(str(stills / "obama2.jpg"))
    out["deleted_subject"] = subjects.delete("obama")
    out["deleted_all_subjects"] = subjects.delete_all()
    out["subjects_after"] = subjects.list()
    return out


def scale(host: str, port: str, key: str, stills: Path) -> Answers:
    """Obama and Biden added; another photo of Obama recognized and verified against each."""
    compre_face = CompreFace(host, port, {"prediction_count": 2})
    recognition = compre_face.init_face_recognition(key)
    faces = recognition.get_face_collection()
    ids = {
        name: faces.add(str(stills / f"{name}.jpg"), name)["image_id"]
        for name in ("obama", "biden")
    }
    other_obama = str(stills / "knn" / "test" / "obama1.jpg")
    return {
        "recognized": recognition.recognize(other_obama),
        "verify_by_id": {name: faces.verify(other_obama, ids[name]) for name in ids},
    }


SCENARIOS: dict[str, Callable[[str, str, str, Path], Answers]] = {
    "unchanged": unchanged,
    "scale": scale,
}


def main() -> None:
    plan = json.load(sys.stdin)
    run = SCENARIOS[plan["scenario"]]
    json.dump(run(plan["host"], plan["port"], plan["key"], Path(plan["stills"])), sys.stdout)


if __name__ == "__main__":
    main()
