"""Learned metrics from local weights only: CLIP score, and the "not computed"
reasons when weights are absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import Study
from promptsweep import learned
from promptsweep.tiny import build_tokenizer


def write_tiny_clip(directory: Path) -> None:
    """A random CLIP model and processor in transformers' on-disk layout."""
    from transformers import (
        CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextConfig, CLIPVisionConfig,
    )

    tokenizer = build_tokenizer()
    size = len(tokenizer)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=CLIPTextConfig(
            vocab_size=size, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77,
            bos_token_id=size - 2, eos_token_id=size - 1, pad_token_id=size - 1,
        ),
        vision_config=CLIPVisionConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, patch_size=8,
        ),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(directory)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)


@pytest.fixture(scope="module")
def clip_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("clip")
    write_tiny_clip(directory)
    return directory


def test_clip_score_is_the_clamped_scaled_cosine(clip_directory: Path) -> None:
    clip = learned.load_clip(str(clip_directory))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    texts = ["cat", "cat, best quality", "a dog"]
    scores = learned.clip_scores(clip, images, texts)
    inputs = clip.processor(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.inference_mode():
        outputs = clip.model(**inputs)
    image_unit = outputs.image_embeds / outputs.image_embeds.norm(dim=-1, keepdim=True)
    text_unit = outputs.text_embeds / outputs.text_embeds.norm(dim=-1, keepdim=True)
    expected = (100 * (image_unit * text_unit).sum(-1)).clamp(min=0)
    assert scores == pytest.approx(expected.tolist(), abs=1e-4)
    assert all(0 <= score <= 100 for score in scores)
    assert learned.clip_scores(clip, images[:1], texts[:1]) == pytest.approx(scores[:1], abs=1e-4)


def test_absent_clip_weights_raise_without_download(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError):
        learned.load_clip(str(tmp_path / "no-such-clip"))


def with_clip_model(study: Study, clip_model: str) -> None:
    config = study.root / "config/config.yaml"
    config.write_text(config.read_text() + f"metrics:\n  clip_model: {clip_model}\n")


def test_workflow_scores_clip_when_weights_are_local(study: Study, clip_directory: Path) -> None:
    with_clip_model(study, str(clip_directory))
    study.snakemake()
    pairs = pd.read_csv(study.root / "results/tables/pairs.csv")
    assert pairs[["clip_score_baseline", "clip_score_variant"]].notna().all().all()
    summary = (study.root / "results/tables/summary.md").read_text()
    assert "CLIP score not computed" not in summary
    assert "LPIPS not computed" in summary


def test_workflow_marks_clip_not_computed_with_reason(study: Study, tmp_path: Path) -> None:
    missing = tmp_path / "missing-clip"
    with_clip_model(study, str(missing))
    study.snakemake()
    pairs = pd.read_csv(study.root / "results/tables/pairs.csv")
    assert pairs["clip_score_variant"].isna().all()
    summary = (study.root / "results/tables/summary.md").read_text()
    assert f"CLIP score not computed: '{missing}' is not on this machine" in summary
