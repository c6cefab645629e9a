"""The optimisation search judged on held-out images and seeds.

Each optimiser's best point and the best word prompt were chosen on the
selection split only; here both are generated on the evaluation split (other
images, other seeds) with the baseline, and compared there. A row of the
table is one optimiser (or the best word prompt):

* ``gain_mean``, ``gain_ci_low``, ``gain_ci_high``: the mean over evaluation
  images of each image's mean paired change of the objective against the
  same-seed baseline, with its 95% t interval over images
  (:func:`promptsweep.stats.mean_ci`); ``edge_f1_drop`` the same for the
  loss of edge F1;
* ``vs_best_word_mean``, ``vs_best_word_ci_low``, ``vs_best_word_ci_high``:
  the optimiser's change minus the best word prompt's, paired by image,
  its 95% t interval, and ``q_value``, the Benjamini-Hochberg adjusted
  p-value of the one-sample t-test over the optimisers' rows.

Changes are in the metric's own direction: for a metric whose lower values
are better (BRISQUE) a negative gain is an improvement, and ``verdict``
says so in words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from promptsweep import emphasis, registry, stats
from promptsweep.emphasis import EDGE_F1
from promptsweep.search.plan import BEST_WORD, word_condition


COLUMNS = (
    "optimiser",
    "candidate",
    "space",
    "objective",
    "direction",
    "evaluations",
    "selection_images",
    "evaluation_images",
    "selection_seeds",
    "evaluation_seeds",
    "selection_objective",
    "gain_mean",
    "gain_ci_low",
    "gain_ci_high",
    "edge_f1_drop",
    "best_word_prompt",
    "vs_best_word_mean",
    "vs_best_word_ci_low",
    "vs_best_word_ci_high",
    "q_value",
    "verdict",
    "point",
)
TOKENS_COLUMNS = (*COLUMNS, "projected_words")
"""The table's columns in the tokens space: also the words each row's soft tokens project to."""


def _joined(values: Sequence[Any]) -> str:
    return ",".join(str(value) for value in values)


def _image_gains(rows: pd.DataFrame, condition: str, metric: str) -> pd.Series:
    return stats.per_image_mean(emphasis.paired_differences(rows, condition, [metric]), metric)


def _point_text(point: Mapping[str, float], prompt_ids: Sequence[str]) -> str:
    return " ".join(f"{p}={point[p]:.3g}" for p in prompt_ids if point[p] != 0) or "baseline"


def judged(change: float, low: float, high: float, direction: str) -> str:
    """"better", "worse" or "no different", by the interval of a change and
    the metric's direction ("higher is better" or "lower is better")."""
    sign = 1 if direction == "higher is better" else -1
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0 <= high:
        return "no different"
    return "better" if sign * change > 0 else "worse"


def search_table(
    rows: pd.DataFrame,
    bests: Mapping[str, Mapping[str, Any]],
    conditions: Mapping[str, str],
    evaluations: Mapping[str, int],
    objective: str,
    space: str,
    prompt_ids: Sequence[str],
    selection_images: Sequence[str],
    evaluation_images: Sequence[str],
    selection_seeds: Sequence[int],
    evaluation_seeds: Sequence[int],
) -> pd.DataFrame:
    """One row per search of ``bests`` (optimiser name, or ``words`` for
    the word prompts, with its best record), judged on ``rows``: the
    evaluation split's per-image metrics (image_id, condition, seed, the
    metrics) of the baseline and of each search's condition
    (``conditions``: search -> condition id). ``evaluations``: the
    generations each search spent on the selection split; ``prompt_ids``
    the directions, in the order the ``point`` column lists their weights.

    A tokens search (its best record holds ``tokens``) has two rows: its
    soft tokens (``selection_objective`` NaN: its trials measured their
    projection) and, as ``<optimiser> words`` (condition
    :func:`promptsweep.search.plan.word_condition`), the words they project
    to, with their selection objective; both name the words in
    ``projected_words``, a column of the tokens space only."""
    direction = registry.METRICS[objective].direction
    word_search = next(search for search in bests if conditions[search] == BEST_WORD)
    word_gains = _image_gains(rows, BEST_WORD, objective)
    judged_rows = []
    for search, best in bests.items():
        tokens = best.get("tokens")
        words = tokens["words"] if tokens else ""
        if "tokens" not in best:
            judged_rows.append((search, search, conditions[search], best["objective"], _point_text(best["point"], prompt_ids), ""))
            continue
        soft = f"{len(tokens['embeddings'])} soft tokens" if tokens else "baseline"
        judged_rows.append((search, search, conditions[search], None, soft, words))
        judged_rows.append(
            (f"{search} words", search, word_condition(search), best["objective"], words or "baseline", words)
        )
    table = []
    for label, search, condition, selection_objective, point, projected in judged_rows:
        gains = _image_gains(rows, condition, objective)
        low, high = stats.mean_ci(gains.to_numpy())
        over_word = (gains - word_gains).dropna().to_numpy()
        is_word = condition == BEST_WORD
        over_low, over_high = (math.nan, math.nan) if is_word else stats.mean_ci(over_word)
        table.append(
            {
                "optimiser": label,
                "candidate": condition,
                "space": space,
                "objective": objective,
                "direction": direction,
                "evaluations": evaluations[search],
                "selection_images": _joined(selection_images),
                "evaluation_images": _joined(evaluation_images),
                "selection_seeds": _joined(selection_seeds),
                "evaluation_seeds": _joined(evaluation_seeds),
                "selection_objective": math.nan if selection_objective is None else selection_objective,
                "gain_mean": float(gains.mean()) if len(gains) else math.nan,
                "gain_ci_low": low,
                "gain_ci_high": high,
                "edge_f1_drop": -float(_image_gains(rows, condition, EDGE_F1).mean()),
                "best_word_prompt": bests[word_search]["prompt_id"],
                "vs_best_word_mean": math.nan if is_word else float(over_word.mean()) if over_word.size else math.nan,
                "vs_best_word_ci_low": over_low,
                "vs_best_word_ci_high": over_high,
                "p_value": math.nan if is_word else stats.mean_test_p(over_word),
                "point": point,
                "projected_words": projected,
            }
        )
    frame = pd.DataFrame(table)
    tested = frame["p_value"].notna()
    frame["q_value"] = math.nan
    if tested.any():
        frame.loc[tested, "q_value"] = stats.benjamini_hochberg(frame.loc[tested, "p_value"].to_numpy())
    frame["verdict"] = [
        _verdict(row, direction) for row in frame.to_dict("records")
    ]
    return frame[list(TOKENS_COLUMNS if any("tokens" in best for best in bests.values()) else COLUMNS)]


def _verdict(row: Mapping[str, Any], direction: str) -> str:
    against_baseline = _compared(judged(row["gain_mean"], row["gain_ci_low"], row["gain_ci_high"], direction), "the baseline")
    if row["candidate"] == BEST_WORD:
        return against_baseline
    against_word = judged(row["vs_best_word_mean"], row["vs_best_word_ci_low"], row["vs_best_word_ci_high"], direction)
    if not (np.isfinite(row["q_value"]) and row["q_value"] < 0.05):
        against_word = "no different"
    return f"{against_baseline}; {_compared(against_word, 'the best word prompt')}"


def _compared(judgement: str, what: str) -> str:
    return f"no different from {what}" if judgement == "no different" else f"{judgement} than {what}"
