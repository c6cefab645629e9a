"""The workflow's jobs: each reads its input files, calls the package's pure
functions, and writes its outputs atomically. Rules in ``workflow/rules`` only
wire paths and parameters to these functions."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promptsweep import edges, files, learned, metrics, tables
from promptsweep.study import ConditionPrompts

# Snakemake imports this module whenever it parses the workflow, which every
# dry run and every cluster job does (twice per job). So the heavy imports are
# made inside the steps that need them: torch and diffusers (about 5 s) in the
# model steps, matplotlib and scipy.stats (about 0.6 s) in the summary steps.


class GenerationError(RuntimeError):
    """A generation that must not be scored; the message says what to change."""


@contextmanager
def job_log(path: str | Path, name: str) -> Iterator[logging.Logger]:
    """A logger writing to the job's log file and to stderr (progress).

    Jobs run as threads of one process, so each gets its own logger and handler.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"promptsweep.job.{path}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    file_handler = logging.FileHandler(path, mode="w")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(f"[{name}] %(message)s"))
    logger.handlers = [file_handler, console]
    try:
        yield logger
    except Exception as error:
        logger.error("failed: %s", error)
        raise
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers = []


def make_edge_map(
    image_path: str, edge_path: str, resolution: int, low: int, high: int, log: str
) -> None:
    with job_log(log, f"edges {Path(image_path).name}") as logger:
        image = edges.read_image(Path(image_path))
        edge = edges.edge_map(image, resolution, low, high)
        files.write_png(Path(edge_path), edge)
        logger.info(
            "%s: %dx%d -> edge map %dx%d, %.1f%% edge pixels",
            image_path, image.shape[1], image.shape[0], edge.shape[1], edge.shape[0],
            100.0 * (edge > 0).mean(),
        )


def write_tiny_model(directory: str, log: str) -> None:
    from promptsweep.models import on_model_thread
    from promptsweep.tiny import write_tiny_model as write

    with job_log(log, "tiny model") as logger:
        on_model_thread(write, Path(directory) / "base", Path(directory) / "controlnet")
        logger.info("wrote the tiny model to %s", directory)


def resolve_model(model: dict[str, Any], tiny_directory: str | None, output: str, log: str) -> None:
    """Locate the weights (fetching if allowed) and record their identity."""
    from promptsweep import models

    with job_log(log, "model") as logger:
        if model["source"] == "tiny":
            assert tiny_directory is not None
            base_source = models.ModelSource(str(Path(tiny_directory) / "base"))
            controlnet_source = models.ModelSource(str(Path(tiny_directory) / "controlnet"))
            patterns = {"base": [], "controlnet": []}
        else:
            base_source = models.ModelSource(model["base"]["id"], model["base"].get("revision"))
            controlnet_source = models.ModelSource(
                model["controlnet"]["id"], model["controlnet"].get("revision")
            )
            # The safety checker's files are fetched only for runs that use it.
            safety_checker = models.SAFETY_CHECKER_PATTERNS if model["safety_checker"] else []
            patterns = {"base": models.BASE_PATTERNS + safety_checker, "controlnet": models.CONTROLNET_PATTERNS}
        base = models.resolve_weights(base_source, patterns["base"], "base")
        controlnet = models.resolve_weights(controlnet_source, patterns["controlnet"], "controlnet")
        for role, weights in (("base", base), ("controlnet", controlnet)):
            logger.info("%s: %s -> %s (commit %s)", role, weights.source.id, weights.directory, weights.commit)
        files.write_json(
            Path(output),
            {"name": model["name"], "source": model["source"],
             "base": base.as_record(), "controlnet": controlnet.as_record()},
        )


def _pipeline_options(runtime: dict[str, Any]) -> Any:
    from promptsweep import models

    device = models.resolve_device(runtime["device"])
    return models.PipelineOptions(
        device=device,
        dtype=models.resolve_dtype(runtime["dtype"], device),
        safety_checker=runtime["safety_checker"],
        attention_slicing=runtime["attention_slicing"],
        cpu_offload=runtime["cpu_offload"],
    )


OOM_REMEDIES = (
    "reduce runtime.seeds_per_batch, or set runtime.attention_slicing: true, "
    "or runtime.cpu_offload: true"
)


def generate_condition(
    edge_path: str,
    weights_path: str,
    image_paths: Sequence[str],
    record_paths: Sequence[str],
    request: dict[str, Any],
    log: str,
) -> None:
    """Generate every seed of one (image, condition) and write image + record per seed.

    ``request`` holds everything the images depend on: the texts, seeds, the
    generation settings and the runtime options; the workflow passes it as a
    rule parameter, so a change to any of it reruns exactly this job.
    """
    generate_pairs([edge_path], weights_path, [image_paths], [record_paths], [request], log)


def generate_pairs(
    edge_paths: Sequence[str],
    weights_path: str,
    image_paths: Sequence[Sequence[str]],
    record_paths: Sequence[Sequence[str]],
    requests: Sequence[dict[str, Any]],
    log: str,
) -> None:
    """Generate several (image, condition) pairs in one job, loading the
    pipeline once: on a cluster, where every job is a new process, this is
    what keeps a GPU job generating rather than loading. Each pair still has
    its own files and its own request, as in :func:`generate_condition`."""
    from promptsweep import models, provenance

    labels = [f"{request['image_id']}/{request['condition']}" for request in requests]
    name = labels[0] if len(labels) == 1 else f"{labels[0]} and {len(labels) - 1} more"
    with job_log(log, f"generate {name}") as logger:
        weights = files.read_json(Path(weights_path))
        options = _pipeline_options(requests[0]["runtime"])
        loaded = models.cached_pipeline(
            models.ResolvedWeights.from_record(weights["base"]),
            models.ResolvedWeights.from_record(weights["controlnet"]),
            options,
        )
        if loaded.load_seconds is None:
            logger.info("pipeline: reused (already loaded in this process)")
        else:
            logger.info("pipeline: loaded in %.2f s on %s, %s", loaded.load_seconds, options.device, options.dtype)
        # Provenance shared by every image of the job, looked up once.
        job_provenance = {
            "model": weights,
            "device": provenance.device_description(options.device),
            "dtype": str(options.dtype).removeprefix("torch."),
            "packages": provenance.package_versions(),
        }
        for label, edge_path, pair_images, pair_records, request in zip(
            labels, edge_paths, image_paths, record_paths, requests
        ):
            _generate_pair(
                logger, label, loaded.pipeline, job_provenance, edge_path, pair_images, pair_records, request
            )


def _generate_pair(
    logger: logging.Logger,
    label: str,
    pipeline: Any,
    job_provenance: dict[str, Any],
    edge_path: str,
    image_paths: Sequence[str],
    record_paths: Sequence[str],
    request: dict[str, Any],
) -> None:
    import torch

    from promptsweep import generation, models

    control = edges.control_image(files.read_png(Path(edge_path)))
    prompts = ConditionPrompts(request["prompt"], request["negative_prompt"])
    for name, text in (("prompt", prompts.prompt), ("negative prompt", prompts.negative_prompt)):
        ignored = generation.tokens_beyond_limit(pipeline.tokenizer, text)
        if ignored:
            logger.warning(
                "%s is %d tokens too long for CLIP (%d at most): its last %d tokens "
                "are ignored; shorten it: %r",
                name, ignored, pipeline.tokenizer.model_max_length, ignored, text,
            )
    settings = generation.GenerationSettings(**request["generation"])
    seeds = list(request["seeds"])
    started = time.perf_counter()
    try:
        images = models.on_model_thread(
            generation.generate, pipeline, control, prompts, seeds, settings,
            request["runtime"]["seeds_per_batch"],
        )
    except torch.cuda.OutOfMemoryError as error:
        raise GenerationError(
            f"{label}: out of GPU memory ({str(error).splitlines()[0]}); {OOM_REMEDIES}"
        ) from None
    seconds = time.perf_counter() - started
    logger.info("%s: %d seeds in %.2f s (%.2f s per image)", label, len(seeds), seconds, seconds / len(seeds))

    problems = [image for image in images if image.problem]
    if problems and request["runtime"]["on_invalid_image"] == "fail":
        details = "; ".join(f"seed {image.seed}: {image.problem}" for image in problems)
        raise GenerationError(
            f"{label}: {details}. Set runtime.on_invalid_image: exclude to record such "
            "images and leave them out of every metric instead"
        )
    common = {
        "image_id": request["image_id"],
        "condition": request["condition"],
        "prompt": prompts.prompt,
        "negative_prompt": prompts.negative_prompt,
        "edge_map": edge_path,
        "generation": request["generation"],
        "resolution": [control.width, control.height],
        "runtime": request["runtime"],
        **job_provenance,
        "seeds_in_job": seeds,
        "wall_seconds_per_image": seconds / len(seeds),
    }
    for image, image_path, record_path in zip(images, image_paths, record_paths):
        if image.problem:
            logger.warning("seed %d excluded: %s", image.seed, image.problem)
        files.write_png(Path(image_path), image.pixels)
        files.write_json(
            Path(record_path),
            {**common, "seed": image.seed, "image": image_path, "sha256": files.file_sha256(image_path),
             "valid": image.problem is None, "problem": image.problem},
        )


def _exclusion(baseline_record: dict[str, Any], variant_record: dict[str, Any]) -> str:
    reasons = [
        f"{name}: {record['problem']}"
        for name, record in (("baseline", baseline_record), ("variant", variant_record))
        if not record["valid"]
    ]
    return "; ".join(reasons)


PAIR_METRICS = ("ssim", "ms_ssim", "psnr", "lpips")


def lpips_or_reason(settings: dict[str, Any]) -> tuple[learned.Lpips | None, str]:
    """The LPIPS network ``metrics.lpips`` names, or None and why not."""
    paths = learned.lpips_weight_paths(settings)
    unset = [f"metrics.lpips.{key}" for key in learned.LPIPS_FILES if key not in paths]
    if unset:
        return None, (
            f"LPIPS not computed: {' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set "
            "(config/config.yaml says which files they name)"
        )
    from promptsweep.models import on_model_thread  # imports torch: only when LPIPS is wanted

    try:
        lpips = on_model_thread(
            learned.load_lpips, settings["network"], str(paths["backbone"]), str(paths["linear"])
        )
    except (OSError, learned.WeightsError) as error:
        return None, f"LPIPS not computed: {error}; correct metrics.lpips in your config"
    return lpips, ""


def _job_lpips(settings: dict[str, Any], logger: logging.Logger) -> tuple[learned.Lpips | None, str]:
    """:func:`lpips_or_reason`, warning in the job's log when LPIPS was asked
    for but cannot be computed (left unset, it is the quiet default)."""
    lpips, note = lpips_or_reason(settings)
    if note and learned.lpips_weight_paths(settings):
        logger.warning("%s", note)
    return lpips, note


def pair_metrics(
    baseline_image: np.ndarray, variant_image: np.ndarray, lpips: learned.Lpips | None
) -> dict[str, float]:
    """Every metric of :data:`PAIR_METRICS` for one pair; LPIPS is NaN without a network."""
    ssim, ms_ssim = metrics.ssim_and_ms_ssim(baseline_image, variant_image)
    values = {
        "ssim": ssim,
        "ms_ssim": ms_ssim,
        "psnr": metrics.psnr(baseline_image, variant_image),
        "lpips": float("nan"),
    }
    if lpips is not None:
        from promptsweep.models import on_model_thread

        values["lpips"] = on_model_thread(learned.lpips_distances, lpips, [baseline_image], [variant_image])[0]
    return values


NO_PAIR_METRICS = dict.fromkeys(PAIR_METRICS, float("nan"))


def compare_pairs(
    image_id: str,
    prompt_id: str,
    seeds: Sequence[int],
    baseline_paths: Sequence[str],
    variant_paths: Sequence[str],
    baseline_record_paths: Sequence[str],
    variant_record_paths: Sequence[str],
    lpips_settings: dict[str, Any],
    output: str,
    log: str,
) -> None:
    """Per seed: SSIM, MS-SSIM, PSNR and LPIPS of the variant against the same
    seed's baseline (``lpips_note`` says why LPIPS is NaN, when it is)."""
    with job_log(log, f"ssim {image_id}/{prompt_id}") as logger:
        lpips, lpips_note = _job_lpips(lpips_settings, logger)
        rows = []
        for seed, baseline_path, variant_path, baseline_record_path, variant_record_path in zip(
            seeds, baseline_paths, variant_paths, baseline_record_paths, variant_record_paths
        ):
            baseline_record = files.read_json(Path(baseline_record_path))
            variant_record = files.read_json(Path(variant_record_path))
            excluded = _exclusion(baseline_record, variant_record)
            row: dict[str, Any] = {"image_id": image_id, "prompt_id": prompt_id, "seed": seed}
            if excluded:
                row.update(NO_PAIR_METRICS)
            else:
                baseline_image = files.read_generated(baseline_path, baseline_record)
                variant_image = files.read_generated(variant_path, variant_record)
                row.update(pair_metrics(baseline_image, variant_image, lpips))
            row.update(
                excluded=excluded, lpips_note=lpips_note, baseline_path=baseline_path, variant_path=variant_path
            )
            rows.append(row)
            logger.info("seed %s: ssim %.4f lpips %.4f %s", seed, row["ssim"], row["lpips"], excluded)
        files.write_table(Path(output), pd.DataFrame(rows))


def image_fidelity(
    image_id: str,
    edge_path: str,
    conditions: Sequence[str],
    seeds: Sequence[int],
    image_paths: Sequence[str],
    record_paths: Sequence[str],
    low: int,
    high: int,
    clip_model: str | None,
    output: str,
    log: str,
) -> None:
    """How faithful every generated image of one input image is: Canny F1
    against its edge map, and CLIP score against its prompt where a CLIP model
    is on this machine (``clip_score_note`` says why not otherwise).

    ``image_paths`` and ``record_paths`` run over conditions, then seeds.
    Each image is scored against the prompt its record says it was made with.
    """
    from promptsweep import learned
    from promptsweep.models import on_model_thread

    with job_log(log, f"fidelity {image_id}") as logger:
        reference = files.read_png(Path(edge_path))
        clip = None
        clip_note = "CLIP score not computed: metrics.clip_model is not set"
        if clip_model:
            try:
                clip = on_model_thread(learned.load_clip, clip_model)
                clip_note = ""
            except OSError as error:
                reason = str(error).splitlines()[0]
                clip_note = f"CLIP score not computed: {clip_model!r} is not on this machine ({reason})"
        keys = [(condition, seed) for condition in conditions for seed in seeds]
        rows = []
        scored: list[tuple[dict[str, Any], np.ndarray, str]] = []  # valid images and prompts, for CLIP
        for (condition, seed), image_path, record_path in zip(keys, image_paths, record_paths):
            record = files.read_json(Path(record_path))
            image = files.read_generated(image_path, record)
            rows.append({
                "image_id": image_id, "condition": condition, "seed": seed,
                "edge_f1": metrics.canny_f1(image, reference, low, high) if record["valid"] else float("nan"),
                "clip_score": float("nan"),
                "clip_score_note": clip_note,
            })
            if record["valid"]:
                scored.append((rows[-1], image, record["prompt"]))
        if clip is not None and scored:
            scored_rows, images, texts = zip(*scored)
            scores = on_model_thread(learned.clip_scores, clip, list(images), list(texts))
            for row, score in zip(scored_rows, scores):
                row["clip_score"] = score
        table = pd.DataFrame(rows)
        logger.info("mean edge F1 %.4f over %d images; %s", table["edge_f1"].mean(), len(table), clip_note or "CLIP score computed")
        files.write_table(Path(output), table)


def seed_noise_floor(
    image_id: str,
    seeds: Sequence[int],
    baseline_paths: Sequence[str],
    record_paths: Sequence[str],
    lpips_settings: dict[str, Any],
    output: str,
    log: str,
) -> None:
    """Every pair metric between baselines of one image under every two seeds:
    the change the seed alone causes, against which prompt effects are read."""
    with job_log(log, f"noise floor {image_id}") as logger:
        lpips, _ = _job_lpips(lpips_settings, logger)
        records = [files.read_json(Path(path)) for path in record_paths]
        valid = {
            seed: files.read_generated(path, record)
            for seed, path, record in zip(seeds, baseline_paths, records)
            if record["valid"]
        }
        rows = []
        for index, seed_a in enumerate(seeds):
            for seed_b in seeds[index + 1 :]:
                if seed_a in valid and seed_b in valid:
                    values = pair_metrics(valid[seed_a], valid[seed_b], lpips)
                else:
                    values = NO_PAIR_METRICS
                rows.append({"image_id": image_id, "seed_a": seed_a, "seed_b": seed_b, **values})
        table = pd.DataFrame(rows, columns=["image_id", "seed_a", "seed_b", *PAIR_METRICS])
        logger.info("%d seed pairs", len(table))
        files.write_table(Path(output), table)


def _concat_tables(paths: Sequence[str]) -> pd.DataFrame:
    return pd.concat([files.read_table(path) for path in paths], ignore_index=True)


def collect_tables(
    comparison_paths: Sequence[str],
    fidelity_paths: Sequence[str],
    noise_floor_paths: Sequence[str],
    prompts: Sequence[Any],
    pairs_output: str,
    fidelity_output: str,
    noise_floor_output: str,
    log: str,
) -> None:
    """Gather the per-job files into the study's long tables."""
    with job_log(log, "tables") as logger:
        comparisons = _concat_tables(comparison_paths)
        fidelity = _concat_tables(fidelity_paths)
        noise_floor = _concat_tables(noise_floor_paths)
        pairs = tables.pairs_table(comparisons, fidelity, prompts)
        files.write_table(Path(pairs_output), pairs)
        files.write_table(Path(fidelity_output), fidelity)
        files.write_table(Path(noise_floor_output), noise_floor)
        logger.info("%d pairs, %d excluded", len(pairs), int((pairs["excluded"] != "").sum()))


def summarise(
    pairs_path: str,
    noise_floor_path: str,
    fidelity_path: str,
    prompts: Sequence[Any],
    model_name: str,
    tiny: bool,
    lpips_network: str,
    outputs: dict[str, str],
    log: str,
) -> None:
    """Per-prompt statistics and the emphasis trend, as CSV, Markdown and LaTeX."""
    from promptsweep import plots, stats

    with job_log(log, "summary") as logger:
        pairs = files.read_table(pairs_path)
        noise_floor = files.read_table(noise_floor_path)
        summary = study_summary(pairs, noise_floor, prompts)
        trend = stats.emphasis_trend(pairs, metric="ssim")
        note = f"Model: {model_name}." + (f" {plots.TINY_NOTE.capitalize()}." if tiny else "")
        learned_notes = "\n".join(
            f"- {line}." for line in learned_metric_notes(pairs, files.read_table(fidelity_path), lpips_network)
        )
        files.write_table(Path(outputs["summary_csv"]), summary)
        files.write_text(
            Path(outputs["summary_md"]), f"{note}\n\n{learned_notes}\n\n" + tables.to_markdown(summary)
        )
        files.write_text(
            Path(outputs["summary_tex"]),
            tables.to_latex(summary.drop(columns=["text"]), f"Effect of each additional prompt on SSIM. {note}", "tab:prompt-summary"),
        )
        files.write_table(Path(outputs["trend_csv"]), trend)
        files.write_text(Path(outputs["trend_md"]), f"{note}\n\n" + tables.to_markdown(trend))
        files.write_text(
            Path(outputs["trend_tex"]),
            tables.to_latex(trend, f"Spearman correlation of effect (1 - SSIM) with emphasis rank. {note}", "tab:emphasis-trend"),
        )
        logger.info("%d prompts summarised", len(summary))


def learned_metric_notes(pairs: pd.DataFrame, fidelity: pd.DataFrame, lpips_network: str) -> list[str]:
    """What the learned metrics were computed with, or why they were not."""
    lines = sorted(set(tables.notes(fidelity["clip_score_note"])) - {""})
    lines += sorted(set(tables.notes(pairs["lpips_note"])) - {""})
    if pairs["lpips"].notna().any():
        lines.append(f"LPIPS: {lpips_network} network with the v0.1 linear layers (Zhang et al. 2018)")
    return lines


SUMMARY_COLUMNS = [
    "prompt_id", "kind", "emphasis", "text", "n", "n_images", "n_excluded",
    "ssim_mean", "ssim_std", "ssim_ci_low", "ssim_ci_high",
    "noise_floor_mean", "effect", "noise_effect", "relative_effect",
    "relative_effect_ci_low", "relative_effect_ci_high", "p_vs_noise_floor",
    "ms_ssim_mean", "psnr_mean", "lpips_mean", "lpips_noise_floor_mean",
    "edge_f1_baseline_mean", "edge_f1_variant_mean",
    "clip_score_baseline_mean", "clip_score_variant_mean",
]


def study_summary(pairs: pd.DataFrame, noise_floor: pd.DataFrame, prompts: Sequence[Any]) -> pd.DataFrame:
    """One row per prompt: SSIM statistics against the noise floor, the other
    metrics' means, and how many pairs were excluded as invalid.

    ``lpips_noise_floor_mean`` is the mean per-image LPIPS between seeds over
    the images the prompt's ``lpips_mean`` comes from."""
    from promptsweep import stats

    statistics = stats.prompt_statistics(pairs, noise_floor, metric="ssim")
    finite_psnr = pairs.assign(psnr=pairs["psnr"].replace([np.inf], np.nan))
    means = finite_psnr.groupby("prompt_id")[
        ["ms_ssim", "psnr", "lpips", *tables.PER_IMAGE_PAIR_COLUMNS]
    ].mean().add_suffix("_mean")
    lpips_floor_by_image = stats.per_image_mean(noise_floor, "lpips")
    lpips_images = pairs.dropna(subset=["lpips"])[["prompt_id", "image_id"]].drop_duplicates()
    lpips_images["floor"] = lpips_images["image_id"].map(lpips_floor_by_image).astype(float)
    means["lpips_noise_floor_mean"] = lpips_images.groupby("prompt_id")["floor"].mean()
    excluded = (tables.notes(pairs["excluded"]) != "").groupby(pairs["prompt_id"]).sum()
    sheet = tables.prompt_sheet(prompts)
    summary = sheet.merge(statistics.drop(columns=["kind", "emphasis"]), on="prompt_id", how="left")
    summary = summary.merge(means, left_on="prompt_id", right_index=True, how="left")
    summary["n_excluded"] = summary["prompt_id"].map(excluded).fillna(0).astype(int)
    summary["n"] = summary["n"].fillna(0).astype(int)
    return summary[SUMMARY_COLUMNS]


def draw_plots(
    pairs_path: str,
    summary_path: str,
    noise_floor_path: str,
    prompt_order: Sequence[str],
    model_name: str,
    tiny: bool,
    outputs: dict[str, str],
    log: str,
) -> None:
    from promptsweep import plots, stats

    with job_log(log, "plots") as logger:
        pairs = files.read_table(pairs_path)
        summary = files.read_table(summary_path)
        noise_floor = files.read_table(noise_floor_path)
        per_image = stats.per_image_mean(noise_floor, "ssim")
        floor = (float(per_image.mean()), *stats.bootstrap_mean_ci(per_image.to_numpy()))
        plots.ssim_by_prompt(summary, floor, model_name, tiny, outputs["ssim_by_prompt"])
        plots.effect_vs_emphasis(summary, model_name, tiny, outputs["effect_vs_emphasis"])
        plots.image_prompt_heatmap(pairs, prompt_order, model_name, tiny, outputs["heatmap"])
        logger.info("plots written")


def draw_contact_sheet(
    image_id: str,
    edge_path: str,
    labels: Sequence[str],
    image_paths: Sequence[str],
    title: str,
    tiny: bool,
    output: str,
    log: str,
) -> None:
    from promptsweep import plots

    with job_log(log, f"sheet {image_id}"):
        panels = [(label, files.read_png(Path(path))) for label, path in zip(labels, image_paths)]
        plots.contact_sheet(files.read_png(Path(edge_path)), panels, title, tiny, output)
