"""How often the default study could find the planted effects with a model
that had learned the toy world perfectly: the ceiling that no training of the
toy model can pass.

    python benchmarks/toy_oracle.py [--studies 200] [--images 10] [--seeds 2]
        [--clean-share P ...] [--through-autoencoder]

A perfect model, given a picture's prompt without quality words, draws from
the pictures whose captions name no quality: clean with probability P (the
world's own P is measured from its captions and printed; ``--clean-share``
sets others, to compare caption designs), otherwise degraded as
``world.degrade`` degrades. For each of the default study's prompts
(``config/toy-prompts.tsv``) it changes only what the prompt's words plant
(``planted.involved_degradations``): quality words in the positive prompt
give the clean picture; a negative prompt removes the degradations it names
(all of them for ``low quality`` or ``worst quality``); a word the captions
never used changes nothing. Each seed's variants are coupled to its baseline,
as a shared starting noise couples them: the same degradations at the same
strengths, less the removed ones. ``--through-autoencoder`` scores each
picture after the shipped toy model's autoencoder round trip, which keeps
little of pixel noise: what the model can represent.

Each simulated study (ten study pictures, seeds drawn anew) is tested as the
verdict tests (``stats.quality_deltas``, one Benjamini-Hochberg family over
its quality tests; a study's family also holds its change tests, which can
make its q-values smaller). Printed: per prompt and clean share, the share of
studies in which the prompt is better, q < 0.05, on at least two planted
metrics: the issue's bar for that prompt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from promptsweep import registry, stats
from promptsweep.study import PromptSpec, read_prompts
from promptsweep.toy import planted, world
from toy_study import toy_autoencoder

REPO = Path(__file__).resolve().parent.parent
QUALITY_PHRASES = {*world.QUALITY_WORDS, *world.LOW_QUALITY_WORDS, *(d.word for d in world.DEGRADATIONS)}


def clean_share_among_unnamed(count: int = 20_000, seed: int = 0) -> float:
    """The share of clean pictures among the world's captions that name no quality."""
    rng = np.random.default_rng(seed)
    picture = np.full((8, 8, 3), 0.5, np.float32)
    clean = []
    for _ in range(count):
        _, degradations = world.degrade(picture, rng)
        if not QUALITY_PHRASES & {phrase.strip() for phrase in world.caption(["circles"], degradations, rng).split(",")}:
            clean.append(not degradations)
    return float(np.mean(clean))


def degraded_draw(rng: np.random.Generator) -> tuple[str, ...]:
    """The names of the degradations of one degraded picture, as ``world.degrade`` chooses them."""
    picture = np.full((8, 8, 3), 0.5, np.float32)
    while True:
        _, degradations = world.degrade(picture, rng)
        if degradations:
            return tuple(d.name for d in degradations)


def degraded(picture: np.ndarray, names: tuple[str, ...], key: list[int]) -> np.ndarray:
    """``picture`` with the named degradations, each at the strength drawn
    from its own stream of ``key``, whichever others are applied."""
    for position, degradation in enumerate(world.DEGRADATIONS):
        if degradation.name in names:
            rng = np.random.default_rng([*key, position])
            picture = np.clip(degradation.apply(picture, rng), 0.0, 1.0).astype(np.float32)
    return picture


def removed_by(prompt: PromptSpec) -> set[str]:
    names, sign = planted.involved_degradations(prompt)
    if sign > 0:
        raise SystemExit(f"prompt {prompt.prompt_id}: a move towards a degradation has no oracle here")
    return set(names)


def simulate(
    prompts: list[PromptSpec], clean_share: float, images: int, seeds: int, study: int, seen=lambda picture: picture
) -> pd.DataFrame:
    """One simulated study's quality deltas, with q-values."""
    rng = np.random.default_rng([study, int(clean_share * 1000)])
    rows, pictures = [], []
    for index, (image_id, picture, _) in enumerate(world.study_scenes(images)):
        clean = picture.astype(np.float32) / 255
        for seed in range(seeds):
            base = () if rng.random() < clean_share else degraded_draw(rng)
            conditions = {"baseline": base} | {
                prompt.prompt_id: tuple(name for name in base if name not in removed_by(prompt)) for prompt in prompts
            }
            for condition, names in conditions.items():
                rows.append({"image_id": image_id, "seed": seed, "condition": condition})
                pictures.append(seen(world.to_uint8(degraded(clean, names, [study, index, seed]))))
    names = [metric.name for metric in planted.planted_metrics()]
    table = pd.concat([pd.DataFrame(rows), planted.scores(pictures)], axis=1)
    deltas = stats.quality_deltas(table, "baseline", names)
    deltas["q_value"] = stats.benjamini_hochberg(deltas["p_value"])
    return deltas


def better_metrics(deltas: pd.DataFrame) -> pd.Series:
    """Per prompt, how many metrics it makes better with q < 0.05."""
    better = [
        q < 0.05 and registry.METRICS[metric].judge(int(np.sign(delta))) == "better"
        for metric, delta, q in zip(deltas["metric"], deltas["delta_mean"], deltas["q_value"])
    ]
    return deltas.assign(better=better).groupby("condition")["better"].sum()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--clean-share", type=float, action="append", default=[])
    parser.add_argument("--through-autoencoder", action="store_true")
    arguments = parser.parse_args()
    seen = toy_autoencoder() if arguments.through_autoencoder else (lambda picture: picture)
    prompts = read_prompts(REPO / "config" / "toy-prompts.tsv")
    own = clean_share_among_unnamed()
    print(f"the world's captions: {own:.3f} of the pictures whose captions name no quality are clean")
    columns = {}
    for share in [own, *arguments.clean_share]:
        counts = pd.DataFrame(
            [
                better_metrics(simulate(prompts, share, arguments.images, arguments.seeds, study, seen))
                for study in range(arguments.studies)
            ]
        )
        columns[f"P = {share:.2f}"] = (counts >= 2).mean()
        print(f"P = {share:.2f}: median metrics better per prompt:", counts.median().to_dict(), flush=True)
    texts = {prompt.prompt_id: prompt.text for prompt in prompts}
    result = pd.DataFrame(columns)
    result.insert(0, "text", [texts[name][:40] for name in result.index])
    print(
        f"share of {arguments.studies} simulated studies ({arguments.images} pictures, {arguments.seeds} seeds) "
        "in which the prompt is better on at least two metrics, q < 0.05:"
    )
    print(result.round(2).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
