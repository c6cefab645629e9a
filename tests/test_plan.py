"""The study plan, without Snakemake: conditions, requests, paths and the
checks made before any job, for a built-in family and a registered one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from snakemake.utils import validate

from promptsweep import families
from promptsweep.plan import PlanError, study_plan
from promptsweep.study import MODEL_DEFAULT_KEYS
from conftest import REPO, write_test_image
from test_families import StubFamily

PROMPTS = """\
prompt_id\tkind\temphasis\ttext
good\tpositive\t1\tgood
bad\tnegative\t1\tbad
"""


def _config(tmp_path: Path, prompts: str = PROMPTS, **overrides: Any) -> dict[str, Any]:
    """The shipped defaults with a two-image study of ``prompts``, validated
    (and so completed) by the workflow's schema, as the workflow reads it."""
    for index, image in enumerate(("a", "b")):
        write_test_image(tmp_path / f"{image}.png", index)
    (tmp_path / "images.tsv").write_text(
        "image_id\tpath\tprompt\n" + "".join(f"{image}\t{tmp_path / image}.png\thouse\n" for image in ("a", "b"))
    )
    (tmp_path / "prompts.tsv").write_text(prompts)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(images=str(tmp_path / "images.tsv"), prompts=str(tmp_path / "prompts.tsv"), seeds=[3, 4])
    config["model"] = {"source": "tiny", "family": "sd15"}
    for key, value in overrides.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def test_a_plan_lists_each_image_conditions_files_and_requests(tmp_path: Path) -> None:
    plan = study_plan(_config(tmp_path, emphasis={"doses": [0.5]}))
    assert plan.conditions == ["baseline", "good", "bad"]
    assert plan.variants == ["good", "bad", "good@0.5", "bad@0.5"]
    assert plan.generated("a", "good", "png") == ["results/generated/a/good/seed3.png", "results/generated/a/good/seed4.png"]
    pairs = plan.pair_files("b")
    assert pairs["variants"]["bad@0.5"] == plan.generated("b", "bad@0.5", "png")
    assert len(pairs["ssim_maps"]) == len(plan.variants) * len(plan.seeds)
    baseline, dosed = plan.generation_request("a", "baseline"), plan.generation_request("a", "good@0.5")
    assert baseline["prompt"] == "house" and baseline["seeds"] == [3, 4]
    assert dosed["prompt"] == "house, good" and dosed["embedding"]["terms"] == [["good", 0.5]]
    assert "metric_processes" not in baseline["runtime"]
    assert "results/tables/dose_response.csv" in plan.final_outputs()
    assert "results/pair_metrics/b/bad.tsv" in plan.final_outputs()


def test_images_are_sharded_in_sheet_order(tmp_path: Path) -> None:
    plan = study_plan(_config(tmp_path, images_per_generation_job=3))
    assert plan.image_shards() == [["a", "b"]]
    plan = study_plan(_config(tmp_path, images_per_generation_job=1))
    assert plan.image_shards() == [["a"], ["b"]]


def test_a_registered_family_goes_through_the_plan_with_its_own_defaults(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))  # registered for this test only
    families.register(StubFamily())
    config = _config(tmp_path, model={"source": "tiny", "family": "stub"})
    config["generation"] = {key: value for key, value in config["generation"].items() if key not in MODEL_DEFAULT_KEYS}
    plan = study_plan(config)
    request = plan.generation_request("b", "bad")
    assert request["negative_prompt"] == "bad"
    assert request["generation"]["steps"] == StubFamily.defaults["steps"]
    assert plan.config["generation"]["resolution"] == StubFamily.defaults["resolution"]
    assert plan.model_params()["family"] == "stub"
    # The stub's guidance of 1 reads no negative prompt: the tables must say so.
    assert "ignored every negative prompt" in plan.caveat


def test_a_weighted_text_a_family_cannot_read_stops_the_plan_naming_the_row(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))
    families.register(StubFamily())
    families.register(type("Unweighted", (StubFamily,), {"name": "unweighted", "reads_weights": False})())
    weighted = PROMPTS + "sharp\tpositive\t2\t(sharp)1.5\n"
    with pytest.raises(PlanError, match=r"prompts.tsv: prompt sharp: .*weight syntax"):
        study_plan(_config(tmp_path, weighted, model={"source": "tiny", "family": "unweighted"}))
    assert study_plan(_config(tmp_path, weighted, model={"source": "tiny", "family": "stub"})).prompts["sharp"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": {"family": "sd9"}}, "model.family"),
        ({"model": {"source": "toy", "family": "sdxl"}}, "model.family: the toy model is a sd15 model"),
        ({"plots": {"quality_metric": "ssim"}}, "plots.quality_metric"),
        ({"runtime": {"compile": True, "cpu_offload": True}}, "runtime.compile"),
        # A learned metric whose weights metrics.aesthetic does not name would be NaN in every trial.
        (
            {
                "emphasis": {
                    "prompts": ["good", "bad"],
                    "search": {
                        "optimisers": ["random"],
                        "objective": "aesthetic",
                        "budget": 4,
                        "selection_images": ["a"],
                        "evaluation_images": ["b"],
                        "selection_seeds": [1],
                        "evaluation_seeds": [2],
                    },
                }
            },
            "emphasis.search.objective: 'aesthetic' needs weights",
        ),
        # The gradient optimiser needs a family that generates with gradients ...
        (
            {"model": {"source": "tiny", "family": "sdxl"}, "emphasis": {"prompts": ["good"], "search": {
                "optimisers": ["gradient"], "objective": "sharpness", "budget": 4, "selection_images": ["a"],
                "evaluation_images": ["b"], "selection_seeds": [1], "evaluation_seeds": [2]}}},
            "emphasis.search.optimisers: gradient cannot generate with gradients on the sdxl family",
        ),
        # ... whose images no safety checker sees ...
        (
            {"runtime": {"safety_checker": True}, "emphasis": {"prompts": ["good"], "search": {
                "optimisers": ["gradient"], "objective": "sharpness", "budget": 4, "selection_images": ["a"],
                "evaluation_images": ["b"], "selection_seeds": [1], "evaluation_seeds": [2]}}},
            "emphasis.search.optimisers: gradient generates without the safety checker",
        ),
        # ... and backpropagates through at most the generation's steps.
        (
            {"generation": {"steps": 4}, "emphasis": {"prompts": ["good"], "search": {
                "optimisers": {"gradient": {"backprop_steps": 5}}, "objective": "sharpness", "budget": 4,
                "selection_images": ["a"], "evaluation_images": ["b"], "selection_seeds": [1], "evaluation_seeds": [2]}}},
            r"emphasis.search.optimisers.gradient.backprop_steps: 5 is more than the generation's 4 steps",
        ),
        # The same for the grid search over doses.
        (
            {
                "emphasis": {
                    "doses": [0.5],
                    "search": {"objective": "aesthetic", "budget": 100, "selection_seeds": [1], "evaluation_seeds": [2]},
                }
            },
            "emphasis.search.objective: 'aesthetic' needs weights",
        ),
    ],
)
def test_config_errors_name_their_key_before_any_job(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        study_plan(_config(tmp_path, **overrides))


def test_a_broken_sheet_row_is_a_plan_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="prompts.tsv"):
        study_plan(_config(tmp_path, PROMPTS + "good\tpositive\t2\tgood again\n"))


def test_each_scope_of_per_image_metrics_scores_its_own_images(tmp_path: Path) -> None:
    search = {"objective": "sharpness", "budget": 100, "selection_seeds": [1], "evaluation_seeds": [2]}
    plan = study_plan(_config(tmp_path, emphasis={"doses": [0.5], "search": search}))
    study = plan.scored_images("image_metrics", "a")
    # The study's jobs depend on the generated folder, which the generate job writes whole.
    assert study.inputs == ["results/generated/a"] and study.conditions == ["baseline", "good", "bad"]
    assert study.images[0] == "results/generated/a/baseline/seed3.png" and study.seeds == [3, 4]
    selection = plan.scored_images("search/image_metrics", "b")
    assert selection.seeds == [1] and selection.conditions == plan.search_conditions
    assert set(selection.inputs) == {*selection.images, *selection.records}
    evaluation = plan.scored_images("search/evaluation_metrics", "b")
    assert evaluation.seeds == [2] and evaluation.conditions == ["baseline", "chosen", "best_word"]
    assert all(path.endswith("seed2.json") for path in evaluation.records)
    with pytest.raises(ValueError, match="no per-image metrics 'search/other'"):
        plan.scored_images("search/other", "a")
