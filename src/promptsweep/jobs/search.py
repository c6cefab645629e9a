"""The optimisation search: one loop job per optimiser (propose, generate,
score, tell) on the selection split, the word prompts' own search, and the
evaluation of each one's best point on the evaluation split."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from promptsweep import edges, files, registry, threads
from promptsweep.conditions import BASELINE, GenerationInput, generation_input
from promptsweep.jobs import job_log
from promptsweep.jobs import generate as generate_jobs
from promptsweep.jobs import metrics as metric_jobs

if TYPE_CHECKING:
    from promptsweep.families import Conditioning
    from promptsweep.search.journal import Outcome

@dataclass(frozen=True)
class SelectionImage:
    """One selection image as a trial needs it: its control, and the
    conditionings its points are made of."""

    image_id: str
    prompt: str
    """The baseline's prompt, the image's own: a point's images are scored
    against it, and it is the subject every condition of the image shows."""
    negative_prompt: str
    edge_map: np.ndarray
    baseline: Conditioning
    words: dict[str, Conditioning]


def point_request(
    baseline: Mapping[str, Any], words: Mapping[str, Mapping[str, Any]], point: Mapping[str, float]
) -> dict[str, Any]:
    """The generation request of a point of the directions space: the
    baseline's request with an embedding that mixes every prompt's direction
    at its weight (:func:`promptsweep.emphasis.embedding_request`). Its texts
    are the baseline's, so a point's images are scored against the image's
    own prompt."""
    from promptsweep import emphasis

    inputs = {
        prompt_id: GenerationInput(request["prompt"], request["negative_prompt"]) for prompt_id, request in words.items()
    }
    terms = [(prompt_id, float(weight)) for prompt_id, weight in point.items()]
    embedding = emphasis.embedding_request(
        GenerationInput(baseline["prompt"], baseline["negative_prompt"]), inputs, terms
    )
    return {**baseline, "embedding": embedding}


def best_trial(trials: pd.DataFrame, direction: str) -> pd.Series | None:
    """The feasible trial with the best objective (the first of equals), or
    None when no trial was feasible."""
    feasible = trials[trials["feasible"].astype(bool) & trials["objective"].notna()]
    if feasible.empty:
        return None
    index = feasible["objective"].idxmax() if direction == "maximize" else feasible["objective"].idxmin()
    return feasible.loc[index]


def _scoring_metrics(settings: Mapping[str, Any], objective: str, logger: logging.Logger) -> registry.LoadedMetrics:
    """The image metrics a trial needs: its objective and its constraints."""
    from promptsweep.emphasis import CLIP_SCORE, EDGE_F1

    loaded = metric_jobs.loaded_metrics("image", settings, logger)
    wanted = {objective, EDGE_F1, CLIP_SCORE}
    return replace(loaded, metrics=[metric for metric in loaded.metrics if metric.name in wanted])


def _scored(
    loaded: registry.LoadedMetrics, image: SelectionImage, seeds: Sequence[int], generated: Sequence[Any],
    canny: tuple[int, int],
) -> pd.DataFrame:
    """The generated images' metrics, one row per seed; an invalid image's are NaN."""
    rows: list[dict[str, Any]] = [{"image_id": image.image_id, "seed": seed} for seed in seeds]
    scored = [
        (row, registry.ScoredImage(picture.pixels, image.prompt, image.prompt, image.edge_map, *canny))
        for row, picture in zip(rows, generated, strict=True)
        if picture.problem is None
    ]
    metric_jobs.fill_metrics(rows, scored, loaded)
    return pd.DataFrame(rows)


def search_trials(
    *,
    search: str,
    optimiser_settings: Mapping[str, Any],
    prompt_ids: Sequence[str],
    weight_range: Sequence[float],
    objective: str,
    direction: str,
    tolerances: Mapping[str, float],
    trials: int,
    seed: int,
    selection_seeds: Sequence[int],
    edge_maps: Sequence[str],
    requests: Mapping[str, Mapping[str, dict[str, Any]]],
    weights: str,
    metric_settings: Mapping[str, Any],
    canny_low: int,
    canny_high: int,
    journal: str,
    outputs: Mapping[str, str],
    log: str,
    tokens: int | None = None,
) -> None:
    """Run (or resume) one search on the selection split and write its
    ``trials`` table and its ``best`` point.

    With ``tokens``, the gradient optimiser searches a soft prompt of that
    many tokens (:mod:`promptsweep.search.tokens`) instead of the
    directions: each trial generates with its projection to words, whose
    gradient moves the soft tokens.

    ``requests`` maps each selection image, in the order of ``edge_maps``,
    to the generation requests of its baseline and of every prompt of
    ``prompt_ids`` on the selection seeds (texts, settings, runtime).
    ``search`` is an optimiser's name, whose
    trials go to the Optuna journal ``journal`` as they finish, or
    :data:`promptsweep.search.plan.WORDS`: each word prompt's point once, in
    sheet order, chosen among as an optimiser's trials are."""
    from promptsweep import generation
    from promptsweep.emphasis import Tolerances
    from promptsweep.search import journal as search_journal
    from promptsweep.search import objective as trial_objective
    from promptsweep.search import spaces
    from promptsweep.search import tokens as soft_tokens
    from promptsweep.search.optimisers import gradient, parameter_names
    from promptsweep.search.plan import WORDS
    from promptsweep.study import GenerationSettings

    with job_log(log, f"search {search}") as logger:
        threads.import_on_compute_thread(generate_jobs.MODEL_CODE)
        first = next(iter(requests.values()))[BASELINE]
        family, pipeline, options, batch_size = generate_jobs.load_pipeline(
            logger, files.read_json(Path(weights)), first["runtime"]
        )
        settings = GenerationSettings(**first["generation"])
        space = spaces.directions_space(prompt_ids, weight_range)
        loaded = _scoring_metrics(metric_settings, objective, logger)
        if objective in loaded.notes:
            raise ValueError(f"the objective {objective} cannot be computed: {loaded.notes[objective]}")
        canny = (canny_low, canny_high)
        limits = Tolerances(**tolerances)
        soft = None
        bounds = space.bounds
        if tokens is not None:
            token_ids, vocabulary = threads.on_device_thread(options.device, family.vocabulary, pipeline)
            soft = soft_tokens.soft_prompt(token_ids, vocabulary, tokens, seed)
            bounds = soft.bounds()
            logger.info(
                "%d soft tokens of width %d, starting at %r", tokens, soft.width,
                family.token_words(pipeline, [int(token_ids[row]) for row in soft.start]),
            )

        def run() -> pd.DataFrame:
            """The whole search, on the device's thread (promptsweep.threads)."""
            encode = functools.partial(family.encode, pipeline)
            images = [
                _selection_image(encode, image_id, files.read_png(Path(edge_map)), image_requests, prompt_ids)
                for (image_id, image_requests), edge_map in zip(requests.items(), edge_maps, strict=True)
            ]

            def generate_point(point: Sequence[float]) -> pd.DataFrame:
                tables = []
                for image in images:
                    conditioning = space.conditioning(image.baseline, image.words, point)
                    items = [generation.Item(conditioning, seed) for seed in selection_seeds]
                    control = edges.control_image(image.edge_map)
                    generated = generation.generate(family, pipeline, control, items, settings, batch_size)
                    tables.append(_scored(loaded, image, selection_seeds, generated, canny))
                return pd.concat(tables, ignore_index=True)

            started = time.perf_counter()
            baseline = generate_point(tuple(0.0 for _ in prompt_ids))
            logger.info(
                "baseline on %d images x %d seeds in %.1f s: %s %.4g",
                len(images), len(selection_seeds), time.perf_counter() - started, objective,
                baseline[objective].mean(),
            )

            if search != gradient.NAME:

                def measure(point: Sequence[float]) -> Outcome:
                    return trial_objective.trial_outcome(generate_point(point), baseline, objective, limits)

            else:
                import torch

                follow = functools.partial(
                    _follow_gradient, family, pipeline, images, settings, selection_seeds, batch_size,
                    registry.METRICS[objective].differentiable(loaded.models.get(objective)),
                    gradient.backprop_steps(optimiser_settings), functools.partial(_scored, loaded, canny=canny),
                )

                def measure(point: Sequence[float]) -> Outcome:
                    notes = {}
                    if soft is None:
                        leaf = torch.tensor(point, dtype=torch.float32, requires_grad=True)
                        table = follow(leaf, lambda image: space.conditioning(image.baseline, image.words, leaf))
                    else:
                        # PEZ: generate with the nearest words, follow their gradient.
                        ids, projected = soft.projected(point)
                        leaf = projected.clone().requires_grad_(True)
                        table = follow(
                            leaf,
                            lambda image: family.soft_prompt_conditioning(
                                pipeline, GenerationInput(image.prompt, image.negative_prompt), leaf
                            ),
                        )
                        notes = {"words": family.token_words(pipeline, ids)}
                    slope = tuple(float(value) for value in leaf.grad.flatten())  # type: ignore[union-attr]
                    if not all(np.isfinite(slope)):
                        logger.warning(
                            "the gradient of trial at %s is not finite (counted as 0); an image overflowed, "
                            "try runtime.dtype float32 or bfloat16", notes.get("words", point),
                        )
                    outcome = trial_objective.trial_outcome(table, baseline, objective, limits)
                    return replace(outcome, gradient=slope, notes=notes)

            if search == WORDS:
                return _word_trials(space, measure, direction, logger)
            return search_journal.run_search(
                _journal_of_inputs(Path(journal), [*edge_maps, weights]), search, search, bounds, measure, trials, direction, seed,
                optimiser_settings, log=logger.info,
            )

        table = threads.on_device_thread(options.device, run)
        if soft is None:
            table = table.rename(columns=dict(zip(parameter_names(len(prompt_ids)), prompt_ids)))
            best = _best_record(search, table, prompt_ids, direction, objective)
        else:
            names = list(parameter_names(soft.dimension))
            best = _best_tokens_record(
                search, table, names, soft, functools.partial(family.token_words, pipeline),
                functools.partial(family.token_ids, pipeline), direction, objective,
            )
            if best["tokens"] is not None and not best["tokens"]["words_round_trip"]:
                logger.warning(
                    "the best words %r are read back as other tokens than the search measured; "
                    "their row of the table judges the text as written", best["tokens"]["words"],
                )
            # The soft tokens' thousands of values stay in the journal and best.json; the table shows their words.
            table = table.drop(columns=names)
        files.write_table(Path(outputs["trials"]), table)
        files.write_json(Path(outputs["best"]), best)
        shown = best["tokens"]["words"] if best.get("tokens") else best["point"] or "baseline"
        logger.info("best: trial %s, objective %s, point %s", best["trial"], best["objective"], shown)


def _follow_gradient(
    family: Any,
    pipeline: Any,
    images: Sequence[SelectionImage],
    settings: Any,
    seeds: Sequence[int],
    batch_size: int,
    objective_form: Callable[[Any, str], Any],
    backprop_steps: int,
    score: Callable[[SelectionImage, Sequence[int], Sequence[Any]], pd.DataFrame],
    leaf: Any,
    conditioning_of: Callable[[SelectionImage], Conditioning],
) -> pd.DataFrame:
    """A gradient trial: its images on every selection image and seed, each
    image's conditioning made by ``conditioning_of`` from the tensor
    ``leaf`` (a point's weights, or soft tokens), generated with gradients
    (``family.differentiable_images``) in calls of exactly ``batch_size``
    images as every other generation is (``generation.generate_batch``),
    and scored like any trial's. The gradient of the objective's
    differentiable form, averaged as the objective is (over seeds, then
    images), is left in ``leaf.grad``."""
    from promptsweep import generation

    tables = []
    for image in images:
        conditioning = conditioning_of(image)
        control = edges.control_image(image.edge_map)
        generated = []
        for batch in generation.chunks(seeds, batch_size):
            call = generation.padded(batch, batch_size)
            pictures = family.differentiable_images(pipeline, control, conditioning, call, settings, backprop_steps)
            pictures = pictures[: len(batch)]
            # One backward pass per call: only one call's graph is held at a time.
            (objective_form(pictures, image.prompt).sum() / (len(seeds) * len(images))).backward()
            arrays = pictures.detach().permute(0, 2, 3, 1).cpu().numpy()
            generated += [
                generation.GeneratedImage(seed, generation.to_uint8(array), generation.image_problem(array))
                for seed, array in zip(batch, arrays, strict=True)
            ]
        tables.append(score(image, seeds, generated))
    return pd.concat(tables, ignore_index=True)


def _journal_of_inputs(journal: Path, inputs: Sequence[str]) -> Path:
    """``journal``, its name extended by a digest of the inputs' content (the
    edge maps, and the model record with its weights' sha256): the workflow
    names the journal by the settings, known before any job runs; a changed
    picture or model must not resume from trials made with the old ones."""
    digest = files.json_digest([files.file_sha256(path) for path in inputs])
    return journal.with_name(f"{journal.stem}-{digest[:8]}{journal.suffix}")


def _selection_image(
    encode: Callable[[GenerationInput], Conditioning],
    image_id: str,
    edge_map: np.ndarray,
    requests: Mapping[str, Mapping[str, Any]],
    prompt_ids: Sequence[str],
) -> SelectionImage:
    baseline = requests[BASELINE]
    texts = {
        condition: GenerationInput(request["prompt"], request["negative_prompt"])
        for condition, request in requests.items()
    }
    return SelectionImage(
        image_id=image_id,
        prompt=baseline["prompt"],
        negative_prompt=baseline["negative_prompt"],
        edge_map=edge_map,
        baseline=encode(texts[BASELINE]),
        words={prompt_id: encode(texts[prompt_id]) for prompt_id in prompt_ids},
    )


def _word_trials(space: Any, measure: Callable[[Sequence[float]], Outcome], direction: str, logger: logging.Logger) -> pd.DataFrame:
    """Each word prompt's point as a trial, in the layout of
    :func:`promptsweep.search.journal.trials_table`, with its prompt id."""
    from promptsweep.search.journal import trials_frame
    from promptsweep.search.plan import WORDS

    records = []
    for index, prompt_id in enumerate(space.prompt_ids, start=1):
        point = space.word_point(prompt_id)
        start = time.perf_counter()
        outcome = measure(point)
        records.append((point, outcome, time.perf_counter() - start, outcome.feasible))
        logger.info(
            "word prompt %d/%d (%s): objective %s%s", index, len(space.prompt_ids), prompt_id,
            "none" if outcome.objective is None else f"{outcome.objective:.3g}",
            "" if outcome.feasible else " (infeasible)",
        )
    return trials_frame(WORDS, records, len(space.prompt_ids), direction).assign(prompt_id=list(space.prompt_ids))


def _best_record(search: str, table: pd.DataFrame, prompt_ids: Sequence[str], direction: str, objective: str) -> dict[str, Any]:
    """The best feasible trial's point by prompt id, or the baseline (every
    weight 0) when no trial was feasible."""
    best = best_trial(table, direction)
    record: dict[str, Any] = {"search": search, "objective_metric": objective, "trials": len(table)}
    if best is None:
        return {**record, "trial": None, "objective": None, "point": dict.fromkeys(prompt_ids, 0.0), "prompt_id": BASELINE}
    return {
        **record,
        "trial": int(best["trial"]),
        "objective": float(best["objective"]),
        "point": {prompt_id: float(best[prompt_id]) for prompt_id in prompt_ids},
        "prompt_id": best.get("prompt_id"),
    }


def _best_tokens_record(
    search: str,
    table: pd.DataFrame,
    names: Sequence[str],
    soft: Any,
    token_words: Callable[[Sequence[int]], str],
    token_ids: Callable[[str], list[int]],
    direction: str,
    objective: str,
) -> dict[str, Any]:
    """The best feasible trial of a tokens search: its soft tokens (each row
    an embedding), the words they project to, and whether the tokenizer
    reads those words back as the same tokens (the words are judged as
    text); the baseline when no trial was feasible."""
    best = best_trial(table, direction)
    record: dict[str, Any] = {"search": search, "objective_metric": objective, "trials": len(table), "point": {}}
    if best is None:
        return {**record, "trial": None, "objective": None, "prompt_id": BASELINE, "tokens": None}
    point = [float(best[name]) for name in names]
    ids, _ = soft.projected(point)
    words = token_words(ids)
    return {
        **record,
        "trial": int(best["trial"]),
        "objective": float(best["objective"]),
        "prompt_id": None,
        "tokens": {
            "embeddings": soft.continuous(point).tolist(),
            "token_ids": ids,
            "words": words,
            "words_round_trip": token_ids(words) == ids,
        },
    }


def search_evaluation(
    *,
    image_id: str,
    edge_map: str,
    weights: str,
    bests: Sequence[str],
    conditions: Mapping[str, str],
    prompt_ids: Sequence[str],
    requests: Mapping[str, dict[str, Any]],
    images: Mapping[str, Sequence[str]],
    records: Mapping[str, Sequence[str]],
    log: str,
) -> None:
    """One evaluation image on the evaluation seeds: the baseline, and each
    search's best (``bests``: each search's best record's file, in the order
    of ``conditions``) as its condition (``conditions``: search -> condition id). ``requests`` holds
    the baseline's and each word prompt's generation request on the
    evaluation seeds; an optimiser's best point mixes their embeddings
    (:func:`point_request`), the word prompts' best is the chosen prompt's
    own request. A tokens search's best is its soft tokens, and its words
    (condition :func:`promptsweep.search.plan.word_condition`) are a plain
    additional prompt. Each record names the search and its point."""
    from promptsweep import emphasis
    from promptsweep.search.plan import WORDS, word_condition

    chosen = {BASELINE: requests[BASELINE]}
    baseline = requests[BASELINE]
    for search, path in zip(conditions, bests, strict=True):
        best = files.read_json(Path(path))
        origin = {key: best[key] for key in ("search", "trial", "objective", "point", "prompt_id")}
        if "tokens" in best:
            tokens = best["tokens"]
            request, words_request = dict(baseline), dict(baseline)
            if tokens is not None:
                texts = GenerationInput(baseline["prompt"], baseline["negative_prompt"])
                request["embedding"] = emphasis.soft_tokens_request(texts, tokens["embeddings"])
                # The words as a positive prompt of the sheet would be given.
                words_request.update(asdict(generation_input("positive", baseline["prompt"], tokens["words"])))
                origin["words"] = tokens["words"]
            chosen[word_condition(search)] = {**words_request, "condition": word_condition(search), "search": origin}
        elif search == WORDS:
            request = requests.get(best["prompt_id"], requests[BASELINE])
        else:
            words = {prompt_id: requests[prompt_id] for prompt_id in prompt_ids}
            # In the sheet's order, as the search added the directions (the record's keys are sorted).
            point = {prompt_id: best["point"][prompt_id] for prompt_id in prompt_ids}
            request = point_request(requests[BASELINE], words, point)
        condition = conditions[search]
        chosen[condition] = {**request, "condition": condition, "search": origin}
    generate_jobs.generate(
        edge_maps=[edge_map], weights=weights, requests=[chosen], images=[images], records=[records], log=log
    )


def search_table(
    *,
    bests: Sequence[str],
    trials: Sequence[str],
    evaluation_metrics: Sequence[str],
    conditions: Mapping[str, str],
    generations_per_trial: int,
    objective: str,
    space: str,
    prompt_ids: Sequence[str],
    selection_images: Sequence[str],
    evaluation_images: Sequence[str],
    selection_seeds: Sequence[int],
    evaluation_seeds: Sequence[int],
    outputs: Mapping[str, str],
    log: str,
) -> None:
    """``latent_search.csv`` and ``.md``: each optimiser's best point and the
    best word prompt (and, in the tokens space, each optimiser's words),
    judged on the evaluation split
    (:func:`promptsweep.search.evaluation.search_table`). ``bests`` and
    ``trials`` are each search's files, in the order of ``conditions``."""
    from promptsweep import tables
    from promptsweep.search import evaluation

    with job_log(log, "latent search") as logger:
        best_records = {search: files.read_json(Path(path)) for search, path in zip(conditions, bests, strict=True)}
        spent = {
            search: len(files.read_table(Path(path))) * generations_per_trial
            for search, path in zip(conditions, trials, strict=True)
        }
        table = evaluation.search_table(
            files.read_tables(evaluation_metrics), best_records, conditions, spent, objective, space, prompt_ids,
            selection_images, evaluation_images, selection_seeds, evaluation_seeds,
        )
        files.write_table(Path(outputs["csv"]), table)
        direction = registry.METRICS[objective].direction
        files.write_text(
            Path(outputs["md"]),
            f"Each optimiser's best point and the best word prompt, chosen on images "
            f"{', '.join(selection_images)} with seeds {list(selection_seeds)}, judged on the held-out images "
            f"{', '.join(evaluation_images)} with seeds {list(evaluation_seeds)}. Objective {objective} "
            f"({direction}): gain is the mean over images of the paired change against the same-seed baseline, "
            "vs_best_word the paired difference from the best word prompt's change, with 95% t intervals "
            "over images; q_value is Benjamini-Hochberg adjusted over every row compared with the best "
            "word prompt.\n\n"
            + tables.to_markdown(table),
        )
        for row in table.to_dict("records"):
            logger.info("%s: %s", row["optimiser"], row["verdict"])


def search_convergence_plot(
    *, trials: Mapping[str, str], generations_per_trial: int, objective: str, model_name: str,
    caveat: str | None, output: str, log: str,
) -> None:
    """``search_convergence.png``: each optimiser's best-so-far objective
    against the generations it spent, with the best word prompt's level."""
    from promptsweep import plots
    from promptsweep.search.plan import WORDS

    with job_log(log, "search convergence plot"):
        tables = {search: files.read_table(Path(path)) for search, path in trials.items()}
        plots.search_convergence(
            tables, generations_per_trial, registry.METRICS[objective], model_name, caveat, output, word_search=WORDS
        )


def search_contact_sheet(
    *, edge_maps: Mapping[str, str], images: Mapping[str, Mapping[str, str]], seed: int, model_name: str,
    caveat: str | None, output: str, log: str,
) -> None:
    """``search_contact_sheet.png``: each evaluation image's edge map and its
    conditions (``images``: image -> condition -> picture) with ``seed``."""
    from promptsweep import plots

    with job_log(log, "search contact sheet"):
        rows = [
            (image_id, files.read_png(Path(edge_maps[image_id])),
             [(condition, files.read_png(Path(path))) for condition, path in by_condition.items()])
            for image_id, by_condition in images.items()
        ]
        plots.search_contact_sheet(rows, seed, model_name, caveat, output)
