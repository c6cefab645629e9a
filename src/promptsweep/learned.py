"""Learned metrics, computed only from weights already on this machine.

CLIP score (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric
for Image Captioning"; torchmetrics' definition): ``max(100 * cos(E_I, E_T), 0)``
between the CLIP embeddings of a generated image and of its prompt. It measures
how well the picture matches the text, beside the structural metrics that
compare pictures with each other.

Nothing is ever downloaded: a model that is not a local directory or already in
the Hugging Face cache is reported as not computed, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

LPIPS_NOT_COMPUTED = (
    "LPIPS not computed: it needs the lpips package with torchvision's pretrained "
    "AlexNet or VGG weights, which this project does not fetch"
)


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
