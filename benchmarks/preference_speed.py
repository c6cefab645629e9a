"""Time the learned preference scores per image on this machine's CPU, with
models of the real shapes: OpenAI CLIP ViT-L/14 under the aesthetic
predictor, and CLIP ViT-H/14 for PickScore.

    python benchmarks/preference_speed.py

Weights are random (nothing is downloaded): the arithmetic, and so the time,
is that of the real checkpoints, except for the text embedding table, which
is the byte-level vocabulary of promptsweep.families.sd15_tiny rather than CLIP's 49,408
tokens (a lookup, not compute). Prints seconds per image for a batch of 4
512 px images (median of 3, after a warm-up).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from promptsweep.preference import AestheticModel, PickScoreModel, aesthetic_mlp, aesthetic_scores, pickscore_scores
from promptsweep.families.sd15_tiny import build_tokenizer

BATCH = 4


def clip_model(vision: tuple[int, int, int], text: tuple[int, int, int], projection_dim: int) -> CLIPModel:
    """Random CLIP with (hidden size, layers, heads) for each tower, 224 px, 14 px patches."""
    size = len(build_tokenizer())
    config = CLIPConfig(
        text_config=dict(
            vocab_size=size, hidden_size=text[0], intermediate_size=4 * text[0], num_hidden_layers=text[1],
            num_attention_heads=text[2], max_position_embeddings=77,
            bos_token_id=size - 2, eos_token_id=size - 1, pad_token_id=size - 1,
        ),
        vision_config=dict(
            hidden_size=vision[0], intermediate_size=4 * vision[0], num_hidden_layers=vision[1],
            num_attention_heads=vision[2], image_size=224, patch_size=14,
        ),
        projection_dim=projection_dim,
    )
    return CLIPModel(config).eval()


def seconds_per_image(score: Callable[[], list[float]]) -> float:
    score()  # warm-up
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        score()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) / BATCH


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(BATCH)]
    prompts = ["a photograph of an astronaut, best quality, highly detailed"] * BATCH
    image_processor = CLIPImageProcessor()  # CLIP's defaults: 224 px, bicubic, centre crop

    aesthetic = AestheticModel(clip_model((1024, 24, 16), (768, 12, 12), 768), image_processor, aesthetic_mlp())
    print(f"aesthetic (ViT-L/14): {seconds_per_image(lambda: aesthetic_scores(aesthetic, images)):.2f} s per image")
    del aesthetic

    processor = CLIPProcessor(image_processor=image_processor, tokenizer=build_tokenizer())
    pickscore = PickScoreModel(clip_model((1280, 32, 16), (1024, 24, 16), 1024), processor)
    print(f"PickScore (ViT-H/14): {seconds_per_image(lambda: pickscore_scores(pickscore, images, prompts)):.2f} s per image")


if __name__ == "__main__":
    main()
