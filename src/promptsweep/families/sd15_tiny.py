"""The built-in ``tiny`` model: a small, randomly initialised SD-shaped ControlNet pipeline.

It exists so that the whole study runs offline on a CPU in minutes. Its pictures
mean nothing; its purpose is to exercise the exact code path of real weights.
It is written once in the on-disk layout of the two hub repositories the real
study uses -- a Stable Diffusion base pipeline directory and a separate
ControlNet directory -- as safetensors, and loaded with the same
``from_pretrained`` calls as real weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    PNDMScheduler,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TINY_SEED = 0
CLIP_MAX_LENGTH = 77


def byte_symbol(byte: int) -> str:
    """The printable character that byte-level BPE (GPT-2, CLIP) uses for a byte.

    Printable Latin-1 bytes stand for themselves; the others are shifted past
    U+0100 in order, so that no symbol is whitespace or a control character.
    """
    printable = (
        0x21 <= byte <= 0x7E or 0xA1 <= byte <= 0xAC or 0xAE <= byte <= 0xFF
    )
    if printable:
        return chr(byte)
    unprintable = [b for b in range(256) if not (0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF)]
    return chr(256 + unprintable.index(byte))


def byte_level_vocabulary() -> dict[str, int]:
    """A CLIP-style vocabulary of the 256 byte symbols, each also with ``</w>``.

    With no merges, every word is tokenised into single bytes, so any text
    (non-ASCII too) maps to tokens without a downloaded vocabulary.
    """
    symbols = [byte_symbol(byte) for byte in range(256)]
    tokens = symbols + [symbol + "</w>" for symbol in symbols]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def build_tokenizer() -> CLIPTokenizer:
    # model_max_length must be set: without it the tokenizer does not truncate
    # to CLIP's 77 positions and the text encoder overflows.
    return CLIPTokenizer(
        vocab=byte_level_vocabulary(), merges=[], model_max_length=CLIP_MAX_LENGTH
    )


def build_unet() -> UNet2DConditionModel:
    # Cross-attention only on the two lower levels: self-attention over the
    # full-resolution latent dominated the step time on a CPU.
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def build_controlnet(unet: UNet2DConditionModel) -> ControlNetModel:
    # Narrow conditioning embedding: its convolutions run at full image
    # resolution and would otherwise dominate the step time.
    return ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=(8, 16, 16, 32)
    )


def build_vae() -> AutoencoderKL:
    # Four blocks give SD's 8x downsampling, so latents have SD's shape.
    return AutoencoderKL(
        block_out_channels=(16, 16, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=16,
        sample_size=256,
    )


def build_text_encoder() -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(byte_level_vocabulary()),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        bos_token_id=len(byte_level_vocabulary()) - 2,
        eos_token_id=len(byte_level_vocabulary()) - 1,
        pad_token_id=len(byte_level_vocabulary()) - 1,
    )
    return CLIPTextModel(config)


def sd15_scheduler() -> PNDMScheduler:
    """Stable Diffusion 1.5's own scheduler config, as its pipeline directory
    holds it; the study swaps the scheduler for the one it is set to."""
    return PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )


def write_tiny_model(base_dir: Path, controlnet_dir: Path) -> None:
    """Build the tiny model from a fixed seed and save it as two directories.

    ``base_dir`` gets a Stable Diffusion pipeline (model_index.json, unet, vae,
    text_encoder, tokenizer, scheduler), ``controlnet_dir`` a ControlNet
    (config.json and diffusion_pytorch_model.safetensors): the layouts of
    ``stable-diffusion-v1-5/stable-diffusion-v1-5`` and
    ``lllyasviel/sd-controlnet-canny``.
    """
    torch.manual_seed(TINY_SEED)
    unet = build_unet()
    controlnet = build_controlnet(unet)
    base = StableDiffusionPipeline(
        vae=build_vae(),
        text_encoder=build_text_encoder(),
        tokenizer=build_tokenizer(),
        unet=unet,
        scheduler=sd15_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    base.save_pretrained(base_dir, safe_serialization=True)
    controlnet.save_pretrained(controlnet_dir, safe_serialization=True)
