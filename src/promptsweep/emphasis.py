"""Emphasis as a number: additional prompts applied in the text-embedding space.

The study's word prompts change an image's conditioning in whole steps: a
positive prompt ``a`` turns the text ``p`` into ``"p, a"``, a negative prompt
``n`` turns the empty negative text into ``n``. Here the same change is taken
as a direction in the text encoder's output space and applied by a continuous
*dose* ``d``. With ``E(text)`` the (1, 77, D) text-encoder output the pipeline
conditions on (every one of CLIP's 77 positions, padding included):

* positive prompt: condition ``E(p) + d (E("p, a") - E(p))``, unconditional ``E("")``;
* negative prompt: condition ``E(p)``, unconditional ``E("") + d (E(n) - E(""))``.

``d = 0`` is the baseline and ``d = 1`` the word variant, exactly (see
:func:`dosed_pair`). The positive dose is the prompt weighting proposed in
CompVis/stable-diffusion pull request #580 ("Add prompt weights to the
txt2img script", 2023, not merged): the difference between the embeddings of
the whole prompt with and without a sub-prompt is taken as that sub-prompt's
contribution and scaled by its weight. compel scales a token's offset from
the empty text's embedding in the same way, per token. Treating the
difference of two prompt embeddings as an attribute direction that can be
scaled and added is the approach of S. A. Baumann et al., "Continuous,
Subject-Specific Attribute Control in T2I Models by Identifying Semantic
Directions", 2024 (arXiv:2403.17064).

The module also holds the ids of dosed conditions.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promptsweep.study import ConditionPrompts

# torch and compel are imported where text is encoded: the table functions
# run in workflow steps that never load a model, and importing compel (it
# imports diffusers) takes seconds. Tensor arithmetic uses tensor methods.
if TYPE_CHECKING:
    import torch
    from compel import Compel

DOSES_KEY = "emphasis.doses"

DOSE_RANGE = (-2.0, 4.0)
DOSE_DECIMALS = 4

# Condition ids become file names and Snakemake wildcards: TERM_PATTERN
# matches a dosed condition ("pos5@0.5"), for wildcard_constraints.
_PROMPT_ID = r"[A-Za-z0-9_-]+"
_DOSE = r"-?[0-9]+(?:\.[0-9]+)?"
TERM_PATTERN = rf"{_PROMPT_ID}@{_DOSE}"

TextEncoder = Callable[[str], "torch.Tensor"]


class EmphasisConfigError(ValueError):
    """A value under the config's ``emphasis`` key that the user must change."""


# --- Text encoding ----------------------------------------------------------


def _compel(pipeline: Any) -> Compel:
    # compel's defaults are the ones that reproduce diffusers' encode_prompt
    # for SD 1.x/2.x: truncation to the tokenizer's 77 positions, the text
    # encoder's last hidden state (already layer-normed), attention mask
    # value 1 on padding. They are spelled out so a changed default shows.
    from compel import Compel, ReturnedEmbeddingsType

    return Compel(
        tokenizer=pipeline.tokenizer,
        text_encoder=pipeline.text_encoder,
        truncate_long_prompts=True,
        padding_attention_mask_value=1,
        returned_embeddings_type=ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED,
    )


def _check_one_window(text: str, embedding: torch.Tensor, pipeline: Any) -> torch.Tensor:
    positions = pipeline.tokenizer.model_max_length
    if embedding.shape[:2] != (1, positions):
        raise ValueError(
            f"text {text!r} encodes to shape {tuple(embedding.shape)}, not (1, {positions}, D): "
            "compel's .and() conjunctions concatenate windows; write one plain or weighted text"
        )
    return embedding


def encode_text(pipeline: Any, text: str) -> torch.Tensor:
    """``E(text)``: the (1, 77, D) text-encoder output for ``text`` in compel syntax.

    ``(words)1.4`` weights words by 1.4, ``words+`` by 1.1 and ``words++`` by
    1.1^2; compel scales a weighted token's embedding away from the empty
    text's, ``E("") + w (E(text) - E(""))`` per token. Since compel 2.2.0 a
    text without weights bypasses that arithmetic, so for a text without
    compel syntax this is ``torch.equal`` to ``pipeline.encode_prompt``'s
    embedding of it. Parentheses and double quotes are compel syntax even
    without a weight (``"(a)"`` encodes ``"a"``); use
    :func:`encode_literal_text` for texts that are meant as written.

    Only the pipeline's tokenizer and text encoder are used; the result is
    on the text encoder's device, in its dtype.
    """
    import torch

    with torch.no_grad():
        embedding = _compel(pipeline)(text)
    return _check_one_window(text, embedding, pipeline)


def encode_literal_text(pipeline: Any, text: str) -> torch.Tensor:
    """``E(text)`` for ``text`` read as written, as the pipeline reads a prompt.

    The text goes to compel's embeddings provider as one fragment of weight
    1, skipping compel's parser, so parentheses, quotes, ``+`` and ``-`` keep
    their literal meaning. The result is ``torch.equal`` to
    ``pipeline.encode_prompt``'s for every text; the study's sheet texts are
    encoded this way so that dose 1 reproduces the word variant exactly.
    """
    import torch

    compel = _compel(pipeline)
    with torch.no_grad():
        embedding = compel.conditioning_provider.get_embeddings_for_weighted_prompt_fragments(
            text_batch=[[text]], fragment_weights_batch=[[1.0]], device=compel.device
        )
    return _check_one_window(text, embedding, pipeline)


@dataclass(frozen=True)
class EmbeddingPair:
    """The two embeddings classifier-free guidance uses for one generation.

    The pipeline concatenates them as [negative, positive] along the batch
    axis, exactly as it does for embeddings it encodes from texts.
    """

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor

    def pipeline_arguments(self, batch_size: int) -> dict[str, torch.Tensor]:
        """``prompt_embeds`` and ``negative_prompt_embeds`` for a pipeline call of
        ``batch_size`` images, in place of ``prompt`` and ``negative_prompt``."""
        return {
            "prompt_embeds": self.prompt_embeds.repeat(batch_size, 1, 1),
            "negative_prompt_embeds": self.negative_prompt_embeds.repeat(batch_size, 1, 1),
        }


def encode_condition(texts: ConditionPrompts, encode: TextEncoder) -> EmbeddingPair:
    """The embedding pair of a condition's two texts."""
    return EmbeddingPair(encode(texts.prompt), encode(texts.negative_prompt))


# --- Doses --------------------------------------------------------------------


def dosed_embedding(base: torch.Tensor, word: torch.Tensor, dose: float) -> torch.Tensor:
    """``base + dose (word - base)``: ``base`` moved ``dose`` times along the
    direction from ``base`` to ``word``.

    ``Tensor.lerp`` computes it and is exact at both ends (``dose = 0`` gives
    ``base``, ``dose = 1`` gives ``word``, bit for bit), so the two ends of a
    dose series are the baseline and the word variant, not approximations of
    them. Any real dose extrapolates.
    """
    return base.lerp(word, dose)


def dosed_pair(baseline: EmbeddingPair, word: EmbeddingPair, dose: float) -> EmbeddingPair:
    """The embedding pair of a word prompt at ``dose``: each branch of the
    baseline moved ``dose`` times towards the word variant's.

    One branch is the same text in both pairs (``""`` for a positive prompt,
    ``p`` for a negative one) and stays exactly as it is, so this is the
    module's definition for either kind:

    * positive: condition ``E(p) + d (E("p, a") - E(p))``, unconditional ``E("")``;
    * negative: condition ``E(p)``, unconditional ``E("") + d (E(n) - E(""))``.
    """
    return EmbeddingPair(
        dosed_embedding(baseline.prompt_embeds, word.prompt_embeds, dose),
        dosed_embedding(baseline.negative_prompt_embeds, word.negative_prompt_embeds, dose),
    )


def dose_condition_pair(
    baseline_texts: ConditionPrompts, word_texts: ConditionPrompts, dose: float, encode: TextEncoder
) -> EmbeddingPair:
    """The embedding pair of a word prompt at ``dose``, from the texts of the
    baseline and of the word variant (``study.condition_prompts``).

    ``encode`` is ``functools.partial(encode_literal_text, pipeline)`` for
    the study's sheet texts, so that dose 1 generates the word variant.
    """
    return dosed_pair(encode_condition(baseline_texts, encode), encode_condition(word_texts, encode), dose)


def _frobenius(tensor: torch.Tensor) -> float:
    # In float64: an fp16 sum of squares over 77 x 768 values overflows.
    return float(tensor.double().norm())


def embedding_norms(baseline: EmbeddingPair, word: EmbeddingPair, dose: float) -> dict[str, float]:
    """Frobenius norms to record with a dosed generation.

    * ``prompt_embeds_norm``, ``negative_prompt_embeds_norm``: of the dosed pair's two embeddings;
    * ``direction_norm``: of the direction ``word - baseline``, both branches
      together (one of them is zero);
    * ``shift_norm``: ``|dose| * direction_norm``, how far the dose moved the conditioning.
    """
    dosed = dosed_pair(baseline, word, dose)
    direction_norm = math.hypot(
        _frobenius(word.prompt_embeds - baseline.prompt_embeds),
        _frobenius(word.negative_prompt_embeds - baseline.negative_prompt_embeds),
    )
    return {
        "prompt_embeds_norm": _frobenius(dosed.prompt_embeds),
        "negative_prompt_embeds_norm": _frobenius(dosed.negative_prompt_embeds),
        "direction_norm": direction_norm,
        "shift_norm": abs(dose) * direction_norm,
    }


def mixture_embedding(
    base: torch.Tensor, directions: Sequence[torch.Tensor], weights: Sequence[float]
) -> torch.Tensor:
    """``base + sum_i weights[i] * directions[i]``: several attribute
    directions added to one embedding, each scaled on its own (directions
    are additive in Baumann et al. 2024's sense)."""
    if len(directions) != len(weights):
        raise ValueError(f"{len(directions)} directions but {len(weights)} weights; give one weight per direction")
    mixed = base.clone()
    for direction, weight in zip(directions, weights):
        mixed += weight * direction
    return mixed


def mixture_pair(
    baseline: EmbeddingPair, words: Sequence[EmbeddingPair], weights: Sequence[float]
) -> EmbeddingPair:
    """Each branch of the baseline plus the weighted directions of several
    word variants. For positive prompts only the condition changes:
    ``E(p) + sum_i w_i (E("p, a_i") - E(p))``, unconditional ``E("")``."""
    return EmbeddingPair(
        mixture_embedding(
            baseline.prompt_embeds, [word.prompt_embeds - baseline.prompt_embeds for word in words], weights
        ),
        mixture_embedding(
            baseline.negative_prompt_embeds,
            [word.negative_prompt_embeds - baseline.negative_prompt_embeds for word in words],
            weights,
        ),
    )


# --- Dose ids -------------------------------------------------------------------


def format_dose(dose: float) -> str:
    """A dose as it appears in ids: at most ``DOSE_DECIMALS`` decimals, no
    trailing zeros (0.5 -> "0.5", 2.0 -> "2", -1.0 -> "-1", 1.25 -> "1.25")."""
    text = f"{dose:.{DOSE_DECIMALS}f}".rstrip("0").rstrip(".")
    # -0.0 and tiny negatives round to "-0"; one zero has one id.
    return "0" if text == "-0" else text


def parse_dose(text: str) -> float:
    """The dose of an id's dose part; only :func:`format_dose`'s own form is
    accepted, so that each dose has exactly one id."""
    if not re.fullmatch(_DOSE, text):
        raise ValueError(f"dose {text!r} is not a number like 0.5, 2 or -1")
    dose = float(text)
    if format_dose(dose) != text:
        raise ValueError(f"dose {text!r} is not in canonical form; write it as {format_dose(dose)!r}")
    return dose


def condition_id(prompt_id: str, dose: float) -> str:
    """The id of a prompt at a dose: ``condition_id("pos5", 0.5) == "pos5@0.5"``."""
    return f"{prompt_id}@{format_dose(dose)}"


def parse_condition_id(text: str) -> tuple[str, float]:
    """The (prompt id, dose) of an id made by :func:`condition_id`."""
    if not re.fullmatch(TERM_PATTERN, text):
        raise ValueError(f"condition {text!r} is not of the form <prompt_id>@<dose>, e.g. 'pos5@0.5'")
    prompt_id, dose = text.split("@")
    return prompt_id, parse_dose(dose)


def validated_doses(doses: Sequence[Any]) -> tuple[float, ...]:
    """The configured doses as floats, checked: numbers in ``DOSE_RANGE``
    with at most ``DOSE_DECIMALS`` decimals, and no two with the same id
    (0.5 and 0.50 are one dose)."""
    checked: list[float] = []
    for dose in doses:
        if isinstance(dose, bool) or not isinstance(dose, (int, float)) or not math.isfinite(dose):
            raise EmphasisConfigError(f"{DOSES_KEY}: {dose!r} is not a number; list doses such as [0.5, 1.5, 2]")
        low, high = DOSE_RANGE
        if not low <= dose <= high:
            raise EmphasisConfigError(
                f"{DOSES_KEY}: dose {dose} lies outside [{low:g}, {high:g}]; beyond it the "
                "embedding leaves the range the text encoder produces. Remove it"
            )
        if float(format_dose(dose)) != float(dose):
            raise EmphasisConfigError(
                f"{DOSES_KEY}: dose {dose} has more than {DOSE_DECIMALS} decimals; round it "
                f"(its id would read {format_dose(dose)!r})"
            )
        checked.append(float(dose))
    repeated = sorted(text for text, count in Counter(map(format_dose, checked)).items() if count > 1)
    if repeated:
        raise EmphasisConfigError(f"{DOSES_KEY}: doses {repeated} are listed more than once; list each dose once")
    return tuple(checked)
