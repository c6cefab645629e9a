"""The tokens space: PEZ's projection onto the vocabulary, the soft prompt's
coordinates, SD 1.5's prompt with learnable tokens on the tiny model, and
the plan's checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from promptsweep import emphasis
from promptsweep.conditions import GenerationInput
from promptsweep.emphasis import EmphasisConfigError
from promptsweep.families.sd15 import FAMILY as SD15
from conftest import load_tiny_pipeline
from promptsweep.search import tokens
from promptsweep.search.plan import optimisation_search

TEXTS = GenerationInput("a house", "")


@pytest.fixture(scope="module")
def pipeline(tiny: Path):
    return load_tiny_pipeline(tiny)


def test_the_projection_returns_vocabulary_tokens_and_keeps_a_token_where_it_is() -> None:
    generator = torch.Generator().manual_seed(0)
    vocabulary = torch.randn(50, 8, generator=generator)
    soft = torch.randn(6, 8, generator=generator)
    rows = tokens.nearest_tokens(soft, vocabulary)
    assert rows.shape == (6,) and ((rows >= 0) & (rows < 50)).all()
    # Each is the row of highest cosine similarity.
    cosine = torch.nn.functional.cosine_similarity(soft[:, None], vocabulary[None], dim=-1)
    assert torch.equal(rows, cosine.argmax(dim=1))
    assert torch.equal(tokens.nearest_tokens(vocabulary[[3, 17, 42]] * 2.5, vocabulary), torch.tensor([3, 17, 42]))


def test_the_origin_is_the_start_and_a_point_moves_the_soft_tokens() -> None:
    vocabulary = torch.randn(30, 4, generator=torch.Generator().manual_seed(1))
    ids = torch.arange(100, 130)
    soft = tokens.soft_prompt(ids, vocabulary, 3, seed=7)
    assert soft.dimension == 12 and len(set(soft.start)) == 3
    assert soft.start == tokens.soft_prompt(ids, vocabulary, 3, seed=7).start
    origin = [0.0] * soft.dimension
    assert torch.equal(soft.continuous(origin), vocabulary[list(soft.start)])
    projected_ids, projected = soft.projected(origin)
    assert projected_ids == [100 + row for row in soft.start] and torch.equal(projected, vocabulary[list(soft.start)])
    low, high = soft.bounds()[0]
    assert low == -high and high == pytest.approx(tokens.SPREAD * float(vocabulary.std()))
    moved = soft.continuous([0.5] * soft.dimension)
    assert torch.allclose(moved - vocabulary[list(soft.start)], torch.full((3, 4), 0.5))


def test_words_as_soft_tokens_encode_as_the_prompt_with_those_words(pipeline) -> None:
    ids, vocabulary = SD15.vocabulary(pipeline)
    special = set(pipeline.tokenizer.all_special_ids)
    assert not special & set(ids.tolist())
    word_ids = pipeline.tokenizer("best quality", add_special_tokens=False).input_ids
    rows = [ids.tolist().index(token) for token in word_ids]
    conditioning = SD15.soft_prompt_conditioning(pipeline, TEXTS, vocabulary[rows])
    expected = SD15.encode(pipeline, GenerationInput("a house, best quality", ""))
    assert torch.equal(conditioning["prompt_embeds"], expected["prompt_embeds"])
    assert torch.equal(conditioning["negative_prompt_embeds"], expected["negative_prompt_embeds"])
    assert SD15.token_words(pipeline, word_ids) == "best quality"


def test_gradients_reach_the_soft_tokens_and_no_weight(pipeline) -> None:
    _, vocabulary = SD15.vocabulary(pipeline)
    soft = vocabulary[:3].clone().requires_grad_(True)
    SD15.soft_prompt_conditioning(pipeline, TEXTS, soft)["prompt_embeds"].square().sum().backward()
    assert soft.grad is not None and torch.isfinite(soft.grad).all() and soft.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in pipeline.text_encoder.parameters())


def test_a_soft_tokens_request_rebuilds_the_conditioning(pipeline) -> None:
    _, vocabulary = SD15.vocabulary(pipeline)
    request = emphasis.soft_tokens_request(TEXTS, vocabulary[5:7].tolist())
    embedded = emphasis.condition_embeddings(
        lambda texts: SD15.encode(pipeline, texts), TEXTS, request,
        lambda texts, soft: SD15.soft_prompt_conditioning(pipeline, texts, soft),
    )
    assert embedded.method == emphasis.METHOD_SOFT_TOKENS
    direct = SD15.soft_prompt_conditioning(pipeline, TEXTS, vocabulary[5:7])
    assert torch.allclose(embedded.conditioning["prompt_embeds"], direct["prompt_embeds"])
    with pytest.raises(ValueError, match="cannot hold learnable tokens"):
        emphasis.condition_embeddings(lambda texts: SD15.encode(pipeline, texts), TEXTS, request)


SEARCH = {
    "optimisers": ["gradient"],
    "space": "tokens",
    "objective": "sharpness",
    "budget": 4,
    "selection_seeds": [1],
    "evaluation_seeds": [2],
    "selection_images": ["a"],
    "evaluation_images": ["b"],
}


def test_the_tokens_space_plans_its_words_conditions() -> None:
    search = optimisation_search({**SEARCH, "tokens": 3}, ["good"], ["a", "b"])
    assert search.tokens == tokens.TokensSpace(3)
    assert search.word_conditions == {"gradient": "search-gradient-words"}
    assert search.evaluated_conditions == ["search-gradient", "best-word", "search-gradient-words"]
    assert optimisation_search(SEARCH, ["good"], ["a", "b"]).tokens == tokens.TokensSpace(tokens.DEFAULT_TOKENS)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimisers": ["gradient", "cmaes"]}, "emphasis.search.optimisers: the tokens space is searched by gradient alone"),
        ({"tokens": 0}, "emphasis.search.tokens: 0 is not a number of tokens from 1 to 16"),
        ({"tokens": 17}, "emphasis.search.tokens"),
        ({"space": "directions", "tokens": 2}, "emphasis.search.tokens: only the tokens space has tokens"),
        ({"space": "words"}, "emphasis.search.space: unknown space 'words'"),
    ],
)
def test_a_tokens_setting_to_fix_names_its_key(changes: dict, message: str) -> None:
    with pytest.raises(EmphasisConfigError) as error:
        optimisation_search({**SEARCH, **changes}, ["good"], ["a", "b"])
    assert message in str(error.value)


def test_random_start_tokens_differ_between_seeds() -> None:
    vocabulary = torch.randn(200, 4, generator=torch.Generator().manual_seed(2))
    starts = {tokens.soft_prompt(torch.arange(200), vocabulary, 4, seed).start for seed in range(5)}
    assert len(starts) > 1
    assert all(np.unique(start).size == 4 for start in starts)


def test_a_family_without_learnable_tokens_is_refused_by_the_plan(tmp_path: Path) -> None:
    from promptsweep.plan import PlanError, check_soft_prompts

    check_soft_prompts(True, "sd15")
    check_soft_prompts(False, "sdxl")
    with pytest.raises(PlanError, match="emphasis.search.space: the sdxl family"):
        check_soft_prompts(True, "sdxl")


@pytest.mark.parametrize("changes", [{"space": "tokens"}, {"tokens": 4}])
def test_the_grid_refuses_the_tokens_space_naming_the_key(changes: dict) -> None:
    grid = {"objective": "sharpness", "budget": 100, "selection_seeds": [1], "evaluation_seeds": [2], **changes}
    with pytest.raises(EmphasisConfigError, match=r"^emphasis\.search\.space: the grid"):
        emphasis.emphasis_plan({"doses": [0.5], "search": grid}, {"good": "positive"}, 2, ["sharpness"])
