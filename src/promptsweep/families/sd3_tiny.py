"""The tiny random SD 3.5 model: an SD3-shaped ControlNet pipeline with
random weights, built offline in seconds from a fixed seed.

Its shapes follow SD 3.5 Large at a small width: CLIP-L and CLIP-G
(penultimate hidden states concatenated, then zero-padded to T5's width and
followed by T5's tokens along the sequence; their pooled outputs
concatenated), an MMDiT transformer with RMS-normed attention over 2x2
patches of a 16-channel latent at 1/8 of the image side, and a ControlNet
that reads no text and shares the transformer's position embedding, like
``stabilityai/stable-diffusion-3.5-large-controlnet-canny``. Written in the
layouts of ``stabilityai/stable-diffusion-3.5-large`` and of that
ControlNet, and loaded like them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    SD3ControlNetModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import CLIPTextModelWithProjection

from promptsweep.families import t5_tiny
from promptsweep.families.sd15_tiny import build_tokenizer
from promptsweep.families.sdxl_tiny import clip_config

TINY_SEED = 0
CLIP_WIDTH = 16
# Wider than the two CLIP widths together, so that they are zero-padded to it
# as SD 3.5's 768 + 1280 are padded to T5-XXL's 4096.
T5_WIDTH = 48
HEADS, HEAD_WIDTH = 4, 8
LATENT_CHANNELS = 16


def build_transformer() -> SD3Transformer2DModel:
    return SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=HEAD_WIDTH,
        num_attention_heads=HEADS,
        joint_attention_dim=T5_WIDTH,
        caption_projection_dim=HEADS * HEAD_WIDTH,
        pooled_projection_dim=2 * CLIP_WIDTH,
        qk_norm="rms_norm",
    )


def build_controlnet() -> SD3ControlNetModel:
    return SD3ControlNetModel(
        sample_size=32,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=1,
        attention_head_dim=HEAD_WIDTH,
        num_attention_heads=HEADS,
        joint_attention_dim=None,
        pooled_projection_dim=2 * CLIP_WIDTH,
        use_pos_embed=False,
        force_zeros_for_pooled_projection=False,
    )


def build_vae() -> AutoencoderKL:
    # Four blocks: 8x downsampling; SD 3.5's 16 latent channels, scaling and shift.
    return AutoencoderKL(
        block_out_channels=(16, 16, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=LATENT_CHANNELS,
        layers_per_block=1,
        norm_num_groups=16,
        sample_size=256,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=1.5305,
        shift_factor=0.0609,
    )


def write_tiny_model(base_dir: Path, controlnet_dir: Path) -> None:
    """Build the tiny SD 3.5 model from a fixed seed and save it as a base
    pipeline directory (transformer, vae, three text encoders and tokenizers,
    scheduler) and a ControlNet directory, in safetensors."""
    torch.manual_seed(TINY_SEED)
    base = StableDiffusion3Pipeline(
        transformer=build_transformer(),
        vae=build_vae(),
        text_encoder=CLIPTextModelWithProjection(clip_config(CLIP_WIDTH, CLIP_WIDTH)),
        tokenizer=build_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(clip_config(CLIP_WIDTH, CLIP_WIDTH)),
        tokenizer_2=build_tokenizer(),
        text_encoder_3=t5_tiny.build_text_encoder(T5_WIDTH),
        tokenizer_3=t5_tiny.build_tokenizer(),
        # SD 3.5 Large's scheduler config.
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )
    base.save_pretrained(base_dir, safe_serialization=True)
    build_controlnet().save_pretrained(controlnet_dir, safe_serialization=True)
