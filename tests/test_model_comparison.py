"""Several models in one study (``models:``): the plan of each model, the
checks of their names, the table of every model's answers, and a study of
two tiny models run through the real ``snakemake`` command line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from promptsweep import model_comparison, registry
from promptsweep.plan import PlanError, model_plans, study_plan
from promptsweep.study import generation_defaults
from conftest import Study
from test_plan import _config

TWO_MODELS = [{"name": "sd15", "source": "tiny"}, {"name": "sdxl-tiny", "source": "tiny", "family": "sdxl"}]


def _models_config(tmp_path: Path, models: list[dict[str, Any]]) -> dict[str, Any]:
    return _config(tmp_path, models=models)


def test_each_model_plans_its_study_in_its_own_folder_with_its_own_defaults(tmp_path: Path) -> None:
    plans = model_plans(_models_config(tmp_path, TWO_MODELS))
    assert list(plans) == ["sd15", "sdxl-tiny"]
    sd15, sdxl = plans.values()
    assert sd15.generated("a", "good", "png") == [
        "models/sd15/results/generated/a/good/seed3.png", "models/sd15/results/generated/a/good/seed4.png"
    ]
    assert all(path.startswith("models/sdxl-tiny/results/") for path in sdxl.final_outputs())
    assert sdxl.rule_name("generate") == "sdxl-tiny_generate"
    assert sdxl.comparison_name == "sdxl-tiny"
    # Each family's own defaults, where the shared generation: sets none.
    for plan in plans.values():
        assert plan.config["generation"]["resolution"] == generation_defaults(plan.config["model"])["resolution"]
    assert sdxl.config["model"]["family"] == "sdxl" and sd15.config["model"]["family"] == "sd15"
    # Prompts, images and seeds are shared.
    assert sd15.seeds == sdxl.seeds and list(sd15.prompts) == list(sdxl.prompts)


def test_a_single_model_keeps_todays_paths_and_rule_names(tmp_path: Path) -> None:
    plan = study_plan(_config(tmp_path))
    assert plan.results == "results" and plan.comparison_name is None
    assert plan.rule_name("generate") == "generate"
    assert plan.generated_folder("a") == "results/generated/a"


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([{"source": "tiny"}], "models[0].name: missing"),
        ([{"name": "a/b", "source": "tiny"}], "models[0].name: 'a/b' is not a safe folder name"),
        ([{"name": "..", "source": "tiny"}], "models[0].name: '..' is not a safe folder name"),
        ([{"name": "has space", "source": "tiny"}], "is not a safe folder name"),
        ([{"name": "m", "source": "tiny"}, {"name": "m", "source": "tiny"}], "models[1].name: 'm' names two models"),
        ([{"name": "m", "source": "tiny"}, {"name": "m_search", "source": "tiny"}], "models[1].name: 'm_search' starts"),
        ([{"name": "models", "source": "tiny"}], "models[0].name: 'models' would name a rule"),
        ([{"name": "m", "source": "tiny"}, {"name": "x", "source": "tiny", "family": "sd9"}], "models[1] (x): "),
        ([{"name": "m", "source": "toy", "family": "sdxl"}], "models[0] (m): model.family: the toy model"),
    ],
)
def test_a_models_entry_to_fix_is_named_before_any_job(tmp_path: Path, models: list[dict], message: str) -> None:
    with pytest.raises(PlanError) as error:
        model_plans(_models_config(tmp_path, models))
    assert message in str(error.value)


def test_the_comparisons_rules_are_the_ones_names_are_checked_against() -> None:
    from conftest import REPO

    rules = re.findall(r"^rule (\w+):", (REPO / "workflow" / "rules" / "models.smk").read_text(), flags=re.M)
    assert sorted(rules) == sorted(model_comparison.COMPARISON_RULES)


def _summary(prompt_ids: list[str], effects: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt_id": prompt_ids, "kind": ["positive"] * len(prompt_ids), "text": prompt_ids, "n": [4] * len(prompt_ids),
            "effect": effects, "ssim_ci_low": [1 - e - 0.01 for e in effects], "ssim_ci_high": [1 - e + 0.02 for e in effects],
            "noise_effect": [0.3] * len(prompt_ids),
        }
    )


def test_the_models_table_has_a_row_per_model_and_prompt_with_each_quality_judgement() -> None:
    verdict_a = pd.DataFrame(
        {"prompt_id": ["p", "q"], "changes_image": ["yes", "no"], "sharpness": ["better", "–"], "brisque": ["worse", ""]}
    )
    verdict_b = pd.DataFrame({"prompt_id": ["p", "q"], "changes_image": ["no", "no"], "sharpness": ["–", "worse"]})
    table = model_comparison.models_table(
        {"a": ("sd15", _summary(["p", "q"], [0.5, 0.1]), verdict_a), "b": ("sdxl", _summary(["p", "q"], [0.2, 0.4]), verdict_b)}
    )
    quality = [metric.name for metric in registry.quality_metrics()]
    assert list(table.columns) == [*model_comparison.MODELS_COLUMNS, *quality]
    assert list(zip(table["model"], table["prompt_id"])) == [("a", "p"), ("a", "q"), ("b", "p"), ("b", "q")]
    row = table.iloc[0]
    assert row["family"] == "sd15" and row["changes"] == "yes"
    # The effect's interval is SSIM's, turned around: 1 - SSIM.
    assert row["effect_ci_low"] == pytest.approx(0.5 - 0.02) and row["effect_ci_high"] == pytest.approx(0.5 + 0.01)
    assert row["sharpness"] == "better" and row["brisque"] == "worse" and row["colorfulness"] == ""
    assert table.iloc[1]["sharpness"] == "" and table.iloc[3]["sharpness"] == "worse"


def _study_config(study: Study) -> dict[str, Any]:
    """The study's config as the workflow reads it: the schema's defaults filled in."""
    from snakemake.utils import validate

    from conftest import REPO

    config = yaml.safe_load((study.root / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def test_a_models_entrys_own_generation_is_checked_naming_the_entry(study: Study) -> None:
    config = yaml.safe_load((study.root / "config" / "config.yaml").read_text())
    config["models"] = [TWO_MODELS[0], {**TWO_MODELS[1], "generation": {"steps": "many"}}]
    (study.root / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    result = study.snakemake("--dry-run", check=False)
    assert result.returncode != 0
    assert "models[1] (sdxl-tiny), with its own generation:" in result.stderr + result.stdout
    assert "steps" in result.stderr + result.stdout


def test_two_tiny_models_run_end_to_end_and_a_third_reruns_nothing_of_theirs(study: Study) -> None:
    config = yaml.safe_load((study.root / "config" / "config.yaml").read_text())
    config["models"] = TWO_MODELS
    (study.root / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    study.snakemake()

    for name, plan in model_plans(_study_config(study)).items():
        # The plan's paths are where the workflow wrote: Snakemake moved the rules' into the same folder.
        assert (study.root / plan.generated_folder("square")).is_dir()
        folder = study.root / "models" / name
        assert (folder / "results" / "tables" / "summary.csv").is_file()
        assert (folder / "results" / "gallery" / "index.html").is_file()
        assert (folder / "logs" / "generate").is_dir()
    assert not (study.root / "results" / "generated").exists()
    table = pd.read_csv(study.root / "results" / "tables" / "models.csv")
    assert sorted(set(table["model"])) == ["sd15", "sdxl-tiny"]
    assert sorted(set(table["family"])) == ["sd15", "sdxl"]
    assert len(table) == 2 * 3
    assert (study.root / "results" / "plots" / "models.png").is_file()
    front = (study.root / "results" / "models.html").read_text()
    assert 'src="plots/models.png"' in front
    for name in ("sd15", "sdxl-tiny"):
        assert f'href="../models/{name}/results/gallery/index.html"' in front

    config["models"] = [*TWO_MODELS, {"name": "third", "source": "tiny"}]
    (study.root / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    planned = study.planned_jobs()
    assert planned and all(rule.startswith("third_") or rule in {"models_tables", "models_gallery", "all"} for rule in planned)
