"""Learned quality: how much people would like an image, from local weights only.

Two predictors trained on human judgements, both on CLIP embeddings:

- The LAION improved aesthetic predictor (Schuhmann et al., "LAION-5B: An
  open large-scale dataset for training next generation image-text models",
  NeurIPS 2022; github.com/christophschuhmann/improved-aesthetic-predictor):
  a rating of the image alone on the 1-10 scale of its training ratings
  (SAC, LAION-Logos, AVA); higher is better.
- PickScore (Kirstain et al., "Pick-a-Pic: An Open Dataset of User
  Preferences for Text-to-Image Generation", NeurIPS 2023): how much people
  prefer the image for its prompt, as a scaled CLIP similarity; higher is
  better, and only differences between images of one prompt are meaningful.

Weights are read from directories and files on this machine and nothing is
ever downloaded: a path that is not there raises ``FileNotFoundError`` (an
``OSError``) naming it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from promptsweep.learned import WeightsError, read_checkpoint, take_tensor

# OpenAI CLIP ViT-L/14 embeds images in 768 dimensions: the predictor's input.
AESTHETIC_EMBEDDING_SIZE = 768
BATCH_SIZE = 16


@dataclass(frozen=True)
class AestheticModel:
    clip: Any  # transformers CLIPModel
    image_processor: Any  # transformers CLIPImageProcessor
    mlp: Any  # torch.nn.Module: see aesthetic_mlp


@dataclass(frozen=True)
class PickScoreModel:
    model: Any  # transformers CLIPModel
    processor: Any  # transformers CLIPProcessor


def _local_directory(path: str | PathLike[str], what: str) -> Path:
    # Checked here, not left to transformers: given a name that is not a
    # directory, it would look the name up in the hub cache instead.
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"{what} {directory} is not a directory on this machine")
    return directory


def aesthetic_mlp() -> Any:
    """The aesthetic predictor's network, untrained, in evaluation mode.

    Linear layers 768-1024-128-64-16-1 with dropouts after the first three
    and no activations, as in the original; wrapped so that the parameters
    are named ``layers.<i>.weight``/``.bias`` like the released checkpoint.
    """
    from torch import nn

    layers = nn.Sequential(
        nn.Linear(AESTHETIC_EMBEDDING_SIZE, 1024), nn.Dropout(0.2),
        nn.Linear(1024, 128), nn.Dropout(0.2),
        nn.Linear(128, 64), nn.Dropout(0.1),
        nn.Linear(64, 16),
        nn.Linear(16, 1),
    )
    return nn.Sequential(OrderedDict(layers=layers)).eval()


def load_aesthetic(clip_directory: str | PathLike[str], mlp_path: str | PathLike[str]) -> AestheticModel:
    """The LAION aesthetic predictor from two local paths:

    - ``clip_directory``: OpenAI CLIP ViT-L/14 in transformers' layout
      (a download of ``openai/clip-vit-large-patch14``); its image processor
      is read from the same directory.
    - ``mlp_path``: the predictor's state dict,
      ``sac+logos+ava1-l14-linearMSE.pth``, loaded as tensors only.

    Raises ``FileNotFoundError`` for a path that is not there, ``OSError``
    from transformers for a directory without a model, and
    :class:`~promptsweep.learned.WeightsError` for files that do not hold the
    expected weights.
    """
    from transformers import CLIPImageProcessor, CLIPModel

    directory = _local_directory(clip_directory, "CLIP model directory")
    mlp_file = Path(mlp_path).expanduser()
    checkpoint = read_checkpoint(mlp_file, "aesthetic predictor")
    mlp = aesthetic_mlp()
    hint = "is it sac+logos+ava1-l14-linearMSE.pth?"
    mlp.load_state_dict(
        {
            key: take_tensor(checkpoint, key, tuple(value.shape), mlp_file, hint)
            for key, value in mlp.state_dict().items()
        }
    )
    # Scores are only ever differentiated with respect to the images.
    clip = CLIPModel.from_pretrained(directory, local_files_only=True).eval().requires_grad_(False)
    if clip.config.projection_dim != AESTHETIC_EMBEDDING_SIZE:
        raise WeightsError(
            f"CLIP model in {directory} embeds images in {clip.config.projection_dim} "
            f"dimensions, the aesthetic predictor takes {AESTHETIC_EMBEDDING_SIZE}: "
            "is it OpenAI CLIP ViT-L/14?"
        )
    image_processor = CLIPImageProcessor.from_pretrained(directory, local_files_only=True)
    return AestheticModel(clip, image_processor, mlp.requires_grad_(False))


def _projected_image_features(clip: Any, pixel_values: Any) -> Any:
    features = clip.get_image_features(pixel_values=pixel_values)
    # transformers 5 returns a model output whose pooler_output holds the
    # projected embeddings; earlier versions return the embeddings alone.
    return getattr(features, "pooler_output", features)


def _unit(vectors: Any) -> Any:
    return vectors / vectors.norm(dim=-1, keepdim=True)


def aesthetic_scores(model: AestheticModel, images: Sequence[np.ndarray]) -> list[float]:
    """Aesthetic score of each image (HxWx3 uint8), about 1 to 10; higher is better.

    The image goes through CLIP's own preprocessing and image encoder; the
    embedding is divided by its L2 norm and the MLP maps it to a score.
    Images are scored in batches of :data:`BATCH_SIZE`.
    """
    import torch

    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(images), BATCH_SIZE):
            batch = list(images[start : start + BATCH_SIZE])
            pixels = model.image_processor(images=batch, return_tensors="pt").pixel_values
            # On the model's device: the search's gradient may have moved it to the GPU.
            embeddings = _unit(_projected_image_features(model.clip, pixels.to(model.clip.device)))
            scores += model.mlp.to(embeddings.device)(embeddings).squeeze(-1).cpu().tolist()
    return scores


def load_pickscore(
    processor_directory: str | PathLike[str], model_directory: str | PathLike[str]
) -> PickScoreModel:
    """PickScore from two local directories in transformers' layout:

    - ``processor_directory``: the processor of the CLIP ViT-H/14 it was
      fine-tuned from (a download of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``).
    - ``model_directory``: the fine-tuned model (``yuvalkirstain/PickScore_v1``).

    Raises ``FileNotFoundError`` for a directory that is not there and
    ``OSError`` from transformers for one without the expected files.
    """
    from transformers import AutoModel, AutoProcessor

    processor = AutoProcessor.from_pretrained(
        _local_directory(processor_directory, "PickScore processor directory"), local_files_only=True
    )
    model = AutoModel.from_pretrained(
        _local_directory(model_directory, "PickScore model directory"), local_files_only=True
    )
    return PickScoreModel(model.eval().requires_grad_(False), processor)


def pickscore_scores(
    model: PickScoreModel, images: Sequence[np.ndarray], prompts: Sequence[str]
) -> list[float]:
    """PickScore of each image (HxWx3 uint8) for its prompt; higher is preferred.

    ``logit_scale.exp() * cos(E_I, E_T)`` between the CLIP embeddings of the
    image and of its prompt, as in the PickScore reference code (CLIP's
    learned logit scale, which CLIP training caps at 100). The prompt is
    truncated to CLIP's 77 tokens. Pairs are scored in batches of :data:`BATCH_SIZE`.
    """
    import torch

    if len(images) != len(prompts):
        raise ValueError(f"one prompt per image is needed, got {len(images)} images and {len(prompts)} prompts")
    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(images), BATCH_SIZE):
            batch = slice(start, start + BATCH_SIZE)
            inputs = model.processor(
                text=list(prompts[batch]), images=list(images[batch]),
                return_tensors="pt", padding=True, truncation=True, max_length=77,
            )
            outputs = model.model(**inputs.to(model.model.device))
            cosine = (_unit(outputs.image_embeds) * _unit(outputs.text_embeds)).sum(dim=-1)
            scores += (model.model.logit_scale.exp() * cosine).cpu().tolist()
    return scores


# Differentiable forms, for the latent search's gradient optimiser ------------


def clip_pixels(images: Any, image_processor: Any) -> Any:
    """CLIP's preprocessing of ``images`` ((N, 3, H, W), RGB in [0, 1]) in
    torch, so that gradients flow through it: the shorter side resized to the
    processor's ``shortest_edge`` (bicubic, antialiased), the centre cropped
    to its crop size, then normalised by its mean and standard deviation.
    The processor does the same in PIL on 8-bit images, with the longer
    side's length truncated as here; the two differ by the rounding to 8
    bits and the filters' details. Raises ValueError for a processor that
    does not resize by its shorter side (not CLIP's)."""
    import torch.nn.functional as F

    if not image_processor.do_resize or "shortest_edge" not in image_processor.size:
        raise ValueError(f"CLIP's preprocessing resizes the shorter side; this processor's size is {image_processor.size}")
    height, width = images.shape[-2:]
    side = image_processor.size["shortest_edge"]
    size = (side, int(side * width / height)) if height <= width else (int(side * height / width), side)
    cropped = F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False)
    if image_processor.do_center_crop:
        crop_height, crop_width = image_processor.crop_size["height"], image_processor.crop_size["width"]
        top, left = (size[0] - crop_height) // 2, (size[1] - crop_width) // 2
        cropped = cropped[..., top : top + crop_height, left : left + crop_width]
    mean = images.new_tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = images.new_tensor(image_processor.image_std).view(1, 3, 1, 1)
    return (cropped - mean) / std


def aesthetic_torch(model: AestheticModel, images: Any) -> Any:
    """:func:`aesthetic_scores` of ``images`` ((N, 3, H, W) in [0, 1]) with
    gradients: CLIP's preprocessing in torch (:func:`clip_pixels`)."""
    clip, mlp = model.clip.to(images.device), model.mlp.to(images.device)
    pixels = clip_pixels(images, model.image_processor).to(clip.dtype)
    return mlp(_unit(_projected_image_features(clip, pixels)).to(next(mlp.parameters()).dtype)).squeeze(-1)


def pickscore_torch(model: PickScoreModel, images: Any, prompt: str) -> Any:
    """:func:`pickscore_scores` of ``images`` ((N, 3, H, W) in [0, 1]), all
    for ``prompt``, with gradients to the images: CLIP's preprocessing in
    torch (:func:`clip_pixels`); the prompt's embedding is a constant."""
    import torch

    clip = model.model.to(images.device)
    pixels = clip_pixels(images, model.processor.image_processor).to(clip.dtype)
    with torch.no_grad():
        text = model.processor(text=[prompt], return_tensors="pt", padding=True, truncation=True, max_length=77)
        text_embeds = _unit(_projected_text_features(clip, text.to(images.device)))
    image_embeds = _unit(_projected_image_features(clip, pixels))
    return clip.logit_scale.exp() * (image_embeds * text_embeds).sum(dim=-1)


def _projected_text_features(clip: Any, inputs: Any) -> Any:
    features = clip.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"))
    return getattr(features, "pooler_output", features)
