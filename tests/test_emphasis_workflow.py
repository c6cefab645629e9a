"""Doses and the latent search through the real ``snakemake`` command line,
on the reduced study (2 images, 64 px, 2 steps) with ``emphasis:`` turned on."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from conftest import Study
from promptsweep.search.dose_grid import LATENT_SEARCH_COLUMNS
from test_workflow import planned_after_edit

pytestmark = pytest.mark.workflow

IMAGES = ["square", "blocks"]
SEEDS = [0, 1]
SELECTION_SEEDS = [5]
EVALUATION_SEEDS = [6]
DOSES = ["0.5", "2"]
DOSE_PROMPTS = ["best", "bad"]

EMPHASIS = """\
emphasis:
  doses: [0.5, 2]
  prompts: [best, bad]
  search:
    objective: edge_f1
    selection_seeds: [5]
    evaluation_seeds: [6]
    budget: 40
"""


def with_emphasis(study: Study, text: str = EMPHASIS) -> Study:
    config = study.root / "config" / "config.yaml"
    config.write_text(config.read_text() + text)
    return study


@pytest.fixture(scope="module")
def dose_study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    study = with_emphasis(Study(tmp_path_factory.mktemp("doses")))
    study.snakemake()
    return study


def test_dosed_images_and_records(dose_study: Study) -> None:
    for image in IMAGES:
        for prompt in DOSE_PROMPTS:
            for dose in DOSES:
                for seed in SEEDS:
                    assert (dose_study.root / f"results/generated/{image}/{prompt}@{dose}/seed{seed}.png").is_file()
    record = json.loads((dose_study.root / "results/generated/square/bad@0.5/seed1.json").read_text())
    assert record["method"] == "dose" and record["dose"] == 0.5
    assert set(record["embedding_norms"]) >= {"prompt_embeds_norm", "negative_prompt_embeds_norm", "shift_norm"}
    assert record["embedding"]["words"] == {"bad": {"prompt": "thing", "negative_prompt": "bad"}}
    word = json.loads((dose_study.root / "results/generated/square/bad/seed1.json").read_text())
    assert word["method"] == "text" and word["dose"] is None


def test_dose_response_table(dose_study: Study) -> None:
    table = pd.read_csv(dose_study.root / "results/tables/dose_response.csv")
    expected = ["prompt_id", "kind", "dose", "n", "effect_mean", "effect_ci_low", "effect_ci_high",
                "edge_f1_delta_mean", "edge_f1_delta_ci_low", "edge_f1_delta_ci_high",
                "noise_effect", "smallest_dose_above_noise"]
    assert [column for column in expected if column not in table.columns] == []
    assert sorted(zip(table.prompt_id, table.dose)) == sorted((p, float(d)) for p in DOSE_PROMPTS for d in DOSES)
    assert (table["n"] == len(IMAGES) * len(SEEDS)).all()
    assert (dose_study.root / "results/tables/dose_response.md").is_file()
    assert (dose_study.root / "results/plots/dose_response.png").is_file()


def test_latent_search_table(dose_study: Study) -> None:
    table = pd.read_csv(dose_study.root / "results/tables/latent_search.csv", dtype={"selection_seeds": str, "evaluation_seeds": str})
    assert list(table.columns) == list(LATENT_SEARCH_COLUMNS)
    assert set(table["selection_seeds"]) == {"5"} and set(table["evaluation_seeds"]) == {"6"}
    assert set(table["objective"]) == {"edge_f1"}
    selection = json.loads((dose_study.root / "results/search/selection.json").read_text())
    assert table["candidate"].iloc[0] == selection["chosen"]
    assert set(table["best_word_prompt"]) == {selection["best_word"]}


def test_selection_never_reads_evaluation_seeds(dose_study: Study) -> None:
    """Every job the selection depends on, with its inputs: none is an
    evaluation generation or an evaluation seed's file."""
    output = dose_study.snakemake("--dry-run", "--forceall", "results/search/selection.json").stdout
    assert "rule search_selection:" in output and "rule search_generate:" in output
    assert "rule evaluation_generate:" not in output
    files = [line for line in output.splitlines() if line.startswith(("    input:", "    output:"))]
    assert any("results/search/generated/" in line for line in files)
    assert [line for line in files if "/evaluation" in line] == []
    for seed in EVALUATION_SEEDS:
        assert [line for line in files if re.search(rf"seed{seed}\.(png|json)", line)] == []


def test_second_run_does_nothing(dose_study: Study) -> None:
    assert dose_study.planned_jobs() == {}
    # The search's local rules exist only in such a run: no warning either way.
    dry_run = dose_study.snakemake("--dry-run")
    assert "not present in the Snakefile" not in dry_run.stdout + dry_run.stderr


def test_a_new_dose_is_generated_in_each_images_job(dose_study: Study) -> None:
    planned = planned_after_edit(dose_study, "config/config.yaml", "doses: [0.5, 2]", "doses: [0.5, 2, 1.5]")
    assert planned["generate"] == len(IMAGES)  # which keeps every image it has (tests/test_workflow.py)
    assert "edge_map" not in planned
    # The search grid gains each prompt at the new dose, and only those.
    assert planned["search_generate"] == len(IMAGES) * len(DOSE_PROMPTS)


def test_a_changed_prompt_regenerates_only_its_doses(dose_study: Study) -> None:
    planned = planned_after_edit(dose_study, "config/prompts.tsv", "\tbest quality", "\tbest quality, sharp")
    assert planned["generate"] == len(IMAGES)
    # On the selection seeds: "best" and its two single-dose candidates.
    assert planned["search_generate"] == len(IMAGES) * (1 + len(DOSES))


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("doses: [0.5, 2]", "doses: [0.5, 5]", "['emphasis']['doses'][1]"),
        ("objective: edge_f1", "objective: sharpnes", "emphasis.search.objective: 'sharpnes'"),
        ("evaluation_seeds: [6]", "evaluation_seeds: [6, 5]", "emphasis.search.selection_seeds and emphasis.search.evaluation_seeds share seeds [5]"),
        ("budget: 40", "budget: 10", "emphasis.search.budget: the latent search needs"),
    ],
    ids=["dose-range", "objective", "seed-overlap", "budget"],
)
def test_bad_emphasis_config_stops_before_any_job(study: Study, old: str, new: str, named: str) -> None:
    assert old in EMPHASIS
    with_emphasis(study, EMPHASIS.replace(old, new))
    result = study.snakemake("--dry-run", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert named in output, output[-2000:]
    assert "Job stats" not in output and not (study.root / "results").exists()
