"""Calibration of the study's intervals and tests, by simulated studies.

For each distribution of per-image values (normal, t with 3 d.f., lognormal,
and values resampled from a default study's quality deltas) and each number
of images, simulate studies with the study's structure (images as clusters,
two seeds nested in each) and run the same functions the workflow runs
(promptsweep.calibration says which). Writes one CSV row per
(quantity, distribution, n_images): nominal against observed.

    python benchmarks/calibration.py --simulations 2000 --out benchmarks/results/calibration.csv

Skewed values need more images than the others before the intervals hold;
``--skewed-images`` adds larger studies for the lognormal distribution only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from promptsweep import calibration

HERE = Path(__file__).resolve().parent
STUDY_DELTAS = HERE / "data" / "study_deltas.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulations", type=int, default=2000, help="simulated studies per row")
    parser.add_argument("--images", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--skewed-images", type=int, nargs="*", default=[100, 200, 400])
    parser.add_argument("--effects", type=float, nargs="+", default=[0.5, 1.0], help="planted effects, in SDs")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "calibration.csv")
    args = parser.parse_args()

    rows = []
    started = time.perf_counter()
    for name, sampler in calibration.distributions(STUDY_DELTAS).items():
        for n_images in args.images:
            seed = n_images
            rows += calibration.quality_delta_rows(name, sampler, n_images, args.simulations, seed)
            rows += calibration.relative_effect_rows(name, sampler, n_images, args.simulations, seed=seed)
            rows += calibration.bootstrap_candidate_rows(name, sampler, n_images, args.simulations, seed)
            rows += calibration.power_rows(name, sampler, n_images, args.simulations, tuple(args.effects), seed)
            rows.append(calibration.fdr_row(name, sampler, n_images, args.simulations, seed=seed))
            print(f"{name:>10} {n_images:>4} images: {time.perf_counter() - started:7.1f} s", file=sys.stderr)
        if name == "lognormal":
            for n_images in args.skewed_images:
                rows += calibration.quality_delta_rows(name, sampler, n_images, args.simulations, n_images)
                rows.append(calibration.fdr_row(name, sampler, n_images, args.simulations, seed=n_images))
                print(f"{name:>10} {n_images:>4} images: {time.perf_counter() - started:7.1f} s", file=sys.stderr)

    table = pd.DataFrame(rows, columns=["quantity", "distribution", "n_images", "nominal", "observed", "n_simulations"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.4f")
    with pd.option_context("display.width", 250, "display.max_rows", 500, "display.max_columns", 20):
        print(table.pivot_table(index=["quantity", "distribution"], columns="n_images", values="observed").round(3))
    print(f"\n{len(table)} rows, {args.simulations} simulated studies each, in "
          f"{time.perf_counter() - started:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
