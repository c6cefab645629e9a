"""The directions space: a point's conditioning, its word and baseline points."""

from __future__ import annotations

import pytest
import torch

from promptsweep.emphasis import EmphasisConfigError
from promptsweep.families import Conditioning
from promptsweep.search import spaces


def _conditioning(seed: int) -> Conditioning:
    generator = torch.Generator().manual_seed(seed)
    return Conditioning(
        {
            "prompt_embeds": torch.randn(1, 77, 8, generator=generator),
            "negative_prompt_embeds": torch.randn(1, 77, 8, generator=generator),
        }
    )


BASELINE = _conditioning(0)
WORDS = {"pos": _conditioning(1), "neg": _conditioning(2)}
SPACE = spaces.directions_space(["pos", "neg"], [-2.0, 4.0])


def test_the_origin_is_the_baseline_and_a_word_point_its_word_prompt() -> None:
    origin = SPACE.conditioning(BASELINE, WORDS, (0.0, 0.0))
    assert all(torch.equal(origin[name], BASELINE[name]) for name in BASELINE)
    for prompt_id, word in WORDS.items():
        found = SPACE.conditioning(BASELINE, WORDS, SPACE.word_point(prompt_id))
        assert all(torch.allclose(found[name], word[name], atol=1e-6) for name in word)


def test_directions_add_each_scaled_by_its_weight() -> None:
    found = SPACE.conditioning(BASELINE, WORDS, (0.5, -1.5))
    for name in BASELINE:
        expected = BASELINE[name] + 0.5 * (WORDS["pos"][name] - BASELINE[name]) - 1.5 * (WORDS["neg"][name] - BASELINE[name])
        assert torch.allclose(found[name], expected, atol=1e-6)
    assert SPACE.bounds == ((-2.0, 4.0), (-2.0, 4.0))


def test_a_point_of_the_wrong_size_and_an_unknown_space_are_refused() -> None:
    with pytest.raises(ValueError, match="2 weights, not 3"):
        SPACE.conditioning(BASELINE, WORDS, (0.0, 0.0, 1.0))
    with pytest.raises(EmphasisConfigError, match="emphasis.search.space: unknown space 'latent'"):
        spaces.check_space_name("latent")
    with pytest.raises(EmphasisConfigError, match="emphasis.search.weights"):
        spaces.directions_space(["pos"], [1.0, 1.0])


def test_selection_and_evaluation_images_must_be_disjoint_images_of_the_study() -> None:
    from promptsweep.search.config import check_image_split

    study = {"cat", "rocket", "coffee"}
    check_image_split(["cat"], ["rocket", "coffee"], study)
    with pytest.raises(EmphasisConfigError, match=r"share images \['cat'\]"):
        check_image_split(["cat", "rocket"], ["cat"], study)
    with pytest.raises(EmphasisConfigError, match=r"evaluation_images: \['dog'\] are not image ids"):
        check_image_split(["cat"], ["dog"], study)
    with pytest.raises(EmphasisConfigError, match="selection_images: empty"):
        check_image_split([], ["cat"], study)
