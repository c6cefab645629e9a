"""Shared fixtures: a copy of the workflow with a reduced study, and a runner
for the real ``snakemake`` command line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ["Snakefile", "workflow", "profiles", "config"]

REDUCED_CONFIG = """\
images: config/images.tsv
prompts: config/prompts.tsv
seeds: [0, 1]
generation:
  resolution: 64
  steps: 2
model:
  source: tiny
  name: tiny (random weights)
"""

REDUCED_PROMPTS = """\
prompt_id\tkind\temphasis\ttext
good\tpositive\t1\tgood
best\tpositive\t2\tbest quality
bad\tnegative\t1\tbad
"""


def write_test_image(path: Path, seed: int, size: tuple[int, int] = (80, 96)) -> None:
    """A picture with edges: random rectangles on a plain background."""
    rng = np.random.default_rng(seed)
    pixels = np.full((size[1], size[0], 3), 200, dtype=np.uint8)
    for _ in range(6):
        x0, y0 = rng.integers(0, size[0] - 10), rng.integers(0, size[1] - 10)
        pixels[y0 : y0 + rng.integers(5, 40), x0 : x0 + rng.integers(5, 40)] = rng.integers(0, 255, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def run_snakemake(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The ``snakemake`` command line in ``root``, as a user runs it."""
    # The caller's arguments first: after --resources, a target would be read as a resource.
    command = [sys.executable, "-m", "snakemake", *args, "--cores", "2", "--resources", "gpu=1"]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def copy_workflow(root: Path) -> None:
    """The repository's workflow, profiles and config, copied into ``root``."""
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)


class Study:
    """A copy of the workflow in a temporary directory, with a reduced study."""

    def __init__(self, root: Path) -> None:
        self.root = root
        copy_workflow(root)
        (root / "config" / "config.yaml").write_text(REDUCED_CONFIG)
        (root / "config" / "prompts.tsv").write_text(REDUCED_PROMPTS)
        rows = ["image_id\tpath\tprompt"]
        for index, name in enumerate(["square", "blocks"]):
            write_test_image(root / "resources" / f"{name}.png", index)
            rows.append(f"{name}\tresources/{name}.png\tthing")
        (root / "config" / "images.tsv").write_text("\n".join(rows) + "\n")

    def snakemake(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_snakemake(self.root, *args, check=check)

    def planned_jobs(self) -> dict[str, int]:
        """Rule -> job count of what a run would do now (a dry run)."""
        output = self.snakemake("--dry-run", "--quiet", "rules").stdout
        counts: dict[str, int] = {}
        for line in output.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
                counts[parts[0]] = int(parts[1])
        return counts


@pytest.fixture
def study(tmp_path: Path) -> Study:
    return Study(tmp_path)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in random SD 1.5 model, written once for the session: a
    directory with ``base`` and ``controlnet``. Tests only read it."""
    from promptsweep.families.sd15_tiny import write_tiny_model

    directory = tmp_path_factory.mktemp("tiny")
    write_tiny_model(directory / "base", directory / "controlnet")
    return directory


def load_tiny_pipeline(directory: Path) -> object:
    """The tiny SD 1.5 model written by ``tiny``, loaded on the CPU in float32
    as a study loads weights; each test module loads its own."""
    import torch

    from promptsweep import models

    base = models.resolve_weights(models.ModelSource(str(directory / "base")), [], "base")
    controlnet = models.resolve_weights(models.ModelSource(str(directory / "controlnet")), [], "controlnet")
    return models.load_pipeline(base, controlnet, models.PipelineOptions("cpu", torch.float32))


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    """A reduced study run once to the end, shared by a module's tests."""
    finished = Study(tmp_path_factory.mktemp("study"))
    finished.snakemake()
    return finished


@pytest.fixture
def metric_processes() -> Iterator[None]:
    """Two metric processes for the test; none again after it."""
    from promptsweep.threads import use_metric_processes

    use_metric_processes(2, "cpu", 2)
    yield
    use_metric_processes(0, "cpu", 1)


def killed_while_writing(path: Path) -> None:
    """A process killed inside :func:`promptsweep.files.atomic_path` for
    ``path``, its temporary file half-written: the context's ``finally``
    never runs."""
    script = (
        "import os, sys; from pathlib import Path; from promptsweep import files\n"
        "writing = files.atomic_path(Path(sys.argv[1]))\n"
        "writing.__enter__().write_bytes(b'half a file')\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)
