"""Continue training a toy model's denoiser with a variant recipe: an experiment, not the shipped training.

    python benchmarks/toy_finetune.py SOURCE OUTPUT [--steps 300] [--learning-rate 3e-4]
        [--pictures 3000] [--seed 1] [--threads 2]

loads the toy model in SOURCE (``base/`` and ``controlnet/``, as
``python -m promptsweep.toy train`` writes them), draws ``--pictures`` new
pictures of the toy world from ``--seed`` (the shipped training drew its own
from seed 0), and trains its text encoder, UNet and ControlNet together for
``--steps`` more steps at a constant learning rate, with a fresh AdamW, the
shipped training's loss, batch size, caption dropout and Canny thresholds
(``promptsweep.toy.train``), its autoencoder left as it is; then writes
``base/`` and ``controlnet/`` to OUTPUT, for ``benchmarks/toy_check.py``
(no training record and no checksums: a study cannot load it as
``source: toy``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import torch
from diffusers import ControlNetModel, StableDiffusionPipeline

from promptsweep.toy import architecture, train

SETTINGS = train.TrainingSettings()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--pictures", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(arguments.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(arguments.seed)

    pipeline = StableDiffusionPipeline.from_pretrained(
        arguments.source / "base", safety_checker=None, requires_safety_checker=False
    )
    controlnet = ControlNetModel.from_pretrained(arguments.source / "controlnet")
    vae, text_encoder, unet, tokenizer = pipeline.vae, pipeline.text_encoder, pipeline.unet, pipeline.tokenizer
    scheduler = architecture.build_noise_scheduler()
    data = train.make_data(dataclasses.replace(SETTINGS, seed=arguments.seed, pictures=arguments.pictures))
    latents = train.encode_pictures(vae, data.pictures) * vae.config.scaling_factor
    token_ids, empty_ids = train.caption_ids(tokenizer, data.captions), train.caption_ids(tokenizer, [""])
    parts = (text_encoder, unet, controlnet)
    parameters = [parameter for part in parts for parameter in part.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=arguments.learning_rate)
    for part in parts:
        part.train()
    generator = torch.Generator().manual_seed(arguments.seed)
    started = time.perf_counter()
    for step in range(1, arguments.steps + 1):
        loss = train.denoiser_loss(
            parts, scheduler, latents, data.controls, token_ids, empty_ids, SETTINGS, generator
        )
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        if step % 50 == 0:
            logging.info("step %d/%d: loss %.4f (%.2f s per step)", step, arguments.steps, loss.item(),
                         (time.perf_counter() - started) / step)
    for part in parts:
        part.eval()
    pipeline.save_pretrained(arguments.output / "base", safe_serialization=True)
    controlnet.save_pretrained(arguments.output / "controlnet", safe_serialization=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
