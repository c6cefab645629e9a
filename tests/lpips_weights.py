"""Random LPIPS weights in the two on-disk layouts users have: torchvision's
ImageNet checkpoint of the backbone (``features.<i>.weight``) and the lpips
package's v0.1 linear layers (``lin<k>.model.1.weight``).

Drawn from ``numpy.random.default_rng``, so the same files come out on any
machine: ``tests/reference/lpips_reference.py`` scores them with the lpips
package itself, and the tests compare this project's LPIPS with those scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from promptsweep.learned import lpips_backbone


def write_lpips_weights(directory: Path, network: str, seed: int = 0) -> tuple[Path, Path]:
    """Write ``<network>-backbone.pth`` and ``<network>-linear.pth``; return both paths."""
    rng = np.random.default_rng(seed)
    network_layers = lpips_backbone(network)
    backbone = {}
    for key, tensor in network_layers.features.state_dict().items():
        shape = tuple(tensor.shape)
        # He-uniform weights keep activations from vanishing through the layers.
        bound = np.sqrt(6.0 / np.prod(shape[1:])) if key.endswith("weight") else 0.1
        values = rng.uniform(-bound, bound, size=shape).astype(np.float32)
        backbone[f"features.{key}"] = torch.from_numpy(values)
    # torchvision's checkpoints also hold the classifier, which LPIPS ignores.
    backbone["classifier.1.weight"] = torch.zeros(2, 2)
    linear = {
        f"lin{k}.model.1.weight": torch.from_numpy(
            rng.uniform(0.0, 1.0, size=(1, channels, 1, 1)).astype(np.float32)
        )
        for k, channels in enumerate(network_layers.tapped_channels)
    }
    directory.mkdir(parents=True, exist_ok=True)
    backbone_path, linear_path = directory / f"{network}-backbone.pth", directory / f"{network}-linear.pth"
    torch.save(backbone, backbone_path)
    torch.save(linear, linear_path)
    return backbone_path, linear_path


def reference_image_pairs(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Image pairs (HxWx3 uint8) from identical to unrelated, and one non-square."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    ramp = np.broadcast_to(np.linspace(0, 255, 64)[None, :, None], (64, 64, 3)).round().astype(np.uint8)
    slightly_noisy = np.clip(ramp + rng.normal(0, 8, size=ramp.shape), 0, 255).astype(np.uint8)
    wide = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    return [
        (noise, noise.copy()),
        (ramp, slightly_noisy),
        (ramp, noise),
        (noise, np.roll(noise, 3, axis=1)),
        (wide, 255 - wide),
    ]
