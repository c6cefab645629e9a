"""The built-in random tiny SD 1.5 model keeps making the same images: its
weights, seeding and generation path are unchanged by other models' code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "reference"))

from tiny_images import REFERENCE, tiny_image_digests  # noqa: E402


def test_tiny_model_images_are_bit_identical_to_the_reference(tmp_path: Path) -> None:
    assert tiny_image_digests(tmp_path) == json.loads(REFERENCE.read_text())
