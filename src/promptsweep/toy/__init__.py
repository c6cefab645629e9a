"""The toy model: Stable Diffusion 1.5's architecture, trained on a toy world
of coloured shapes whose answers are known (:mod:`promptsweep.toy.world`).

``python -m promptsweep.toy train --output src/promptsweep/toy/weights``
trains it and writes its weights in the package's ``weights/``, with the
sha256 of every file in ``weights/SHA256SUMS`` and the settings and log of the
training. A study with ``model.source: toy`` loads them like real weights.
"""

from __future__ import annotations

from pathlib import Path

from promptsweep.files import file_sha256

WEIGHTS = Path(__file__).parent / "weights"
FAMILY = "sd15"
"""The model family whose architecture the toy model has."""
CHECKSUMS = "SHA256SUMS"
GENERATION_DEFAULTS = {
    "resolution": 128,
    "steps": 10,
    "guidance_scale": 5.0,
    "controlnet_scale": 1.5,
    "scheduler": "unipc",
}
"""What suits the toy model: the size it was trained at, the fewest UniPC
steps that keep its pictures, and the guidance and ControlNet scale at which
its pictures follow their edges (baseline edge F1 0.35, against 0.26 at
guidance 7.5 and ControlNet 1.0, in benchmarks/toy_check.py; docs/models.md)."""


class ToyWeightsError(RuntimeError):
    """The shipped toy weights are missing or not the ones recorded."""


def write_checksums(directory: Path) -> None:
    """Record the sha256 of every weight file under ``directory`` in its ``SHA256SUMS``."""
    lines = [
        f"{file_sha256(path)}  {path.relative_to(directory).as_posix()}"
        for path in sorted(directory.rglob("*.safetensors"))
    ]
    (directory / CHECKSUMS).write_text("\n".join(lines) + "\n")


def recorded_checksums(directory: Path = WEIGHTS) -> dict[str, str]:
    """The sha256 of each weight file as ``SHA256SUMS`` records it, by its
    path relative to ``directory``; read without hashing anything, so the
    workflow checks it when it is parsed."""
    manifest = directory / CHECKSUMS
    if not manifest.is_file():
        raise ToyWeightsError(
            f"model.source: toy needs the toy model's weights, and {manifest} is missing; train them with "
            f"python -m promptsweep.toy train --output {directory} (about an hour on 2 CPU cores)"
        )
    return dict(reversed(line.split("  ", 1)) for line in manifest.read_text().splitlines() if line)


def check_checksums(actual: dict[str, str], directory: Path = WEIGHTS) -> None:
    """Check the sha256 of the weight files found (``actual``, as
    :func:`recorded_checksums` names them; the model job has them from
    ``models.resolve_weights``) against the recorded ones.

    Raises :class:`ToyWeightsError` naming the file when one is missing or
    differs (for example a Git LFS pointer checked out instead of the file).
    """
    for name, digest in recorded_checksums(directory).items():
        if actual.get(name) != digest:
            raise ToyWeightsError(
                f"toy weight file {directory / name} is missing or not the one recorded in "
                f"{directory / CHECKSUMS}; train them again with python -m promptsweep.toy train"
            )
