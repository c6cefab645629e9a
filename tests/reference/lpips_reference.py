"""Reference LPIPS distances from the lpips package (richzhang/PerceptualSimilarity),
for the random weights and image pairs of ``tests/lpips_weights.py``.

Run in an environment with torch, torchvision and lpips (they do not install
beside this project's CPU torch), from the repository root:

    pip install torch==2.14.1 torchvision==0.29.1 lpips
    PYTHONPATH=src:tests python tests/reference/lpips_reference.py

It writes ``tests/reference/lpips_reference.json``, which
``tests/test_learned.py`` compares this project's LPIPS with.
"""

from __future__ import annotations

import json
import tempfile
from importlib.metadata import version
from pathlib import Path

import lpips
import torch
import torchvision

from lpips_weights import reference_image_pairs, write_lpips_weights

TORCHVISION_MODELS = {"alex": torchvision.models.alexnet, "vgg": torchvision.models.vgg16}


def reference_distances(network: str, directory: Path) -> list[float]:
    backbone_path, linear_path = write_lpips_weights(directory, network)
    backbone = TORCHVISION_MODELS[network]()
    # Strict for the features: a key or shape this project names differently fails here
    # (a wrong shape raises; a wrong or missing key is caught by the asserts).
    features = {k: v for k, v in torch.load(backbone_path).items() if k.startswith("features.")}
    loaded = backbone.load_state_dict(features, strict=False)
    assert not loaded.unexpected_keys, loaded.unexpected_keys
    assert all(key.startswith("classifier.") for key in loaded.missing_keys), loaded.missing_keys
    # The lpips package builds its backbone through torchvision; hand it this one.
    lpips.pretrained_networks.tv.alexnet = lambda **_: backbone
    lpips.pretrained_networks.tv.vgg16 = lambda **_: backbone
    model = lpips.LPIPS(net=network, model_path=str(linear_path), verbose=False).eval()
    distances = []
    with torch.no_grad():
        for image_a, image_b in reference_image_pairs():
            tensors = [lpips.im2tensor(image) for image in (image_a, image_b)]
            distances.append(float(model(*tensors).item()))
    return distances


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        reference = {
            "generated_by": f"lpips {version('lpips')}, torch {torch.__version__}, torchvision {torchvision.__version__}",
            "distances": {network: reference_distances(network, Path(directory)) for network in TORCHVISION_MODELS},
        }
    output = Path(__file__).with_name("lpips_reference.json")
    output.write_text(json.dumps(reference, indent=2) + "\n")
    print(json.dumps(reference, indent=2))


if __name__ == "__main__":
    main()
