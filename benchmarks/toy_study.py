"""What the toy model shows on the default study, against what was planted.

    python benchmarks/toy_study.py [--count 100]

runs the default study (the toy world on the toy model, with the README's
command) in a scratch copy of the workflow, and the same study on the random
tiny model (``model.source: tiny``, at the same settings) in another, then
prints:

* the mean edge F1 of every generated image against its control edge map,
  for both models (with the 95% t interval over images);
* what each degradation of the toy world does to each quality metric that
  needs no weights, on the world's pictures after the toy model's
  autoencoder (``promptsweep.toy.planted``), over ``--count`` pictures;
* for each prompt of the study, its planted direction on each metric beside
  what the study's verdict found (q < 0.05), and whether the change found
  is better or worse by the metric's declared direction.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_logs import copy_workflow, run_workflow  # noqa: E402

from promptsweep import stats, toy  # noqa: E402
from promptsweep.study import read_prompts  # noqa: E402
from promptsweep.toy import planted  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def toy_autoencoder():
    """The toy model's autoencoder round trip, uint8 picture to uint8 picture."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(toy.WEIGHTS / "base" / "vae", use_safetensors=True).eval()

    @torch.no_grad()
    def round_trip(picture: np.ndarray) -> np.ndarray:
        pixels = torch.from_numpy(picture).permute(2, 0, 1)[None].float() / 127.5 - 1
        decoded = vae.decode(vae.encode(pixels).latent_dist.mean).sample
        return ((decoded[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()

    return round_trip


def run_study(root: Path, model: dict | None = None) -> pd.DataFrame:
    """The default study in ``root``, on ``model`` (a ``model:`` section and
    the generation settings to keep) in place of the toy model when given."""
    root.mkdir(parents=True)
    copy_workflow(root, extra=("resources",))
    if model is not None:
        config_path = root / "config" / "config.yaml"
        config = yaml.safe_load(config_path.read_text())
        config["model"] = model
        config["generation"] = {**config["generation"], **toy.GENERATION_DEFAULTS}
        config_path.write_text(yaml.safe_dump(config))
    print(f"{root.name}: the study took {run_workflow(root):.0f} s (load average {os.getloadavg()[0]:.1f} after it)")
    return pd.read_csv(root / "results" / "tables" / "image_metrics.csv")


def edge_f1_line(name: str, image_metrics: pd.DataFrame) -> str:
    per_image = image_metrics.groupby("image_id")["edge_f1"].mean().to_numpy()
    low, high = stats.mean_ci(per_image)
    return f"{name}: mean edge F1 {per_image.mean():.3f} (95% CI {low:.3f} to {high:.3f}, {len(per_image)} images, {len(image_metrics)} generated images)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100, help="pictures per degradation for the planted effects")
    arguments = parser.parse_args()
    pd.set_option("display.width", 200)
    with tempfile.TemporaryDirectory(prefix="toy_study_") as scratch:
        toy_root, tiny_root = Path(scratch) / "toy", Path(scratch) / "tiny"
        toy_metrics = run_study(toy_root)
        tiny_metrics = run_study(tiny_root, {"source": "tiny", "family": "sd15", "name": "tiny (random weights)"})
        print(edge_f1_line("toy model", toy_metrics))
        print(edge_f1_line("random tiny model", tiny_metrics))
        quality_summary = pd.read_csv(toy_root / "results" / "tables" / "quality_summary.csv")
        prompts = read_prompts(toy_root / "config" / "toy-prompts.tsv")

    effects = planted.degradation_effects(arguments.count, autoencode=toy_autoencoder())
    print("\nstandardised change each degradation makes, after the toy autoencoder:")
    print(effects.pivot(index="degradation", columns="metric", values="standardised_change").round(2).to_string())
    compared = planted.compare_with_study(planted.expected_changes(prompts, effects), quality_summary)
    texts = {prompt.prompt_id: f"{prompt.kind[:3]} {prompt.text}" for prompt in prompts}
    print("\nper prompt and metric: planted direction / found (q < 0.05) / judged")
    table = compared.assign(
        cell=[
            f"{e:+d}/{f:+d} {j}".replace("+0", "0") for e, f, j in zip(compared["expected"], compared["found"], compared["judged"])
        ]
    ).pivot(index="prompt_id", columns="metric", values="cell")
    table.insert(0, "prompt", table.index.map(texts))
    print(table.to_string())
    planted_rows = compared[compared["expected"] != 0]
    unplanted_rows = compared[compared["expected"] == 0]
    print(
        f"\nplanted (prompt, metric) pairs found in their direction: {int(planted_rows['agrees'].sum())} of {len(planted_rows)}; "
        f"unplanted pairs with a significant change: {int((unplanted_rows['found'] != 0).sum())} of {len(unplanted_rows)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
