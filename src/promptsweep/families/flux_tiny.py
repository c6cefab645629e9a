"""The tiny random FLUX.1 model: a FLUX-shaped ControlNet pipeline with random
weights, built offline in seconds from a fixed seed.

Its shapes follow FLUX.1-dev at a small width: T5's hidden states as the text
sequence and CLIP's pooled output as the pooled vector, a 16-channel latent
at 1/8 of the image side packed into 2x2 patches (64 input channels), rotary
position embeddings over three axes, and a distilled guidance input in both
the transformer and the ControlNet (``guidance_embeds``), like
``black-forest-labs/FLUX.1-dev`` and ``InstantX/FLUX.1-dev-Controlnet-Canny``.
Written in their layouts and loaded like them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxControlNetModel,
    FluxPipeline,
    FluxTransformer2DModel,
)
from transformers import CLIPTextModel

from promptsweep.families import t5_tiny
from promptsweep.families.sd15_tiny import build_tokenizer
from promptsweep.families.sdxl_tiny import clip_config

TINY_SEED = 0
CLIP_WIDTH = 32
T5_WIDTH = 32
LATENT_CHANNELS = 16
# (heads, head width, rotary widths of the three position axes summing to it)
HEADS, HEAD_WIDTH, ROPE_AXES = 2, 16, (4, 4, 8)


def transformer_config() -> dict[str, object]:
    """What the transformer and the ControlNet share."""
    return {
        "patch_size": 1,
        "in_channels": 4 * LATENT_CHANNELS,
        "num_layers": 1,
        "num_single_layers": 1,
        "attention_head_dim": HEAD_WIDTH,
        "num_attention_heads": HEADS,
        "joint_attention_dim": T5_WIDTH,
        "pooled_projection_dim": CLIP_WIDTH,
        "guidance_embeds": True,
        "axes_dims_rope": ROPE_AXES,
    }


def build_vae() -> AutoencoderKL:
    # Four blocks: 8x downsampling; FLUX's 16 latent channels, scaling and shift.
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
        scaling_factor=0.3611,
        shift_factor=0.1159,
    )


def write_tiny_model(base_dir: Path, controlnet_dir: Path) -> None:
    """Build the tiny FLUX.1 model from a fixed seed and save it as a base
    pipeline directory (transformer, vae, CLIP and T5 encoders and
    tokenizers, scheduler) and a ControlNet directory, in safetensors."""
    torch.manual_seed(TINY_SEED)
    base = FluxPipeline(
        transformer=FluxTransformer2DModel(**transformer_config()),
        vae=build_vae(),
        text_encoder=CLIPTextModel(clip_config(CLIP_WIDTH, CLIP_WIDTH)),
        tokenizer=build_tokenizer(),
        text_encoder_2=t5_tiny.build_text_encoder(T5_WIDTH),
        tokenizer_2=t5_tiny.build_tokenizer(),
        # FLUX.1-dev's scheduler config: the shift grows with the image's size.
        scheduler=FlowMatchEulerDiscreteScheduler(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        ),
    )
    base.save_pretrained(base_dir, safe_serialization=True)
    FluxControlNetModel(**transformer_config()).save_pretrained(controlnet_dir, safe_serialization=True)
