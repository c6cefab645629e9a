"""Tiny random CLIP models and processors in transformers' on-disk layout,
loaded by the same ``from_pretrained`` calls as real weights."""

from __future__ import annotations

from pathlib import Path

import torch

from promptsweep.families.sd15_tiny import build_tokenizer


def write_tiny_clip_model(directory: Path, projection_dim: int = 16) -> None:
    """A random CLIP model whose embeddings have ``projection_dim`` entries."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    size = len(build_tokenizer())
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
        projection_dim=projection_dim,
    )
    CLIPModel(config).save_pretrained(directory)


def write_tiny_clip_processor(directory: Path) -> None:
    """A CLIP processor for 32 px images with a byte-level tokenizer."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=build_tokenizer()).save_pretrained(directory)


def write_tiny_clip(directory: Path, projection_dim: int = 16) -> None:
    """A random CLIP model and its processor in one directory, as on the hub."""
    write_tiny_clip_model(directory, projection_dim)
    write_tiny_clip_processor(directory)
