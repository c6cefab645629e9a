"""A reduced default study on the shipped toy model, through the real
``snakemake`` command line: it loads like real weights, is recorded by name
and checksum, and its pictures follow the control edges."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from promptsweep import toy
from conftest import REPO, copy_workflow, run_snakemake

IMAGES = 6
PROMPTS = """\
prompt_id\tkind\temphasis\ttext
deblur\tnegative\t1\tblurry
"""


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default config (the toy model at its own settings) on the first
    six pictures of the default study and one prompt."""
    root = tmp_path_factory.mktemp("toy_study")
    copy_workflow(root)
    shutil.copytree(REPO / "resources" / "toy-images", root / "resources" / "toy-images")
    sheet = (REPO / "config" / "toy-images.tsv").read_text().splitlines()
    (root / "config" / "toy-images.tsv").write_text("\n".join(sheet[: IMAGES + 1]) + "\n")
    (root / "config" / "toy-prompts.tsv").write_text(PROMPTS)
    run_snakemake(root)
    return root


@pytest.mark.workflow
def test_the_toy_models_pictures_follow_the_control_edges(toy_study: Path) -> None:
    image_metrics = pd.read_csv(toy_study / "results" / "tables" / "image_metrics.csv")
    assert len(image_metrics) == IMAGES * 2 * 2
    # The bar; the shipped model scores 0.39 on the full default study.
    assert image_metrics["edge_f1"].mean() >= 0.3


@pytest.mark.workflow
def test_each_image_records_the_toy_model_by_name_and_checksum(toy_study: Path) -> None:
    record = json.loads(next((toy_study / "results" / "generated").glob("*/baseline/seed0.json")).read_text())
    assert record["model"]["source"] == "toy"
    assert record["model"]["name"] == "toy (trained on coloured shapes)"
    recorded = {
        f"{role}/{name}": digest for role in ("base", "controlnet") for name, digest in record["model"][role]["sha256"].items()
    }
    assert recorded == toy.recorded_checksums()


@pytest.mark.workflow
def test_the_toy_models_tables_say_it_is_a_toy_world(toy_study: Path) -> None:
    assert "toy world" in (toy_study / "results" / "tables" / "summary.md").read_text()
