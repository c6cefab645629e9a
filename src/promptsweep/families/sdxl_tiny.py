"""The tiny random SDXL model: an SDXL-shaped ControlNet pipeline with random
weights, built offline in seconds from a fixed seed.

Its shapes follow SDXL's design at a small width: two CLIP text encoders
whose penultimate hidden states are concatenated (32 + 32 = the UNet's
cross-attention width), the second one with a projection whose pooled output
joins the six size-and-crop numbers in the UNet's added embedding, 4 latent
channels at 1/8 of the image side. It is written in the layouts of
``stabilityai/stable-diffusion-xl-base-1.0`` and
``diffusers/controlnet-canny-sdxl-1.0`` and loaded like them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from promptsweep.families.sd15_tiny import CLIP_MAX_LENGTH, build_tokenizer, byte_level_vocabulary

TINY_SEED = 0
TEXT_WIDTH = 32
# Six added time ids (original size, crop corner, target size), each embedded in 8.
TIME_EMBED_WIDTH = 8


def clip_config(width: int = TEXT_WIDTH, projection_dim: int = TEXT_WIDTH) -> CLIPTextConfig:
    """A 2-layer CLIP text encoder over the byte-level vocabulary."""
    vocabulary = len(byte_level_vocabulary())
    return CLIPTextConfig(
        vocab_size=vocabulary,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=projection_dim,
        bos_token_id=vocabulary - 2,
        eos_token_id=vocabulary - 1,
        pad_token_id=vocabulary - 1,
    )


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * TEXT_WIDTH,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_WIDTH,
        projection_class_embeddings_input_dim=6 * TIME_EMBED_WIDTH + TEXT_WIDTH,
        norm_num_groups=16,
    )


def build_vae() -> AutoencoderKL:
    # Four blocks: SDXL's 8x downsampling. SDXL's scaling factor and its
    # force_upcast (the fp16 NaN guard) as in the hub's vae/config.json.
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
        scaling_factor=0.13025,
        force_upcast=True,
    )


def write_tiny_model(base_dir: Path, controlnet_dir: Path) -> None:
    """Build the tiny SDXL model from a fixed seed and save it as a base
    pipeline directory (model_index.json, unet, vae, text_encoder,
    text_encoder_2, tokenizer, tokenizer_2, scheduler) and a ControlNet
    directory, in safetensors."""
    torch.manual_seed(TINY_SEED)
    unet = build_unet()
    # Narrow conditioning embedding: it runs at full image resolution.
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 16, 32))
    base = StableDiffusionXLPipeline(
        vae=build_vae(),
        text_encoder=CLIPTextModel(clip_config()),
        text_encoder_2=CLIPTextModelWithProjection(clip_config()),
        tokenizer=build_tokenizer(),
        tokenizer_2=build_tokenizer(),
        unet=unet,
        # SDXL base 1.0's own scheduler config; the study swaps it.
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        ),
        add_watermarker=False,
    )
    base.save_pretrained(base_dir, safe_serialization=True)
    controlnet.save_pretrained(controlnet_dir, safe_serialization=True)
