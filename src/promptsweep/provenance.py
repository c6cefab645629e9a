"""What a generated image was made with: enough to trace and redo it."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import torch

TRACKED_PACKAGES = (
    "promptsweep",
    "torch",
    "diffusers",
    "transformers",
    "safetensors",
    "huggingface-hub",
    "numpy",
    "opencv-python-headless",
    "scikit-image",
    "pillow",
    "snakemake",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(device: str) -> str:
    """The accelerator's name (``NVIDIA H100 80GB HBM3``) or the CPU's architecture."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
