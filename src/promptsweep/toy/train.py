"""Training the toy model from a fixed seed, on a CPU.

Two stages, as Stable Diffusion was trained: first the autoencoder on the
pictures; then, on its latents, the text encoder, the UNet and the ControlNet
together with the noise-prediction loss (Ho et al. 2020), the caption left
empty one time in ten so that classifier-free guidance has an unconditional
branch (Ho and Salimans 2022).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import diffusers
from diffusers import StableDiffusionPipeline

from promptsweep import edges, metrics, toy
from promptsweep.families import sd15_tiny
from promptsweep.families.sd15_tiny import CLIP_MAX_LENGTH
from promptsweep.toy import architecture, world

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSettings:
    """Everything that decides the trained weights, besides the code."""

    seed: int = 0
    pictures: int = 6000
    autoencoder_steps: int = 3000
    autoencoder_batch: int = 16
    autoencoder_crop: int = 64
    autoencoder_learning_rate: float = 2e-3
    kl_weight: float = 1e-6
    denoiser_steps: int = 1500
    denoiser_batch: int = 32
    denoiser_learning_rate: float = 1e-3
    empty_caption_share: float = 0.1
    canny_low: int = 100
    canny_high: int = 200
    threads: int = 2


def code_digest() -> str:
    """The sha256 of the source of every module that decides the weights
    besides the settings (the world, the architecture, this training loop and
    the tokenizer's byte vocabulary): weights whose recorded digest differs
    from the code's were trained by other code."""
    digest = hashlib.sha256()
    for module in (world, architecture, sd15_tiny, sys.modules[__name__]):
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainingData:
    pictures: torch.Tensor  # (n, 3, H, W) in [-1, 1]
    controls: torch.Tensor  # (n, 3, H, W) in {0, 1}
    captions: list[str]


def make_data(settings: TrainingSettings) -> TrainingData:
    """The toy world's pictures, their clean pictures' Canny edges and their captions."""
    rng = np.random.default_rng(settings.seed)
    pictures, controls, captions = [], [], []
    for _ in range(settings.pictures):
        clean, tags, _ = world.draw_scene(rng)
        picture, degradations = world.degrade(clean, rng)
        edge_map = edges.canny(world.to_uint8(clean), settings.canny_low, settings.canny_high)
        pictures.append(world.to_uint8(picture))
        controls.append(edge_map)
        captions.append(world.caption(tags, degradations, rng))
    stacked = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float() / 127.5 - 1
    control = torch.from_numpy(np.stack(controls)).float().div(255)[:, None].expand(-1, 3, -1, -1)
    return TrainingData(stacked, control.contiguous(), captions)


def _gradient_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Matching image gradients as well as values keeps the decoder's edges
    # sharp: a pixel loss alone is minimised by a blur.
    def gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]

    (oy, ox), (ty, tx) = gradients(output), gradients(target)
    return (oy - ty).abs().mean() + (ox - tx).abs().mean()


def train_autoencoder(data: TrainingData, settings: TrainingSettings, generator: torch.Generator):
    vae = architecture.build_vae()
    optimiser = torch.optim.AdamW(vae.parameters(), lr=settings.autoencoder_learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, settings.autoencoder_steps)
    crop = settings.autoencoder_crop
    n, _, height, width = data.pictures.shape
    for step in range(1, settings.autoencoder_steps + 1):
        index = torch.randint(n, (settings.autoencoder_batch,), generator=generator)
        top, left = (int(v) for v in torch.randint(0, height - crop + 1, (2,), generator=generator))
        batch = data.pictures[index, :, top : top + crop, left : left + crop]
        posterior = vae.encode(batch).latent_dist
        # The decoder reads the posterior's mean, as a plain autoencoder's would:
        # an untrained encoder's unit sampling noise slowed learning several times over.
        output = vae.decode(posterior.mean).sample
        reconstruction = F.l1_loss(output, batch) + F.mse_loss(output, batch) + _gradient_loss(output, batch)
        loss = reconstruction + settings.kl_weight * posterior.kl().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 100 == 0 or step == 1:
            logger.info("autoencoder step %d/%d: loss %.4f", step, settings.autoencoder_steps, loss.item())
    vae.eval()
    logger.info("autoencoder: mean edge F1 of reconstructed study pictures %.3f", reconstruction_edge_f1(vae, settings))
    return vae


@torch.no_grad()
def reconstruction_edge_f1(vae, settings: TrainingSettings, count: int = 10) -> float:
    """Mean Canny edge F1 between the first ``count`` study pictures and their
    reconstructions: the most the denoiser can reach on them."""
    scores = []
    for _, picture, _ in world.study_scenes(count):
        pixels = torch.from_numpy(picture).permute(2, 0, 1)[None].float() / 127.5 - 1
        output = vae.decode(vae.encode(pixels).latent_dist.mean).sample
        decoded = world.to_uint8(output[0].permute(1, 2, 0).clamp(-1, 1).add(1).div(2).numpy())
        scores.append(metrics.canny_f1(decoded, edges.canny(picture, settings.canny_low, settings.canny_high), settings.canny_low, settings.canny_high))
    return float(np.mean(scores))


@torch.no_grad()
def encode_pictures(vae, pictures: torch.Tensor) -> torch.Tensor:
    """Each picture's latent: the posterior's mean, which the decoder was trained on."""
    return torch.cat([vae.encode(pictures[start : start + 64]).latent_dist.mean for start in range(0, len(pictures), 64)])


def caption_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    """Each caption's token ids, padded to CLIP's 77."""
    return tokenizer(
        captions, padding="max_length", max_length=CLIP_MAX_LENGTH, truncation=True, return_tensors="pt"
    ).input_ids


def denoiser_loss(
    parts: tuple,
    scheduler,
    latents: torch.Tensor,
    controls: torch.Tensor,
    token_ids: torch.Tensor,
    empty_ids: torch.Tensor,
    settings: TrainingSettings,
    generator: torch.Generator,
) -> torch.Tensor:
    """The v-prediction loss (Salimans and Ho 2022) of the text encoder, UNet
    and ControlNet in ``parts`` on one batch of ``settings.denoiser_batch``
    pictures drawn from ``generator``: scaled ``latents``, their ``controls``
    and captions (``token_ids``), each caption left empty (``empty_ids``)
    with probability ``settings.empty_caption_share``."""
    text_encoder, unet, controlnet = parts
    index = torch.randint(len(latents), (settings.denoiser_batch,), generator=generator)
    clean = latents[index]
    noise = torch.randn(clean.shape, generator=generator)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(index),), generator=generator)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    ids = token_ids[index].clone()
    dropped = torch.rand(len(index), generator=generator) < settings.empty_caption_share
    ids[dropped] = empty_ids
    text = text_encoder(ids)[0]
    down, middle = controlnet(
        noisy, timesteps, encoder_hidden_states=text, controlnet_cond=controls[index], return_dict=False
    )
    prediction = unet(
        noisy,
        timesteps,
        encoder_hidden_states=text,
        down_block_additional_residuals=down,
        mid_block_additional_residual=middle,
    ).sample
    return F.mse_loss(prediction, scheduler.get_velocity(clean, noise, timesteps))


def train_denoiser(data: TrainingData, vae, settings: TrainingSettings, generator: torch.Generator):
    tokenizer = architecture.build_tokenizer()
    text_encoder = architecture.build_text_encoder(len(tokenizer))
    unet = architecture.build_unet()
    controlnet = architecture.build_controlnet(unet)
    scheduler = architecture.build_noise_scheduler()

    means = encode_pictures(vae, data.pictures)
    # Unit-variance latents, as SD's 0.18215 makes its own.
    scaling_factor = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=scaling_factor)
    logger.info("latent scaling factor %.4f", scaling_factor)

    token_ids, empty_ids = caption_ids(tokenizer, data.captions), caption_ids(tokenizer, [""])

    parameters = [*text_encoder.parameters(), *unet.parameters(), *controlnet.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=settings.denoiser_learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, settings.denoiser_learning_rate, total_steps=settings.denoiser_steps, pct_start=0.05
    )
    latents = means * scaling_factor
    for step in range(1, settings.denoiser_steps + 1):
        loss = denoiser_loss(
            (text_encoder, unet, controlnet), scheduler, latents, data.controls, token_ids, empty_ids, settings, generator
        )
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        schedule.step()
        if step % 100 == 0 or step == 1:
            logger.info("denoiser step %d/%d: loss %.4f", step, settings.denoiser_steps, loss.item())
    return tokenizer, text_encoder, unet, controlnet


def train(output: Path, settings: TrainingSettings) -> None:
    """Train every part and write ``output/base`` (a Stable Diffusion pipeline
    directory) and ``output/controlnet``, as safetensors, with
    ``output/training.json`` (the settings, the seconds each stage took, the
    training code's :func:`code_digest`, the torch and diffusers versions) and
    ``output/SHA256SUMS`` (every weight file's sha256)."""
    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    # Denormal floats can slow a CPU's convolutions many times over.
    torch.set_flush_denormal(True)
    generator = torch.Generator().manual_seed(settings.seed)
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    data = make_data(settings)
    seconds["data"] = time.perf_counter() - start
    logger.info("%d pictures in %.0f s", len(data.captions), seconds["data"])

    start = time.perf_counter()
    vae = train_autoencoder(data, settings, generator)
    seconds["autoencoder"] = time.perf_counter() - start

    start = time.perf_counter()
    tokenizer, text_encoder, unet, controlnet = train_denoiser(data, vae, settings, generator)
    seconds["denoiser"] = time.perf_counter() - start

    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=architecture.build_noise_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(output / "base", safe_serialization=True)
    controlnet.save_pretrained(output / "controlnet", safe_serialization=True)
    (output / "training.json").write_text(
        json.dumps(
            {
                "settings": asdict(settings),
                "seconds": seconds,
                "code_sha256": code_digest(),
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
            },
            indent=2,
        )
        + "\n"
    )
    toy.write_checksums(output)
    logger.info("wrote %s in %.0f s", output, sum(seconds.values()))
