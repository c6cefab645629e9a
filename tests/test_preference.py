"""Learned preference scores from local weights: the LAION aesthetic predictor
and PickScore, on tiny random CLIP models saved in the real on-disk layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clip_weights import write_tiny_clip, write_tiny_clip_model, write_tiny_clip_processor
from isolation import opened_files, refuse_network
from promptsweep import learned, preference

MLP_KEYS = {f"layers.{index}.{name}" for index in (0, 2, 4, 6, 7) for name in ("weight", "bias")}


def write_aesthetic_mlp(path: Path) -> None:
    """Random weights under the released checkpoint's key names."""
    torch.manual_seed(1)
    shapes = {0: (1024, 768), 2: (128, 1024), 4: (64, 128), 6: (16, 64), 7: (1, 16)}
    state = {}
    for index, shape in shapes.items():
        state[f"layers.{index}.weight"] = torch.randn(shape) / shape[1] ** 0.5
        state[f"layers.{index}.bias"] = torch.randn(shape[0])
    torch.save(state, path)


@pytest.fixture(scope="module")
def aesthetic_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("aesthetic")
    write_tiny_clip(root / "clip", projection_dim=preference.AESTHETIC_EMBEDDING_SIZE)
    write_aesthetic_mlp(root / "sac+logos+ava1-l14-linearMSE.pth")
    return root / "clip", root / "sac+logos+ava1-l14-linearMSE.pth"


@pytest.fixture(scope="module")
def pickscore_directories(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A processor directory and a model directory, each with only its part."""
    root = tmp_path_factory.mktemp("pickscore")
    write_tiny_clip_processor(root / "processor")
    write_tiny_clip_model(root / "model")
    return root / "processor", root / "model"


def random_images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8) for i in range(count)]


def test_the_predictor_has_the_released_checkpoints_keys() -> None:
    assert set(preference.aesthetic_mlp().state_dict()) == MLP_KEYS


def test_aesthetic_score_is_the_mlp_of_the_unit_clip_embedding(aesthetic_files: tuple[Path, Path]) -> None:
    from transformers import CLIPImageProcessor, CLIPModel

    clip_directory, mlp_path = aesthetic_files
    images = random_images(3)
    scores = preference.aesthetic_scores(preference.load_aesthetic(clip_directory, mlp_path), images)

    # By hand, from the saved files: CLIP's image embedding, unit length,
    # through the five linear layers (dropout is off at inference).
    clip = CLIPModel.from_pretrained(clip_directory)
    pixels = CLIPImageProcessor.from_pretrained(clip_directory)(images=images, return_tensors="pt").pixel_values
    state = torch.load(mlp_path, weights_only=True)
    with torch.inference_mode():
        embedding = clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)
        value = embedding / embedding.norm(dim=-1, keepdim=True)
        for index in (0, 2, 4, 6, 7):
            value = value @ state[f"layers.{index}.weight"].T + state[f"layers.{index}.bias"]
    assert scores == pytest.approx(value.squeeze(-1).tolist(), rel=1e-5, abs=1e-5)
    assert all(type(score) is float for score in scores)


def test_aesthetic_scores_do_not_depend_on_the_batch(
    aesthetic_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = preference.load_aesthetic(*aesthetic_files)
    images = random_images(5)
    together = preference.aesthetic_scores(model, images)
    monkeypatch.setattr(preference, "BATCH_SIZE", 2)
    assert preference.aesthetic_scores(model, images) == pytest.approx(together, rel=1e-5, abs=1e-5)
    assert preference.aesthetic_scores(model, []) == []


def test_pickscore_is_the_scaled_cosine_of_image_and_prompt(
    pickscore_directories: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import CLIPModel, CLIPProcessor

    processor_directory, model_directory = pickscore_directories
    images = random_images(3)
    prompts = ["a cat", "a cat, best quality", "a dog " * 100]  # the last one past 77 tokens
    model = preference.load_pickscore(processor_directory, model_directory)
    scores = preference.pickscore_scores(model, images, prompts)

    clip = CLIPModel.from_pretrained(model_directory)
    processor = CLIPProcessor.from_pretrained(processor_directory)
    with torch.inference_mode():
        image_embedding = clip.visual_projection(
            clip.vision_model(pixel_values=processor(images=images, return_tensors="pt").pixel_values).pooler_output
        )
        expected = []
        for index, prompt in enumerate(prompts):
            tokens = processor(text=[prompt], return_tensors="pt", truncation=True, max_length=77)
            text_embedding = clip.text_projection(clip.text_model(**tokens).pooler_output)[0]
            cosine = torch.nn.functional.cosine_similarity(image_embedding[index], text_embedding, dim=0)
            expected.append(float(clip.logit_scale.exp() * cosine))
    assert scores == pytest.approx(expected, rel=1e-4, abs=1e-4)

    monkeypatch.setattr(preference, "BATCH_SIZE", 2)
    assert preference.pickscore_scores(model, images, prompts) == pytest.approx(scores, rel=1e-4, abs=1e-4)


def test_pickscore_needs_one_prompt_per_image(pickscore_directories: tuple[Path, Path]) -> None:
    model = preference.load_pickscore(*pickscore_directories)
    with pytest.raises(ValueError, match="got 2 images and 1 prompts"):
        preference.pickscore_scores(model, random_images(2), ["a cat"])


def test_loading_and_scoring_read_only_the_given_files(
    tmp_path_factory: pytest.TempPathFactory,
    aesthetic_files: tuple[Path, Path],
    pickscore_directories: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images, prompts = random_images(2), ["a cat", "a dog"]

    def load_and_score() -> None:
        preference.aesthetic_scores(preference.load_aesthetic(*aesthetic_files), images)
        preference.pickscore_scores(preference.load_pickscore(*pickscore_directories), images, prompts)

    load_and_score()  # imports what it needs first: library files are not the question
    refuse_network(monkeypatch)
    with opened_files() as opened:
        load_and_score()
    # /proc is the kernel's, not a file: transformers reads the mount table
    # there to decide whether to memory-map the weights.
    outside = [
        path for path in opened
        if not path.is_relative_to(tmp_path_factory.getbasetemp()) and not path.is_relative_to("/proc")
    ]
    assert outside == []
    assert aesthetic_files[1] in opened


def test_missing_paths_are_named(aesthetic_files: tuple[Path, Path], tmp_path: Path) -> None:
    clip_directory, mlp_path = aesthetic_files
    missing = tmp_path / "absent"
    with pytest.raises(FileNotFoundError, match=f"CLIP model directory {missing} is not a directory"):
        preference.load_aesthetic(missing, mlp_path)
    with pytest.raises(FileNotFoundError, match=f"aesthetic predictor {missing} is not on this machine"):
        preference.load_aesthetic(clip_directory, missing)
    with pytest.raises(FileNotFoundError, match=f"PickScore processor directory {missing} is not a directory"):
        preference.load_pickscore(missing, clip_directory)
    with pytest.raises(FileNotFoundError, match=f"PickScore model directory {missing} is not a directory"):
        preference.load_pickscore(clip_directory, missing)


def test_a_hub_name_is_not_looked_up(aesthetic_files: tuple[Path, Path]) -> None:
    # A name that is not a directory must not be taken as a hub repository.
    with pytest.raises(FileNotFoundError, match="openai/clip-vit-large-patch14 is not a directory"):
        preference.load_aesthetic("openai/clip-vit-large-patch14", aesthetic_files[1])


def test_a_directory_without_a_model_raises_oserror(tmp_path: Path, aesthetic_files: tuple[Path, Path]) -> None:
    with pytest.raises(OSError, match=str(tmp_path)):
        preference.load_aesthetic(tmp_path, aesthetic_files[1])


def test_wrong_weights_are_rejected(
    aesthetic_files: tuple[Path, Path], pickscore_directories: tuple[Path, Path], tmp_path: Path
) -> None:
    clip_directory, mlp_path = aesthetic_files
    _, small_clip_directory = pickscore_directories
    with pytest.raises(learned.WeightsError, match="embeds images in 16 dimensions, the aesthetic predictor takes 768"):
        preference.load_aesthetic(small_clip_directory, mlp_path)
    truncated = tmp_path / "truncated.pth"
    torch.save({key: value for key, value in torch.load(mlp_path).items() if key != "layers.7.bias"}, truncated)
    with pytest.raises(learned.WeightsError, match=r"has no 'layers.7.bias': is it sac\+logos\+ava1-l14-linearMSE.pth\?"):
        preference.load_aesthetic(clip_directory, truncated)
