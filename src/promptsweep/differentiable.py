"""Differentiable torch forms of per-image quality metrics, for a search by gradient.

Each takes a batch of images as a float tensor ``(N, 3, H, W)``, RGB in
[0, 1] (a decoder's output mapped to that range), and returns one value per
image that gradients flow through. Each is the definition of the metric of
the same name in :mod:`promptsweep.quality` (see there for the definition and
its reference), on 8-bit levels, with one difference: the gray image is not
rounded to 8 bits, since rounding has no gradient. The registry
(:mod:`promptsweep.registry`) says which metric has a torch form here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights: those of cv2.cvtColor(..., COLOR_RGB2GRAY).
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
# OpenCV's default 3x3 Laplacian (cv2.Laplacian with ksize=1).
LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def _levels(images: torch.Tensor) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) RGB in [0, 1], got shape {tuple(images.shape)}")
    return 255.0 * images


def _gray(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) gray levels in [0, 255], not rounded."""
    weights = images.new_tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)
    return (_levels(images) * weights).sum(dim=1, keepdim=True)


def sharpness(images: torch.Tensor) -> torch.Tensor:
    """Population variance of the gray image's 3x3 Laplacian, borders
    reflected without repeating the edge pixel (OpenCV's default border):
    :func:`promptsweep.quality.sharpness`."""
    gray = F.pad(_gray(images), (1, 1, 1, 1), mode="reflect")
    kernel = images.new_tensor(LAPLACIAN).view(1, 1, 3, 3)
    return F.conv2d(gray, kernel).flatten(1).var(dim=1, unbiased=False)


def colorfulness(images: torch.Tensor) -> torch.Tensor:
    """Hasler and Süsstrunk's M from the opponent components ``R - G`` and
    ``(R + G) / 2 - B``: :func:`promptsweep.quality.colorfulness`."""
    red, green, blue = _levels(images).flatten(2).unbind(dim=1)
    red_green = red - green
    yellow_blue = 0.5 * (red + green) - blue
    spread = torch.hypot(red_green.std(dim=1, unbiased=False), yellow_blue.std(dim=1, unbiased=False))
    offset = torch.hypot(red_green.mean(dim=1), yellow_blue.mean(dim=1))
    return spread + 0.3 * offset


def rms_contrast(images: torch.Tensor) -> torch.Tensor:
    """Population standard deviation of the gray image in [0, 1]:
    :func:`promptsweep.quality.rms_contrast`."""
    return (_gray(images) / 255.0).flatten(1).std(dim=1, unbiased=False)


def aesthetic(model: object, images: torch.Tensor, prompt: str) -> torch.Tensor:
    """The LAION aesthetic score with its loaded weights (``model``):
    :func:`promptsweep.preference.aesthetic_torch`; the prompt is unused."""
    from promptsweep.preference import aesthetic_torch

    return aesthetic_torch(model, images)


def pickscore(model: object, images: torch.Tensor, prompt: str) -> torch.Tensor:
    """PickScore for ``prompt`` with its loaded weights (``model``):
    :func:`promptsweep.preference.pickscore_torch`."""
    from promptsweep.preference import pickscore_torch

    return pickscore_torch(model, images, prompt)
