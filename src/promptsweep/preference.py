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
    clip = CLIPModel.from_pretrained(directory, local_files_only=True).eval()
    if clip.config.projection_dim != AESTHETIC_EMBEDDING_SIZE:
        raise WeightsError(
            f"CLIP model in {directory} embeds images in {clip.config.projection_dim} "
            f"dimensions, the aesthetic predictor takes {AESTHETIC_EMBEDDING_SIZE}: "
            "is it OpenAI CLIP ViT-L/14?"
        )
    image_processor = CLIPImageProcessor.from_pretrained(directory, local_files_only=True)
    return AestheticModel(clip, image_processor, mlp)


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
            embeddings = _unit(_projected_image_features(model.clip, pixels))
            scores += model.mlp(embeddings).squeeze(-1).tolist()
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
    return PickScoreModel(model.eval(), processor)


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
            outputs = model.model(**inputs)
            cosine = (_unit(outputs.image_embeds) * _unit(outputs.text_embeds)).sum(dim=-1)
            scores += (model.model.logit_scale.exp() * cosine).tolist()
    return scores
