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
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, StableDiffusionPipeline

from promptsweep import edges
from promptsweep.families.sd15_tiny import CLIP_MAX_LENGTH
from promptsweep.toy import architecture, train, world

SETTINGS = train.TrainingSettings()



def make_data(count: int, rng: np.random.Generator) -> train.TrainingData:
    """As ``train.make_data`` draws them, from ``rng``."""
    pictures, controls, captions = [], [], []
    for _ in range(count):
        clean, tags, _ = world.draw_scene(rng)
        picture, degradations = world.degrade(clean, rng)
        pictures.append(world.to_uint8(picture))
        controls.append(edges.canny(world.to_uint8(clean), SETTINGS.canny_low, SETTINGS.canny_high))
        captions.append(world.caption(tags, degradations, rng))
    stacked = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float() / 127.5 - 1
    control = torch.from_numpy(np.stack(controls)).float().div(255)[:, None].expand(-1, 3, -1, -1)
    return train.TrainingData(stacked, control.contiguous(), captions)


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
    data = make_data(arguments.pictures, np.random.default_rng(arguments.seed))
    latents_all = train.encode_pictures(vae, data.pictures) * vae.config.scaling_factor

    def ids(texts: list[str]) -> torch.Tensor:
        return tokenizer(texts, padding="max_length", max_length=CLIP_MAX_LENGTH, truncation=True, return_tensors="pt").input_ids

    token_ids, empty_ids = ids(data.captions), ids([""])
    parameters = [*text_encoder.parameters(), *unet.parameters(), *controlnet.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=arguments.learning_rate)
    for model in (text_encoder, unet, controlnet):
        model.train()
    generator = torch.Generator().manual_seed(arguments.seed)
    started = time.perf_counter()
    for step in range(1, arguments.steps + 1):
        index = torch.randint(len(latents_all), (SETTINGS.denoiser_batch,), generator=generator)
        noise = torch.randn((len(index), *latents_all.shape[1:]), generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(index),), generator=generator)
        latents = latents_all[index]
        noisy = scheduler.add_noise(latents, noise, timesteps)
        batch_ids = token_ids[index].clone()
        batch_ids[torch.rand(len(index), generator=generator) < SETTINGS.empty_caption_share] = empty_ids
        text = text_encoder(batch_ids)[0]
        down, middle = controlnet(
            noisy, timesteps, encoder_hidden_states=text, controlnet_cond=data.controls[index], return_dict=False
        )
        prediction = unet(
            noisy, timesteps, encoder_hidden_states=text,
            down_block_additional_residuals=down, mid_block_additional_residual=middle,
        ).sample
        loss = F.mse_loss(prediction, scheduler.get_velocity(latents, noise, timesteps))
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        if step % 50 == 0:
            logging.info("step %d/%d: loss %.4f (%.2f s per step)", step, arguments.steps, loss.item(),
                         (time.perf_counter() - started) / step)
    for model in (text_encoder, unet, controlnet):
        model.eval()
    pipeline.save_pretrained(arguments.output / "base", safe_serialization=True)
    controlnet.save_pretrained(arguments.output / "controlnet", safe_serialization=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
