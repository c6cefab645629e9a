"""How often the default study could find the planted effects with a model
that draws exactly what the toy world's captions condition on.

    python benchmarks/toy_oracle.py [--studies 50] [--images 10] [--seeds 2]
        [--clean-share P ...] [--through-autoencoder]

Such a model, given a picture's prompt without quality words
("triangles, white background"), draws from the pictures whose captions name
their shapes and no quality: as the world draws them (mostly ordinary
pictures, faded a little), or clean with probability P and otherwise
degraded as those pictures are (``--clean-share``, to compare caption
designs; the world's own P is printed). For each of the default study's
prompts (``config/toy-prompts.tsv``) it changes only what the prompt's words
plant (``planted.involved_degradations``): quality words in the positive
prompt remove the ordinary fading; a negative prompt removes the degradations it
names (and the ordinary ones for ``low quality`` or ``worst quality``); a word the
captions never used changes nothing. Each seed's variants are coupled to its
baseline, as a shared starting noise couples them: the same degradations at
the same levels and with the same noise, less the removed ones.
``--through-autoencoder`` scores each picture after the shipped toy model's
autoencoder round trip, which keeps little of pixel noise.

Each simulated study (the default study's pictures, degradations drawn anew)
gets the verdict's test over image means (``stats.quality_deltas``). Printed,
per prompt: the share of studies in which the prompt is better on at least two
planted metrics, with q < 0.05 over the study's quality tests alone (as
``toy_check.py`` counts), and with p < 0.05, which bounds what any family can
give, since a Benjamini-Hochberg q-value is never below its p-value (the
verdict's family also holds each prompt's change against the noise floor
and its fidelity tests).

What a guided, imperfect model adds is outside it: the trained toy models
make changes that no caption explains (an unseen word acting through
guidance; docs/models.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from promptsweep import registry
from promptsweep.study import PromptSpec, read_prompts
from promptsweep.toy import planted, world
from toy_check import tested

REPO = Path(__file__).resolve().parent.parent
SUBJECT = "circles"
"""The tag every simulated caption is drawn for; a study prompt names its shapes."""
QUALITY_PHRASES = {*world.QUALITY_WORDS, *world.LOW_QUALITY_WORDS, *(d.word for d in world.DEGRADATIONS)}
# Each random stream's key starts with its own tag, so that no two streams share a seed.
DRAWS, NOISE, SHARE = 0, 1, 2


def unnamed_draw(rng: np.random.Generator) -> tuple[world.Applied, ...]:
    """The degradations of one picture whose caption names its shapes and no
    quality, drawn as the world draws pictures and captions."""
    picture = np.full((8, 8, 3), 0.5, np.float32)
    while True:
        _, applied = world.degrade(picture, rng)
        words = planted.phrases(world.caption([SUBJECT], applied, rng))
        if SUBJECT in words and not words & QUALITY_PHRASES:
            return applied


def baseline_draw(rng: np.random.Generator, clean_share: float | None) -> tuple[world.Applied, ...]:
    """A baseline picture's degradations: as the world draws them
    (``clean_share`` None), or clean with probability ``clean_share`` and
    otherwise drawn from the degraded pictures among them."""
    if clean_share is None:
        return unnamed_draw(rng)
    if rng.random() < clean_share:
        return ()
    while not (applied := unnamed_draw(rng)):
        pass
    return applied


def world_clean_share(draws: int = 20_000) -> float:
    rng = np.random.default_rng([SHARE])
    return float(np.mean([not unnamed_draw(rng) for _ in range(draws)]))


def removed_degradations(prompts: list[PromptSpec]) -> dict[str, set[str]]:
    """Per prompt, the degradations its words remove from the baseline's."""
    removed = {}
    for prompt in prompts:
        names, sign = planted.involved_degradations(prompt)
        if sign > 0:
            raise SystemExit(
                f"config/toy-prompts.tsv, prompt {prompt.prompt_id} ({prompt.text!r}): its words move the picture "
                "towards a degradation, which this simulation does not draw; it simulates quality words in a "
                "positive prompt and degradation words in a negative one"
            )
        removed[prompt.prompt_id] = set(names)
    return removed


def simulate(
    removed: dict[str, set[str]],
    clean_share: float | None,
    pictures: list[np.ndarray],
    seeds: int,
    study: int,
    seen: Callable[[np.ndarray], np.ndarray] | None = None,
) -> pd.DataFrame:
    """One simulated study's quality deltas, with q-values over its quality tests."""
    rng = np.random.default_rng([DRAWS, study, 1001 if clean_share is None else round(clean_share * 1000)])
    rows, drawn_pictures = [], []
    for index, picture in enumerate(pictures):
        clean = picture.astype(np.float32) / 255
        for seed in range(seeds):
            base = baseline_draw(rng, clean_share)
            conditions = {"baseline": base} | {
                prompt_id: tuple(each for each in base if each.degradation.name not in names)
                for prompt_id, names in removed.items()
            }
            for condition, applied in conditions.items():
                rows.append({"image_id": index, "seed": seed, "condition": condition})
                # The same noise stream for every condition of a seed, as a shared starting noise gives.
                noise = np.random.default_rng([NOISE, study, index, seed])
                drawn = world.to_uint8(world.apply(clean, applied, noise))
                drawn_pictures.append(seen(drawn) if seen else drawn)
    table = pd.concat([pd.DataFrame(rows), planted.scores(drawn_pictures)], axis=1)
    return tested(table, [metric.name for metric in planted.planted_metrics()])


def better_metrics(deltas: pd.DataFrame, column: str) -> pd.Series:
    """Per prompt, how many metrics it makes better with ``column`` (p or q) < 0.05."""
    better = [
        value < 0.05 and registry.METRICS[metric].judge(int(np.sign(delta))) == "better"
        for metric, delta, value in zip(deltas["metric"], deltas["delta_mean"], deltas[column])
    ]
    return deltas.assign(better=better).groupby("condition")["better"].sum()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--clean-share", type=float, action="append", default=[])
    parser.add_argument("--through-autoencoder", action="store_true")
    arguments = parser.parse_args()
    seen = None
    if arguments.through_autoencoder:
        from toy_study import toy_autoencoder

        seen = toy_autoencoder()
    prompts = read_prompts(REPO / "config" / "toy-prompts.tsv")
    removed = removed_degradations(prompts)
    pictures = [picture for _, picture, _ in world.study_scenes(arguments.images)]
    print(f"the world's captions: {world_clean_share():.3f} of the pictures whose captions name their shapes and no quality are clean")
    found: dict[str, dict[str, pd.Series]] = {"q_value": {}, "p_value": {}}
    for share in [None, *arguments.clean_share]:
        label = "world's P" if share is None else f"P = {share:.2f}"
        studies = [simulate(removed, share, pictures, arguments.seeds, study, seen) for study in range(arguments.studies)]
        for column in found:
            counts = pd.DataFrame([better_metrics(deltas, column) for deltas in studies])
            found[column][label] = (counts >= 2).mean()
    texts = pd.Series({prompt.prompt_id: prompt.text[:40] for prompt in prompts}, name="text")
    for column, statement in (("q_value", "q < 0.05 over its quality tests"), ("p_value", "p < 0.05 (any family's bound)")):
        print(
            f"share of {arguments.studies} simulated studies ({arguments.images} pictures, {arguments.seeds} seeds) in which "
            f"the prompt is better on at least two metrics, {statement}:"
        )
        print(pd.concat([texts, pd.DataFrame(found[column])], axis=1).round(2).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
