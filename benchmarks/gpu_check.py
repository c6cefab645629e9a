"""GPU figures for the generation path: fp16/bf16 validity, throughput and peak
memory of a pipeline with Stable Diffusion 1.5's and ControlNet's real shapes.

    python benchmarks/gpu_check.py

The weights are random (real ones cannot be fetched offline), so images mean
nothing, but the compute and memory are those of SD 1.5 + ControlNet: the UNet,
ControlNet, VAE and CLIP ViT-L/14 text encoder are built from their published
configurations. Prints one line per measurement.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    StableDiffusionControlNetPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel

from promptsweep.generation import Item, generate
from promptsweep.families.sd15 import FAMILY as SD15
from promptsweep.conditions import GenerationInput
from promptsweep.study import GenerationSettings
from promptsweep.families.sd15_tiny import build_tokenizer


def sd15_shaped_pipeline(dtype: torch.dtype, device: str = "cuda") -> StableDiffusionControlNetPipeline:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=768,
        attention_head_dim=8,
        block_out_channels=(320, 640, 1280, 1280),
    )
    controlnet = ControlNetModel.from_unet(unet)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    tokenizer = build_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072,
            num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
            bos_token_id=len(tokenizer) - 2, eos_token_id=len(tokenizer) - 1, pad_token_id=len(tokenizer) - 1,
        )
    )
    pipeline = StableDiffusionControlNetPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        controlnet=controlnet, scheduler=UniPCMultistepScheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device, dtype)


def edge_control(size: int = 512) -> Image.Image:
    rng = np.random.default_rng(0)
    edges = np.zeros((size, size), np.uint8)
    for _ in range(40):
        y, x = rng.integers(0, size, 2)
        edges[y, max(0, x - 40) : x + 40] = 255
    return Image.fromarray(np.stack([edges] * 3, axis=2))


def main() -> None:
    print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
    control = edge_control()
    prompts = GenerationInput("cat, best quality", "lowres, bad anatomy")
    settings = GenerationSettings(steps=20, guidance_scale=9.0, controlnet_scale=1.0, scheduler="unipc")
    for dtype in (torch.float16, torch.bfloat16):
        pipeline = sd15_shaped_pipeline(dtype)
        parameters = sum(p.numel() for m in (pipeline.unet, pipeline.controlnet, pipeline.vae, pipeline.text_encoder) for p in m.parameters())
        print(f"{dtype}: SD1.5-shaped pipeline, {parameters / 1e6:.0f} M parameters")
        pair = SD15.encode(pipeline, prompts)
        generate(SD15, pipeline, control, [Item(pair, 0)], GenerationSettings(2, 9.0, 1.0, "unipc"), 8)  # warm-up
        for seeds_per_batch in (1, 8):
            for slicing in (False, True):
                if slicing:
                    pipeline.enable_attention_slicing()
                else:
                    pipeline.disable_attention_slicing()
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                started = time.perf_counter()
                items = [Item(pair, seed) for seed in range(8)]
                images = generate(SD15, pipeline, control, items, settings, seeds_per_batch)
                torch.cuda.synchronize()
                seconds = time.perf_counter() - started
                peak = torch.cuda.max_memory_allocated() / 2**30
                problems = sum(image.problem is not None for image in images)
                print(
                    f"  512 px, 20 UniPC steps, 8 seeds in batches of {seeds_per_batch}, "
                    f"attention slicing {slicing}: {seconds:.2f} s, {8 * 20 / seconds:.1f} image-steps/s "
                    f"(CFG steps of batch 2 each), peak {peak:.2f} GiB, invalid images {problems}"
                )
        del pipeline
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
