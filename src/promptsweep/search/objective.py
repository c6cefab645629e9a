"""What a trial of the search measured: its objective and its constraints,
from the per-image metrics of its generations and the baseline's.

The objective is the metric's level (mean over images of each image's mean
over seeds), so that the log and the convergence plot read in the metric's
own unit. Fidelity and prompt agreement are constraints, as in the grid
search: the mean over images of the paired drop in edge F1 (and in CLIP
score, where it was computed) against the same image and seed's baseline
may be at most its tolerance. A constraint's value is the drop minus the
tolerance, so it holds at or below 0 (:class:`promptsweep.search.journal.Outcome`).
"""

from __future__ import annotations

import math

import pandas as pd

from promptsweep import emphasis, stats
from promptsweep.conditions import BASELINE
from promptsweep.emphasis import CLIP_SCORE, EDGE_F1, Tolerances
from promptsweep.search.journal import Outcome

TRIAL = "trial"


def constrained_metrics(objective: str, tolerances: Tolerances, clip_scored: bool) -> dict[str, float]:
    """Each metric a trial may not lower by more than its tolerance: edge F1,
    and CLIP score where it is computed; never the objective itself."""
    limits = {EDGE_F1: tolerances.edge_f1}
    if clip_scored:
        limits[CLIP_SCORE] = tolerances.clip_score
    limits.pop(objective, None)
    return limits


def trial_outcome(trial: pd.DataFrame, baseline: pd.DataFrame, objective: str, tolerances: Tolerances) -> Outcome:
    """The outcome of a trial whose generations have the per-image metrics
    ``trial`` (columns image_id, seed, and the metrics), against the
    baseline's ``baseline`` on the same images and seeds. A NaN objective
    (every image invalid) is no objective; a NaN constraint does not hold."""
    clip_scored = CLIP_SCORE in trial.columns and bool(trial[CLIP_SCORE].notna().any())
    limits = constrained_metrics(objective, tolerances, clip_scored)
    level = stats.per_image_mean(trial, objective)
    value = float(level.mean()) if level.notna().any() else math.nan
    rows = pd.concat([trial.assign(condition=TRIAL), baseline.assign(condition=BASELINE)], ignore_index=True)
    differences = emphasis.paired_differences(rows, TRIAL, list(limits))
    constraints = {}
    for metric, tolerance in limits.items():
        drop = -stats.per_image_mean(differences, metric).mean()
        constraints[f"{metric}_drop_over_tolerance"] = float(drop - tolerance) if math.isfinite(drop) else math.nan
    return Outcome(None if math.isnan(value) else value, constraints)
