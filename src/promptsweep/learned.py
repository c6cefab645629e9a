"""Learned metrics, computed only from weights already on this machine.

CLIP score (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric
for Image Captioning"; torchmetrics' definition): ``max(100 * cos(E_I, E_T), 0)``
between the CLIP embeddings of a generated image and of its prompt. It measures
how well the picture matches the text, beside the structural metrics that
compare pictures with each other.

LPIPS (Zhang et al. 2018): a distance between the baseline and the variant of a
pair, and between baselines of two seeds for its noise floor, from deep features weighted to match human judgements of difference; see
:func:`lpips_distances`. It is built here from two checkpoint files, so neither
torchvision nor the lpips package is needed.

Nothing is ever downloaded: weights that are not on this machine are reported
as not computed, with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

@dataclass(frozen=True)
class ClipModel:
    model: Any
    processor: Any


@lru_cache(maxsize=4)
def load_clip(source: str) -> ClipModel:
    """A CLIP model and its processor from a local directory or the local cache.

    Raises ``OSError`` when the weights are not on this machine.
    """
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(source, local_files_only=True, use_safetensors=True)
    processor = CLIPProcessor.from_pretrained(source, local_files_only=True)
    return ClipModel(model.eval(), processor)


def clip_scores(clip: ClipModel, images: list[np.ndarray], texts: list[str]) -> list[float]:
    """CLIP score of each image (HxWx3 uint8) against its text, in [0, 100]."""
    import torch

    inputs = clip.processor(
        text=texts, images=list(images), return_tensors="pt", padding=True, truncation=True
    )
    with torch.inference_mode():
        outputs = clip.model(**inputs)
    cosine = torch.nn.functional.cosine_similarity(outputs.image_embeds, outputs.text_embeds, dim=-1)
    return (100 * cosine).clamp(min=0).tolist()


# LPIPS ---------------------------------------------------------------------

LPIPS_NETWORKS = ("alex", "vgg")
# LPIPS v0.1 maps inputs in [-1, 1] to the statistics the backbone was trained
# on: (x - shift) / scale per RGB channel.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


LPIPS_FILES = ("backbone", "linear")


class WeightsError(ValueError):
    """A weights file that is on disk but is not the one expected."""


@dataclass(frozen=True)
class LpipsBackbone:
    """A backbone's convolutional layers, numbered as in torchvision's
    ``features`` (so its checkpoint keys ``features.<i>.weight`` load as they
    are), and the indices of the ReLUs LPIPS takes its five feature maps from."""

    features: Any  # torch.nn.Sequential
    taps: tuple[int, ...]

    @property
    def tapped_channels(self) -> tuple[int, ...]:
        """Channels of each tapped feature map (each tap follows a convolution)."""
        return tuple(self.features[index - 1].out_channels for index in self.taps)


def lpips_backbone(network: str) -> LpipsBackbone:
    """The backbone LPIPS uses for ``network``, with untrained weights.

    ``alex``: AlexNet (Krizhevsky et al. 2012, torchvision's variant), relu1-5.
    ``vgg``: VGG-16 (Simonyan & Zisserman 2015), relu1_2, 2_2, 3_3, 4_3, 5_3.
    Layers after the last tap are left out: LPIPS never uses them.
    """
    from torch import nn

    if network == "alex":
        features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, stride=2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, stride=2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        )
        return LpipsBackbone(features, (1, 4, 7, 9, 11))
    if network == "vgg":
        layers: list[Any] = []
        channels = 3
        for block, (width, convolutions) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]):
            if block:
                layers.append(nn.MaxPool2d(2, stride=2))
            for _ in range(convolutions):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                channels = width
        return LpipsBackbone(nn.Sequential(*layers), (3, 8, 15, 22, 29))
    raise ValueError(f"unknown LPIPS network {network!r}; use one of {', '.join(LPIPS_NETWORKS)}")


@dataclass(frozen=True)
class Lpips:
    """An LPIPS network: its backbone and one weight per channel of each tapped layer."""

    backbone: LpipsBackbone
    channel_weights: tuple[Any, ...]


def lpips_weight_paths(settings: dict[str, Any]) -> dict[str, Path]:
    """The files ``metrics.lpips`` names, by key (``backbone``, ``linear``),
    with ``~`` expanded; a key left unset is absent."""
    return {key: Path(settings[key]).expanduser() for key in LPIPS_FILES if settings[key]}


def read_checkpoint(path: Path, what: str) -> dict[str, Any]:
    import torch

    if not path.exists():
        raise FileNotFoundError(f"{what} {path} is not on this machine")
    if not path.is_file():
        raise WeightsError(f"{what} {path} is not a file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a checkpoint
        raise WeightsError(f"{what} {path} {_why_unreadable(path, error)}") from None
    if not isinstance(checkpoint, dict):
        raise WeightsError(f"{what} {path} holds a {type(checkpoint).__name__}, not a state dict")
    return checkpoint


def _why_unreadable(path: Path, error: Exception) -> str:
    """One line for the user; torch's own messages span lines and suggest
    ``weights_only=False``, which would run code from the file."""
    import pickle
    import zipfile

    if isinstance(error, pickle.UnpicklingError) and zipfile.is_zipfile(path):
        # A checkpoint archive that the weights-only loader refuses holds Python objects.
        return (
            "holds pickled Python objects, not only tensors; only a state dict is loaded "
            "(torch.save(model.state_dict(), path) writes one)"
        )
    return f"is not a PyTorch checkpoint ({type(error).__name__})"


def take_tensor(checkpoint: dict[str, Any], key: str, shape: tuple[int, ...], path: Path, hint: str) -> Any:
    if key not in checkpoint:
        raise WeightsError(f"{path} has no {key!r}: {hint}")
    tensor = checkpoint[key]
    if tuple(tensor.shape) != shape:
        raise WeightsError(f"{path}: {key!r} has shape {tuple(tensor.shape)}, not {shape}: {hint}")
    return tensor.float()


@lru_cache(maxsize=4)
def load_lpips(network: str, backbone_path: str, linear_path: str) -> Lpips:
    """LPIPS v0.1 from two local files, without torchvision or the lpips package:

    - ``backbone_path``: torchvision's ImageNet checkpoint of the network
      (``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``; after any
      torchvision download they are in ``~/.cache/torch/hub/checkpoints``).
      Only its ``features.*`` tensors are used.
    - ``linear_path``: the LPIPS linear layers, ``lpips/weights/v0.1/<network>.pth``
      as shipped inside the lpips package (``lin<k>.model.1.weight``).

    Raises ``FileNotFoundError`` for a missing file and :class:`WeightsError`
    for a file that does not hold the expected tensors; never downloads.
    """
    backbone = lpips_backbone(network)
    backbone_file, linear_file = Path(backbone_path), Path(linear_path)
    backbone_checkpoint = read_checkpoint(backbone_file, f"LPIPS {network} backbone")
    linear_checkpoint = read_checkpoint(linear_file, f"LPIPS {network} linear layers")
    hint = f"is it torchvision's ImageNet checkpoint of {network}?"
    state = {
        key: take_tensor(backbone_checkpoint, f"features.{key}", tuple(value.shape), backbone_file, hint)
        for key, value in backbone.features.state_dict().items()
    }
    backbone.features.load_state_dict(state)
    backbone.features.eval()
    hint = f"is it lpips/weights/v0.1/{network}.pth?"
    channel_weights = tuple(
        take_tensor(linear_checkpoint, f"lin{k}.model.1.weight", (1, channels, 1, 1), linear_file, hint).flatten()
        for k, channels in enumerate(backbone.tapped_channels)
    )
    return Lpips(backbone, channel_weights)


def lpips_distances(
    lpips: Lpips, images_a: Sequence[np.ndarray], images_b: Sequence[np.ndarray]
) -> list[float]:
    """LPIPS distance of each image pair (HxWx3 uint8, same size within a pair).

    LPIPS v0.1 (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep
    Features as a Perceptual Metric", eq. 1): both images are mapped to
    [-1, 1] and scaled per channel, passed through the backbone, and at each
    tapped layer l the activations are divided by their L2 norm over channels
    (plus 1e-10), subtracted, squared, weighted per channel by w_l, summed over
    channels and averaged over positions:

        d(x, y) = sum_l mean_hw sum_c w_lc (x̂_lhwc - ŷ_lhwc)^2

    0 for identical images; larger is more different. Each pair runs alone, so
    memory stays that of two images at any resolution.
    """
    import torch

    shift = torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1)
    scale = torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1)
    distances = []
    with torch.inference_mode():
        for image_a, image_b in zip(images_a, images_b, strict=True):
            pixels = torch.from_numpy(np.stack([image_a, image_b])).permute(0, 3, 1, 2).float()
            activations = (pixels / 127.5 - 1.0 - shift) / scale
            distance = torch.zeros(())
            weights = iter(lpips.channel_weights)
            for index, layer in enumerate(lpips.backbone.features):
                activations = layer(activations)
                if index in lpips.backbone.taps:
                    unit = activations / (activations.norm(dim=1, keepdim=True) + 1e-10)
                    squared = (unit[0] - unit[1]) ** 2
                    distance += (squared * next(weights).view(-1, 1, 1)).sum(dim=0).mean()
            distances.append(float(distance))
    return distances
