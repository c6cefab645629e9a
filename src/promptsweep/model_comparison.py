"""Several models in one study: ``models:`` in the config.

Each model runs the whole single-model study in its own folder,
``models/<name>/`` (its ``results/`` and ``logs/`` laid out as a single-model
study's), with the images, prompts, seeds and settings of the config. The
workflow loads the study's rules once per model as a Snakemake module whose
paths :func:`path_prefixes` moves into that folder, and whose rules are
prefixed with the name (:func:`rule_name`). The plan of each model
(:func:`promptsweep.plan.study_plan`) writes its paths there itself, through
:func:`results_folder`.

:func:`models_table` then puts every model's answer for every prompt in one
table, ``results/tables/models.csv``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from promptsweep import registry
from promptsweep.quality_tables import NO_CHANGE

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""A model's name: it names a folder and prefixes the model's rules."""

COMPARISON_RULES = ("models_tables", "models_gallery")
"""The rules of workflow/rules/models.smk besides ``all``: no model's rule
(``<name>_<rule>``) may take one of their names."""

MODELS_COLUMNS = [
    "model", "family", "prompt_id", "kind", "text", "n",
    "effect_mean", "effect_ci_low", "effect_ci_high", "noise_floor_mean", "changes",
]
"""The columns of ``models.csv`` before one column per quality metric."""


class ModelsConfigError(ValueError):
    """A ``models:`` entry the user must fix; the message names it."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config: dict[str, Any]
    """The config of this model's single-model study."""


def is_comparison(config: Mapping[str, Any]) -> bool:
    """Whether ``config`` lists several models (``models:``), which then take
    the place of ``model:``."""
    return bool(config.get("models"))


def model_folder(name: str) -> str:
    return f"models/{name}"


def path_prefixes(name: str) -> dict[str, str]:
    """How the study's paths move into the model's folder."""
    return {"results/": f"{model_folder(name)}/results/", "logs/": f"{model_folder(name)}/logs/"}


def results_folder(config: Mapping[str, Any]) -> str:
    """Where a study's results go: ``results``, or the model's folder's in a
    study of several models (whose config's ``model:`` is that model)."""
    if not is_comparison(config):
        return "results"
    return path_prefixes(config["model"]["name"])["results/"].rstrip("/")


def rule_name(config: Mapping[str, Any], rule: str) -> str:
    """A rule's name as Snakemake knows it: prefixed with the model's name in
    a study of several models."""
    return f"{config['model']['name']}_{rule}" if is_comparison(config) else rule


def model_entries(config: Mapping[str, Any]) -> list[ModelEntry]:
    """Each entry of ``models:`` with the config of its own study: the
    config's, with ``model:`` replaced by the entry and the entry's own
    ``generation:`` settings over the config's. Checks each name."""
    entries = []
    seen: set[str] = set()
    for index, model in enumerate(config["models"]):
        name = model.get("name")
        where = f"models[{index}].name"
        if name is None:
            raise ModelsConfigError(f"{where}: missing; give each model a name (it names its folder, models/<name>)")
        if not NAME_PATTERN.match(name) or name in (".", ".."):
            raise ModelsConfigError(
                f"{where}: {name!r} is not a safe folder name; use letters, digits, '_', '-' and '.', "
                "starting with a letter or digit (e.g. sdxl-xinsir)"
            )
        if name in seen:
            raise ModelsConfigError(f"{where}: {name!r} names two models; give each model its own name")
        seen.add(name)
        model = dict(model)
        generation = {**config["generation"], **model.pop("generation", {})}
        entries.append(ModelEntry(name=name, config={**config, "model": model, "generation": generation}))
    for index, entry in enumerate(entries):
        reserved = [rule for rule in COMPARISON_RULES if rule.startswith(f"{entry.name}_")]
        if reserved:
            raise ModelsConfigError(
                f"models[{index}].name: {entry.name!r} would name a rule of this model like the "
                f"comparison's {reserved[0]!r}; choose another name"
            )
        # Rules are named <name>_<rule>: "m" and "m_search" would both have an "m_search_generate".
        clash = next((other.name for other in entries if entry.name.startswith(f"{other.name}_")), None)
        if clash is not None:
            raise ModelsConfigError(
                f"models[{index}].name: {entry.name!r} starts with another model's name and '_' ({clash!r}), "
                "so their rules' names could clash; rename one"
            )
    return entries


def models_table(studies: Mapping[str, tuple[str, pd.DataFrame, pd.DataFrame]]) -> pd.DataFrame:
    """One row per (model, prompt): how much the prompt changes the image and,
    per quality metric, whether it made the image significantly better or
    worse (blank where not).

    ``studies`` maps each model's name to its family, its ``summary.csv`` and
    its ``verdict.csv``. The effect is the mean over images of ``1 -`` the
    effect metric (SSIM, ``registry.EFFECT_METRIC``) to the same-seed
    baseline with its 95% t interval, and the noise floor the same quantity
    between two seeds of the baseline, on the effect's scale (the summary's
    ``noise_effect``; :func:`promptsweep.stats.prompt_statistics`).
    """
    quality = [metric.name for metric in registry.quality_metrics()]
    effect = registry.EFFECT_METRIC
    rows = []
    for model, (family, summary, verdict) in studies.items():
        judged = verdict.set_index("prompt_id")
        for prompt in summary.itertuples(index=False):
            verdict_row = judged.loc[prompt.prompt_id]
            row = {
                "model": model,
                "family": family,
                "prompt_id": prompt.prompt_id,
                "kind": prompt.kind,
                "text": prompt.text,
                "n": prompt.n,
                "effect_mean": prompt.effect,
                "effect_ci_low": 1.0 - getattr(prompt, f"{effect}_ci_high"),
                "effect_ci_high": 1.0 - getattr(prompt, f"{effect}_ci_low"),
                "noise_floor_mean": prompt.noise_effect,
                "changes": verdict_row["changes_image"],
            }
            for name in quality:
                judgement = verdict_row.get(name, "")
                row[name] = "" if pd.isna(judgement) or judgement == NO_CHANGE else judgement
            rows.append(row)
    return pd.DataFrame(rows, columns=[*MODELS_COLUMNS, *quality])
