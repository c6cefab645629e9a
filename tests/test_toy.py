"""The toy world, its planted effects, its training, and its shipped model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from promptsweep import edges, families, metrics, models, toy
from promptsweep.files import file_sha256
from promptsweep.conditions import GenerationInput
from promptsweep.study import MODEL_DEFAULT_KEYS, GenerationSettings, PromptSpec, generation_defaults
from promptsweep.toy import __main__ as toy_command
from promptsweep.toy import architecture, planted, train, world


def test_scenes_are_drawn_again_the_same_from_their_seeds() -> None:
    first, second = world.study_scenes(3), world.study_scenes(3)
    assert [scene[0] for scene in first] == [scene[0] for scene in second]
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(first, second))
    assert len({scene[0] for scene in first}) == 3


def test_every_scene_has_edges_to_follow() -> None:
    for _, picture, _ in world.study_scenes(10):
        assert edges.canny(picture, 100, 200).any()


def test_captions_name_a_defect_mostly_a_mild_degradation_rarely_and_a_clean_picture_by_its_quality() -> None:
    rng = np.random.default_rng(0)
    blur, noise = world.DEGRADATIONS[0], world.DEGRADATIONS[2]
    strong_blur, mild_blur = world.Applied(blur, 0.7), world.Applied(blur, 0.1)
    assert strong_blur.strong and not mild_blur.strong
    tags = ["circles", "red circle"]
    defective = [world.caption(tags, (strong_blur,), rng) for _ in range(400)]
    assert sum("blurry" in caption for caption in defective) > 240
    assert not any(word in caption for caption in defective for word in world.QUALITY_WORDS)
    ordinary = [world.caption(tags, (mild_blur,), rng) for _ in range(400)]
    assert 0.07 < sum("blurry" in caption for caption in ordinary) / 400 < 0.25
    clean = [world.caption(tags, (), rng) for _ in range(400)]
    assert not any(degradation.word in caption for caption in clean for degradation in world.DEGRADATIONS)
    assert sum(any(word in caption for word in world.QUALITY_WORDS) for caption in clean) / 400 > 0.75
    twice = [world.caption(["circles"], (strong_blur, world.Applied(noise, 0.5)), rng) for _ in range(400)]
    # Each word four times in five: both together about 0.64 of the time, less the 5% of unseen-only captions.
    assert 0.5 < sum("blurry" in caption and "noisy" in caption for caption in twice) / 400 < 0.75


def test_some_captions_hold_quality_words_alone_so_a_negative_prompt_is_a_text_seen_in_training() -> None:
    rng = np.random.default_rng(1)
    known = set(world.vocabulary())
    captions = [world.caption(["circles", "red circle"], (world.Applied(world.DEGRADATIONS[0], 0.7),), rng) for _ in range(4000)]
    alone = [
        caption
        for caption in captions
        if "circle" not in caption and all(word in known for word in caption.replace(",", " ").split())
    ]
    # 15% of the captions with quality words drop the picture's tags, and half of those get no unseen word.
    assert 0.04 < len(alone) / len(captions) < 0.1
    assert "blurry" in alone


class _Spelling:
    """A stand-in for a random generator whose draws spell ``words`` in turn."""

    def __init__(self, *words: str) -> None:
        self.words = list(words)

    def integers(self, low: int, high: int) -> int:
        return len(self.words[0])

    def choice(self, letters: list[str], size: int) -> list[str]:
        return list(self.words.pop(0))


def test_unseen_words_vary_in_length_and_are_never_the_worlds_own() -> None:
    assert world.unseen_word(_Spelling("red", "qzv")) == "qzv"
    rng = np.random.default_rng(2)
    words = [world.unseen_word(rng) for _ in range(500)]
    assert min(map(len, words)) == 3 and max(map(len, words)) == 12


def test_most_pictures_are_ordinary_and_some_have_defects_at_a_strong_level() -> None:
    rng = np.random.default_rng(3)
    # Black and white halves: noise pushes both beyond [0, 1] unless clipped.
    picture = np.zeros((world.SIZE, world.SIZE, 3), np.float32)
    picture[:, world.SIZE // 2 :] = 1.0
    results = [world.degrade(picture, rng) for _ in range(1000)]
    names = [tuple(each.degradation.name for each in applied) for _, applied in results]
    # Clean: neither ordinary (35%) nor defective (70%).
    assert 0.2 < names.count(()) / len(names) < 0.3
    defective = [applied for _, applied in results if any(each.strong for each in applied)]
    assert 0.25 < len(defective) / len(results) < 0.35
    twice = [applied for applied in defective if sum(each.strong for each in applied) == 2]
    assert 0.15 < len(twice) / len(defective) < 0.35
    order = [degradation.name for degradation in world.DEGRADATIONS]
    assert all(list(applied) == sorted(applied, key=order.index) for applied in names)
    mild = [each for _, applied in results for each in applied if not each.strong]
    assert {each.degradation.name for each in mild} == set(world.ORDINARY)
    assert all(world.MILD_LEVELS[0] <= each.level <= world.MILD_LEVELS[1] for each in mild)
    for pixels, applied in results:
        assert pixels.dtype == np.float32 and 0 <= pixels.min() and pixels.max() <= 1
        assert np.array_equal(pixels, picture) == (not applied)


def test_each_degradation_moves_the_quality_metrics_its_own_way() -> None:
    effects = planted.degradation_effects(count=12).set_index(["degradation", "metric"])["mean_change"]
    assert effects["blur", "sharpness"] < 0 < effects["noise", "sharpness"]
    assert effects["low_contrast", "rms_contrast"] < 0
    assert effects["washed_out", "colorfulness"] < 0


def _effects(changes: dict[tuple[str, str], float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"degradation": name, "metric": metric, "standardised_change": changes.get((name, metric), 0.0)}
            for name in (d.name for d in world.DEGRADATIONS)
            for metric in (m.name for m in planted.planted_metrics())
        ]
    )


def test_planted_directions_follow_from_the_words_of_a_prompt() -> None:
    assert world.ORDINARY == ("washed_out",)
    effects = _effects({
        ("blur", "sharpness"): -1.0,
        ("noise", "sharpness"): 4.0,
        ("washed_out", "sharpness"): -0.1,
        ("washed_out", "colorfulness"): -2.0,
        ("low_contrast", "colorfulness"): -1.0,
    })
    prompts = [
        PromptSpec("sharp", "positive", 1, "best quality"),
        PromptSpec("blurry", "negative", 1, "blurry"),
        PromptSpec("noisy", "negative", 2, "noisy"),
        PromptSpec("worst", "negative", 3, "worst quality"),
        PromptSpec("unseen", "positive", 2, "masterpiece"),
    ]
    expected = planted.expected_changes(prompts, effects).set_index(["prompt_id", "metric"])["expected"]
    # Away from the ordinary fading, not from blur, noise or low contrast.
    assert expected["sharp", "colorfulness"] == 1
    # Fading's -0.1 is under the smallest planted effect.
    assert expected["sharp", "sharpness"] == 0
    assert expected["blurry", "sharpness"] == 1
    assert expected["blurry", "colorfulness"] == 0
    assert expected["noisy", "sharpness"] == -1
    assert expected["worst", "colorfulness"] == 1
    assert expected["worst", "sharpness"] == 0
    assert (expected["unseen"] == 0).all()


def test_a_study_is_compared_with_what_was_planted() -> None:
    expected = pd.DataFrame(
        [{"prompt_id": "p", "metric": "sharpness", "expected": 1}, {"prompt_id": "p", "metric": "brisque", "expected": 0}]
    )
    found = pd.DataFrame(
        [
            {"prompt_id": "p", "metric": "sharpness", "delta_mean": 3.0, "q_value": 0.01},
            {"prompt_id": "p", "metric": "brisque", "delta_mean": 2.0, "q_value": 0.2},
        ]
    )
    compared = planted.compare_with_study(expected, found).set_index("metric")
    assert compared.loc["sharpness", "agrees"] and compared.loc["sharpness", "judged"] == "better"
    assert compared.loc["brisque", "found"] == 0 and compared.loc["brisque", "agrees"]


def test_the_tokenizer_reads_the_worlds_words_and_any_other_text() -> None:
    tokenizer = architecture.build_tokenizer()
    assert tokenizer.tokenize("blurry") == ["blurry</w>"]
    unseen = tokenizer("zqxv, ünïcode")
    assert tokenizer.unk_token_id not in unseen.input_ids[1:-1]  # CLIP: end of text is its unknown token
    assert len(tokenizer("a " * 200, truncation=True).input_ids) == 77  # CLIP's 77 positions


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy model trained for two steps of each stage by the package's
    command, which writes its checksums."""
    directory = tmp_path_factory.mktemp("toy")
    toy_command.main([
        "train", "--output", str(directory), "--pictures", "8", "--autoencoder-steps", "2", "--autoencoder-batch", "2",
        "--autoencoder-crop", "32", "--denoiser-steps", "2", "--denoiser-batch", "2",
    ])
    assert (directory / "training.log").read_text()
    return directory


def test_training_runs_and_writes_a_model_that_loads_and_generates(trained: Path) -> None:
    tmp_path = trained
    record = json.loads((tmp_path / "training.json").read_text())
    assert record["settings"]["denoiser_steps"] == 2
    assert record["code_sha256"] == train.code_digest()
    weights = [models.resolve_weights(models.ModelSource(str(tmp_path / role)), [], role) for role in ("base", "controlnet")]
    pipeline = models.load_pipeline(*weights, models.PipelineOptions("cpu", torch.float32))
    family = families.get(toy.FAMILY)
    control = edges.control_image(edges.canny(world.study_scenes(1)[0][1], 100, 200))
    conditioning = family.encode(pipeline, GenerationInput("circles", "blurry"))
    output = family.generate(
        pipeline, control, conditioning, [0], GenerationSettings(steps=2, guidance_scale=5.0, controlnet_scale=1.0, scheduler="unipc")
    )
    assert np.asarray(output.images[0]).shape == (world.SIZE, world.SIZE, 3)


def _checksums(directory: Path) -> dict[str, str]:
    return {path.relative_to(directory).as_posix(): file_sha256(path) for path in directory.rglob("*.safetensors")}


def test_checksums_name_a_changed_or_missing_weight_file(trained: Path, tmp_path: Path) -> None:
    recorded = toy.recorded_checksums(trained)
    assert {"base/unet/diffusion_pytorch_model.safetensors", "controlnet/diffusion_pytorch_model.safetensors"} <= set(recorded)
    toy.check_checksums(_checksums(trained), trained)
    copy = tmp_path / "weights"
    shutil.copytree(trained, copy)
    changed = copy / "controlnet" / "diffusion_pytorch_model.safetensors"
    changed.write_bytes(changed.read_bytes()[:-1] + b"\0")
    with pytest.raises(toy.ToyWeightsError, match="controlnet/diffusion_pytorch_model.safetensors"):
        toy.check_checksums(_checksums(copy), copy)
    with pytest.raises(toy.ToyWeightsError, match="python -m promptsweep.toy train"):
        toy.recorded_checksums(tmp_path / "nothing")


def test_the_toy_model_declares_every_setting_a_model_defaults() -> None:
    assert set(toy.GENERATION_DEFAULTS) == set(MODEL_DEFAULT_KEYS)
    toy_settings = generation_defaults({"source": "toy", "family": toy.FAMILY})
    tiny_settings = generation_defaults({"source": "tiny", "family": toy.FAMILY})
    # The toy model follows its edges only with a stronger ControlNet; the tiny model keeps the family's.
    assert toy_settings["controlnet_scale"] > tiny_settings["controlnet_scale"] == 1.0
