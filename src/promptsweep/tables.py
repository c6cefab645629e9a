"""Study tables: one row per pair, one per prompt; CSV, Markdown and LaTeX."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from promptsweep import registry
from promptsweep.conditions import BASELINE
from promptsweep.study import PromptSpec

SIDES = ("baseline", "variant")


def per_image_pair_columns() -> list[str]:
    """Each per-image metric, for both images of a pair."""
    return [f"{metric.name}_{side}" for metric in registry.metrics_of("image") for side in SIDES]


def pair_columns() -> list[str]:
    """The columns of ``pairs.csv``, from the metric registry."""
    pair_metrics = registry.metrics_of("pair")
    return [
        "image_id", "prompt_id", "kind", "emphasis", "seed",
        *(metric.name for metric in pair_metrics), *per_image_pair_columns(),
        "excluded", *(metric.note_column for metric in pair_metrics if metric.load is not None),
        "baseline_path", "variant_path", "ssim_map_path",
    ]


def notes(column: pd.Series) -> pd.Series:
    """A column of notes as text, "" where there is none (a CSV reader gives
    NaN for an empty cell, and a float column when every cell is empty)."""
    return column.astype(object).where(column.notna(), "").astype(str)


def prompt_sheet(prompts: Sequence[PromptSpec]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"prompt_id": p.prompt_id, "kind": p.kind, "emphasis": p.emphasis, "text": p.text} for p in prompts]
    )


def pairs_table(
    comparisons: pd.DataFrame, image_metrics: pd.DataFrame, prompts: Sequence[PromptSpec]
) -> pd.DataFrame:
    """One row per image x prompt x seed: the pair's metrics, the prompt's kind
    and emphasis, and the per-image metrics of both images of the pair.

    ``comparisons`` has the per-pair metrics; ``image_metrics`` has
    ``image_id, condition, seed`` and the per-image metrics for every
    generated image, baselines included.
    """
    sheet = prompt_sheet(prompts).drop(columns="text")
    table = comparisons.merge(sheet, on="prompt_id", how="left")
    by_image = image_metrics.set_index(["image_id", "condition", "seed"])
    for metric in registry.metrics_of("image"):
        values = by_image[metric.name]
        table[f"{metric.name}_baseline"] = [
            values.get((image, BASELINE, seed), math.nan) for image, seed in zip(table.image_id, table.seed)
        ]
        table[f"{metric.name}_variant"] = [
            values.get((image, prompt, seed), math.nan)
            for image, prompt, seed in zip(table.image_id, table.prompt_id, table.seed)
        ]
    table["excluded"] = notes(table["excluded"])
    table.loc[table["excluded"] != "", per_image_pair_columns()] = math.nan
    order = {p.prompt_id: index for index, p in enumerate(prompts)}
    table = table.sort_values(
        ["prompt_id", "image_id", "seed"], key=lambda column: column.map(order) if column.name == "prompt_id" else column
    )
    return table[pair_columns()].reset_index(drop=True)


def _format(value: object, digits: int) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞"
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table."""
    header = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---:" if pd.api.types.is_numeric_dtype(table[c]) else "---" for c in table.columns) + " |"
    rows = ["| " + " | ".join(_format(v, digits).replace("|", "\\|") for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                 "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(character, character) for character in text)


def to_latex(table: pd.DataFrame, caption: str, label: str, digits: int = 3) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``)."""
    alignment = "".join("r" if pd.api.types.is_numeric_dtype(table[c]) else "l" for c in table.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{alignment}}}",
        r"\toprule",
        " & ".join(latex_escape(str(c)) for c in table.columns) + r" \\",
        r"\midrule",
        *[
            " & ".join(latex_escape(_format(v, digits)).replace("–", "--").replace("∞", r"$\infty$") for v in row) + r" \\"
            for row in table.itertuples(index=False)
        ],
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"
