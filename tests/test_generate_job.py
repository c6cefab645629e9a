"""The generation job keeps an image whose fingerprint is unchanged."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from promptsweep import files
import os

from promptsweep.jobs.generate import (
    GENERATED_LIST,
    folder_problems,
    image_fingerprint,
    is_current,
    write_generated_list,
)

REQUEST = {
    "image_id": "square", "condition": "good", "prompt": "thing, good", "negative_prompt": "",
    "seeds": [0, 1],
    "generation": {"steps": 2, "guidance_scale": 9.0},
    "runtime": {"device": "auto", "batch_size": "auto"},
}
WEIGHTS = {
    "name": "tiny",
    "base": {"directory": "/one/place", "sha256": {"unet.safetensors": "aa"}},
    "controlnet": {"directory": "/one/place", "sha256": {"controlnet.safetensors": "bb"}},
}


def fingerprint(request=REQUEST, seed=0, edge="ee", weights=WEIGHTS) -> str:
    return image_fingerprint(request, seed, edge, weights)


def changed(path: list[str], value) -> dict:
    request = copy.deepcopy(REQUEST)
    target = request
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return request


def test_fingerprint_changes_with_what_the_image_depends_on() -> None:
    reference = fingerprint()
    assert fingerprint() == reference  # deterministic
    assert fingerprint(changed(["prompt"], "thing, better")) != reference
    assert fingerprint(changed(["generation", "steps"], 3)) != reference
    assert fingerprint(changed(["runtime", "batch_size"], 8)) != reference
    assert fingerprint(changed(["embedding"], {"terms": [["good", 0.5]]})) != reference
    assert fingerprint(seed=1) != reference
    assert fingerprint(edge="ff") != reference
    other_weights = copy.deepcopy(WEIGHTS)
    other_weights["base"]["sha256"]["unet.safetensors"] = "cc"
    assert fingerprint(weights=other_weights) != reference


def test_fingerprint_ignores_other_seeds_and_where_the_model_lies() -> None:
    reference = fingerprint()
    assert fingerprint(changed(["seeds"], [0, 1, 2])) == reference  # a new seed keeps seed 0
    moved = copy.deepcopy(WEIGHTS)
    moved["base"]["directory"] = moved["controlnet"]["directory"] = "/another/place"
    assert fingerprint(weights=moved) == reference


def test_is_current_needs_the_image_its_record_and_the_fingerprint(tmp_path: Path) -> None:
    image, record = tmp_path / "seed0.png", tmp_path / "seed0.json"
    assert not is_current(image, record, "abc")
    files.write_png(image, np.zeros((8, 8, 3), np.uint8))
    files.write_json(record, {"fingerprint": "abc", "sha256": files.file_sha256(image)})
    assert is_current(image, record, "abc")
    assert not is_current(image, record, "abd")  # its request, edge map or model changed
    files.write_png(image, np.full((8, 8, 3), 9, np.uint8))
    assert not is_current(image, record, "abc")  # the image is not the one recorded
    image.unlink()
    assert not is_current(image, record, "abc")


def test_folder_problems_are_what_was_done_by_hand(tmp_path: Path) -> None:
    names = ["good/seed0.png", "good/seed1.png", "bad/seed0.png", "new/seed0.png"]
    for name in names[:3]:
        files.write_png(tmp_path / name, np.zeros((8, 8, 3), np.uint8))
        files.write_json((tmp_path / name).with_suffix(".json"), {})
    assert folder_problems(tmp_path, names, ".done") == []  # unfinished: no mark yet
    mark = tmp_path / ".done"
    mark.touch()
    os.utime(mark, (1e9, 1.5e9))
    for name in names[:3]:
        for path in (tmp_path / name, (tmp_path / name).with_suffix(".json")):
            os.utime(path, (1e9, 1e9))
    assert folder_problems(tmp_path, names, ".done") == []  # "new" has neither file: a new condition
    (tmp_path / "good/seed1.png").unlink()
    (tmp_path / "bad/seed0.json").unlink()
    files.write_png(tmp_path / "good/seed0.png", np.ones((8, 8, 3), np.uint8))  # now: after the mark
    assert folder_problems(tmp_path, names, ".done") == [
        f"{tmp_path}/good/seed0.png was changed after it was generated",
        f"{tmp_path}/good/seed1.png is missing",
        f"{tmp_path}/bad/seed0.json is missing",
    ]


def test_an_image_deleted_with_its_record_is_a_problem_only_if_its_job_made_it(tmp_path: Path) -> None:
    images = {"good": [str(tmp_path / "good/seed0.png"), str(tmp_path / "good/seed1.png")]}
    for path in images["good"]:
        files.write_png(Path(path), np.zeros((8, 8, 3), np.uint8))
        files.write_json(Path(path).with_suffix(".json"), {})
    write_generated_list(tmp_path, images)
    (tmp_path / ".done").touch()
    names = ["good/seed0.png", "good/seed1.png", "good/seed2.png"]  # seed 2: new, never generated
    assert folder_problems(tmp_path, names, ".done") == []
    for path in (tmp_path / "good/seed1.png", tmp_path / "good/seed1.json"):
        path.unlink()
    assert folder_problems(tmp_path, names, ".done") == [f"{tmp_path}/good/seed1.png and its record were deleted"]
    # A folder from before the list existed: taken as new, as it always was.
    (tmp_path / GENERATED_LIST).unlink()
    assert folder_problems(tmp_path, names, ".done") == []
