"""A reduced default study on the shipped toy model, through the real
``snakemake`` command line: it loads like real weights, is recorded by name
and checksum, its pictures follow the control edges, and its verdict finds
an effect planted in training and none where none was planted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from promptsweep import registry, toy
from promptsweep.toy import planted, world
from conftest import REPO, copy_workflow, run_snakemake

IMAGES = 10
PROMPTS = """\
prompt_id\tkind\temphasis\ttext
unfade\tnegative\t1\twashed out
unseen\tnegative\t2\tzqxv
"""


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default config (the toy model at its own settings, on the CPU in
    float32 as the figures in docs/models.md were measured) on the ten
    pictures of the default study and two negative prompts: the word for
    the fading that most of the world's pictures have, and a word its
    captions never used."""
    root = tmp_path_factory.mktemp("toy_study")
    copy_workflow(root)
    shutil.copytree(REPO / "resources" / "toy-images", root / "resources" / "toy-images")
    sheet = (REPO / "config" / "toy-images.tsv").read_text().splitlines()
    (root / "config" / "toy-images.tsv").write_text("\n".join(sheet[: IMAGES + 1]) + "\n")
    (root / "config" / "toy-prompts.tsv").write_text(PROMPTS)
    config_path = root / "config" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["runtime"] |= {"device": "cpu", "dtype": "float32"}
    config_path.write_text(yaml.safe_dump(config))
    run_snakemake(root)
    return root


@pytest.mark.workflow
def test_the_toy_models_pictures_follow_the_control_edges(toy_study: Path) -> None:
    image_metrics = pd.read_csv(toy_study / "results" / "tables" / "image_metrics.csv")
    assert len(image_metrics) == IMAGES * 3 * 2
    # The bar; the shipped model scores 0.32 on the full default study.
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
    # The config sets none of them: each is the toy model's own (the resolution as the edge map's size).
    own = dict(toy.GENERATION_DEFAULTS)
    assert min(record["resolution"]) == own.pop("resolution")
    assert {key: record["generation"][key] for key in own} == own


@pytest.mark.workflow
def test_the_toy_models_tables_say_it_is_a_toy_world(toy_study: Path) -> None:
    assert "toy world" in (toy_study / "results" / "tables" / "summary.md").read_text()


def _quality_changes(root: Path, prompt_id: str) -> pd.DataFrame:
    summary = pd.read_csv(root / "results" / "tables" / "quality_summary.csv")
    quality = {metric.name for metric in registry.quality_metrics()}
    rows = summary[(summary["prompt_id"] == prompt_id) & summary["metric"].isin(quality)]
    return rows.set_index("metric")


@pytest.mark.workflow
def test_washed_out_as_a_negative_prompt_has_its_planted_sharpening_effect(toy_study: Path) -> None:
    # Fading lowers the Laplacian variance (promptsweep.toy.planted); most
    # pictures are faded, so pushing away from it sharpens them.
    assert "washed_out" in world.ORDINARY
    sharpness = _quality_changes(toy_study, "unfade").loc["sharpness"]
    assert sharpness["delta_mean"] > 0
    assert sharpness["q_value"] < 0.05


@pytest.mark.workflow
def test_a_word_the_captions_never_used_changes_no_quality_metric_significantly(toy_study: Path) -> None:
    assert "zqxv" not in world.vocabulary()
    changes = _quality_changes(toy_study, "unseen")
    assert len(changes) == len(planted.planted_metrics())
    assert (changes["q_value"] >= 0.05).all(), changes["q_value"]
