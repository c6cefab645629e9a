"""Every metric of the study, declared once.

A metric either compares a pair (a variant against its same-seed baseline, and
two baselines of different seeds for the noise floor) or scores one generated
image (every condition and seed, baselines included). Its declaration holds
its column name, display name, unit and direction, the function that computes
it, and, for a metric that needs weights, how they are loaded from the
``metrics:`` config and why it may be "not computed".

The per-job tables, ``pairs.csv``, the summary's means and the plots' labels
are all derived from :data:`METRICS`. Adding a metric means its function in
:mod:`promptsweep.metrics` (or a learned one), one :class:`Metric` below, and
its line in ``docs/statistics.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from promptsweep import metrics
from promptsweep.threads import importable, map_measure, on_compute_thread

Scope = Literal["pair", "image"]
Role = Literal["change", "fidelity", "quality"]
"""What a metric tells: how much an image changed (pair metrics), whether it
keeps to its edges and prompt, or how good it is on its own."""
Direction = Literal["higher is better", "lower is better", "higher is closer", "lower is closer"]
_OPPOSITE = {"better": "worse", "closer": "further"}


class NotComputed(Exception):
    """Why a learned metric cannot be computed on this machine.

    ``configured`` is true when the user asked for the metric (its weights are
    named in the config) but they cannot be used: job logs warn only then."""

    def __init__(self, reason: str, configured: bool) -> None:
        super().__init__(reason)
        self.configured = configured


@dataclass
class ImagePair:
    """A variant and its same-seed baseline (or two baselines of two seeds)."""

    baseline: np.ndarray
    variant: np.ndarray

    @cached_property
    def ssim_and_ms_ssim(self) -> tuple[float, float]:
        # MS-SSIM's first scale is the SSIM: computed once for both metrics.
        return metrics.ssim_and_ms_ssim(self.baseline, self.variant)

    def ssim_map(self) -> np.ndarray:
        """The pair's local SSIM, one value per pixel (:func:`metrics.ssim_map`);
        a module-level name, so metric processes can compute it."""
        return metrics.ssim_map(self.baseline, self.variant)


@dataclass(frozen=True)
class ScoredImage:
    """One generated image with what per-image metrics compare it to."""

    pixels: np.ndarray
    prompt: str
    """The prompt it was generated with (its record's)."""
    subject: str
    """The input image's one-word prompt: what every condition of it shows,
    so that a score against it compares conditions under one text."""
    edge_map: np.ndarray
    canny_low: int
    canny_high: int


Scorer = Callable[[Any, Sequence[Any]], list[float]]
"""(loaded model or None, samples) -> one value per sample."""


@dataclass(frozen=True)
class Metric:
    name: str
    """Column name in every table."""
    scope: Scope
    display_name: str
    unit: str
    direction: Direction
    role: Role
    score: Scorer
    """Values of a batch of :class:`ImagePair` (pair) or :class:`ScoredImage` (image)."""
    config_key: str | None = None
    """Its key under ``metrics:`` in the config; the functions below get that key's value."""
    load: Callable[[Any], Any] | None = None
    """Model from its config value, raising :class:`NotComputed`; None: no weights."""
    weight_files: Callable[[Any], list[Path]] = field(default=lambda setting: [])
    """Files its config value names: the jobs rerun when one appears."""
    computed_with: Callable[[Any], str] | None = None
    """A line for the summary saying what it was computed with."""
    torch_form: str | None = None
    """The name of its differentiable form in :mod:`promptsweep.differentiable`;
    None where it has none (it cannot be the gradient optimiser's objective).
    A learned metric's form takes its loaded model first."""

    def differentiable(self, model: Any = None) -> Callable[[Any, str], Any]:
        """Its torch form: images ``(N, 3, H, W)`` in [0, 1] and their prompt
        to one value each; a learned metric's with its loaded ``model``.
        Imported on demand, as the learned metrics' models are."""
        if self.torch_form is None:
            raise ValueError(f"{self.name} has no differentiable torch form")
        import importlib

        form = getattr(importlib.import_module("promptsweep.differentiable"), self.torch_form)
        if self.load is None:
            return lambda images, prompt: form(images)
        if model is None:
            raise ValueError(f"{self.name}'s torch form needs its loaded model")
        return lambda images, prompt: form(model, images, prompt)

    @property
    def note_column(self) -> str:
        """Column saying why a learned metric is NaN (only learned metrics have one)."""
        return f"{self.name}_note"

    @property
    def label(self) -> str:
        return f"{self.display_name} ({self.unit})" if self.unit else self.display_name

    def judge(self, change: int) -> str:
        """What a rise (``change`` > 0) or fall (< 0) of this metric means,
        read from its direction: "better" or "worse" ("closer" or "further"
        for pair metrics). A direction, not an arrow, because a rising BRISQUE
        is a worse image."""
        if change == 0:
            raise ValueError("judge needs a rise (> 0) or a fall (< 0), not 0")
        rising, good = self.direction.split(" is ")
        return good if (change > 0) == (rising == "higher") else _OPPOSITE[good]


@dataclass(frozen=True)
class PerSample:
    """A scorer applying a per-sample function of no model to every sample,
    spread over the metric processes, if any. :meth:`LoadedMetrics.score`
    computes all of a job's per-sample metrics in one pass, so that a worker
    gets each sample once and a pair's SSIM statistics serve both SSIM and
    MS-SSIM (:attr:`ImagePair.ssim_and_ms_ssim`)."""

    function: Callable[[Any], float]
    """Module-level, to run in the metric processes; else it runs in the job."""

    def __call__(self, _model: Any, samples: Sequence[Any]) -> list[float]:
        return map_measure(self.function, samples)


def each(function: Callable[[Any], float]) -> Scorer:
    """A scorer applying ``function`` of no model to every sample."""
    return PerSample(function)


@dataclass(frozen=True)
class _AllOf:
    """Several per-sample functions of one sample, in one call."""

    functions: tuple[Callable[[Any], float], ...]

    def __call__(self, sample: Any) -> tuple[float, ...]:
        return tuple(float(function(sample)) for function in self.functions)


# Learned metrics' loaders -------------------------------------------------


def _load_lpips(lpips: Mapping[str, Any]) -> Any:
    from promptsweep import learned

    paths = learned.lpips_weight_paths(lpips)
    unset = [f"metrics.lpips.{key}" for key in learned.LPIPS_FILES if key not in paths]
    if unset:
        raise NotComputed(
            f"LPIPS not computed: {' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set "
            "(config/config.yaml says which files they name)",
            configured=bool(paths),
        )

    try:
        return on_compute_thread(learned.load_lpips, lpips["network"], str(paths["backbone"]), str(paths["linear"]))
    except (OSError, learned.WeightsError) as error:
        raise NotComputed(
            f"LPIPS not computed: {error}; correct metrics.lpips in your config", configured=True
        ) from None


def _lpips_files(lpips: Mapping[str, Any]) -> list[Path]:
    from promptsweep import learned

    return list(learned.lpips_weight_paths(lpips).values())


def _lpips(model: Any, pairs: Sequence[ImagePair]) -> list[float]:
    from promptsweep import learned

    return on_compute_thread(
        learned.lpips_distances, model, [pair.baseline for pair in pairs], [pair.variant for pair in pairs]
    )


def _load_clip(source: str | None) -> Any:
    if not source:
        raise NotComputed("CLIP score not computed: metrics.clip_model is not set", configured=False)
    from promptsweep import learned

    try:
        return on_compute_thread(learned.load_clip, source)
    except OSError as error:
        reason = str(error).splitlines()[0]
        raise NotComputed(
            f"CLIP score not computed: {source!r} is not on this machine ({reason})", configured=True
        ) from None


def _clip_score(model: Any, images: Sequence[ScoredImage]) -> list[float]:
    from promptsweep import learned

    return on_compute_thread(
        learned.clip_scores, model, [image.pixels for image in images], [image.prompt for image in images]
    )


def _load_from_files(
    display_name: str, config_key: str, loader: str, keys: tuple[str, ...], setting: Mapping[str, Any]
) -> Any:
    """The model ``preference.<loader>`` builds from the paths under
    ``metrics.<config_key>``, passed in the order of ``keys``, or
    :class:`NotComputed` naming the unset keys or the unusable file."""
    unset = [f"metrics.{config_key}.{key}" for key in keys if not setting[key]]
    if unset:
        raise NotComputed(
            f"{display_name} not computed: {' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set",
            configured=len(unset) < len(keys),
        )
    from promptsweep import learned, preference

    try:
        return on_compute_thread(getattr(preference, loader), *(setting[key] for key in keys))
    except (OSError, learned.WeightsError) as error:
        raise NotComputed(
            f"{display_name} not computed: {str(error).splitlines()[0]}; correct metrics.{config_key} in your config",
            configured=True,
        ) from None


def _aesthetic(model: Any, images: Sequence[ScoredImage]) -> list[float]:
    from promptsweep import preference

    return on_compute_thread(preference.aesthetic_scores, model, [image.pixels for image in images])


def _pickscore(model: Any, images: Sequence[ScoredImage]) -> list[float]:
    from promptsweep import preference

    # Against the subject, not each image's own prompt: PickScores are
    # comparable under one text only, and the deltas compare conditions.
    return on_compute_thread(
        preference.pickscore_scores, model, [image.pixels for image in images], [image.subject for image in images]
    )


@dataclass(frozen=True)
class _QualityMeasure:
    """One function of :mod:`promptsweep.quality` on an image, imported on
    first use: it pulls in scipy.stats, which every parse of the workflow
    would otherwise pay for."""

    name: str

    def __call__(self, image: ScoredImage) -> float:
        from promptsweep import quality

        return getattr(quality, self.name)(image.pixels)


def _local_files(setting: Mapping[str, Any]) -> list[Path]:
    """The paths a learned metric's config names: its jobs rerun when they change."""
    return [Path(value).expanduser() for value in setting.values() if value]


def _edge_f1(image: ScoredImage) -> float:
    return metrics.canny_f1(image.pixels, image.edge_map, image.canny_low, image.canny_high)


def _ssim(pair: ImagePair) -> float:
    return pair.ssim_and_ms_ssim[0]


def _ms_ssim(pair: ImagePair) -> float:
    return pair.ssim_and_ms_ssim[1]


def _psnr(pair: ImagePair) -> float:
    return metrics.psnr(pair.baseline, pair.variant)


# The registry ---------------------------------------------------------------

METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric(
            "ssim", "pair", "SSIM", "", "higher is closer", "change",
            each(_ssim),
        ),
        Metric(
            "ms_ssim", "pair", "MS-SSIM", "", "higher is closer", "change",
            each(_ms_ssim),
        ),
        Metric(
            "psnr", "pair", "PSNR", "dB", "higher is closer", "change",
            each(_psnr),
        ),
        Metric(
            "lpips", "pair", "LPIPS", "", "lower is closer", "change", _lpips,
            config_key="lpips",
            load=_load_lpips,
            weight_files=_lpips_files,
            computed_with=lambda lpips: (
                f"LPIPS: {lpips['network']} network with the v0.1 linear layers (Zhang et al. 2018)"
            ),
        ),
        Metric("edge_f1", "image", "edge F1 (Canny)", "", "higher is better", "fidelity", each(_edge_f1)),
        Metric(
            "clip_score", "image", "CLIP score", "", "higher is better", "fidelity", _clip_score,
            config_key="clip_model",
            load=_load_clip,
        ),
        # Image quality, with no weights (a maintained library where it has the measure).
        Metric(
            "sharpness", "image", "sharpness (Laplacian variance)", "gray levels²", "higher is better", "quality",
            each(_QualityMeasure("sharpness")),
            torch_form="sharpness",
        ),
        Metric(
            "colorfulness", "image", "colourfulness (Hasler-Süsstrunk)", "RGB levels", "higher is better", "quality",
            each(_QualityMeasure("colorfulness")),
            torch_form="colorfulness",
        ),
        Metric(
            "rms_contrast", "image", "RMS contrast", "", "higher is better", "quality",
            each(_QualityMeasure("rms_contrast")),
            torch_form="rms_contrast",
        ),
        Metric(
            "entropy", "image", "gray-level entropy", "bits", "higher is better", "quality",
            each(_QualityMeasure("entropy")),
        ),
        Metric(
            "brisque", "image", "BRISQUE", "", "lower is better", "quality",
            each(_QualityMeasure("brisque")),
        ),
        # Image quality from local weights.
        Metric(
            "aesthetic", "image", "LAION aesthetic score", "", "higher is better", "quality", _aesthetic,
            config_key="aesthetic",
            load=lambda setting: _load_from_files(
                "aesthetic score", "aesthetic", "load_aesthetic", ("clip_model", "mlp"), setting
            ),
            weight_files=_local_files,
            computed_with=lambda setting: (
                f"aesthetic score: LAION improved aesthetic predictor {Path(setting['mlp']).name} over CLIP "
                f"{setting['clip_model']}"
            ),
            torch_form="aesthetic",
        ),
        Metric(
            "pickscore", "image", "PickScore", "", "higher is better", "quality", _pickscore,
            config_key="pickscore",
            load=lambda setting: _load_from_files(
                "PickScore", "pickscore", "load_pickscore", ("processor", "model"), setting
            ),
            weight_files=_local_files,
            computed_with=lambda setting: f"PickScore: {setting['model']} (Kirstain et al. 2023)",
            torch_form="pickscore",
        ),
    )
}
"""Every metric, pair metrics then per-image metrics, in table order."""

EFFECT_METRIC = "ssim"
"""The pair metric the effect (1 - SSIM), its statistics and plots are read on."""


def metrics_of(scope: Scope) -> list[Metric]:
    return [metric for metric in METRICS.values() if metric.scope == scope]


def quality_metrics() -> list[Metric]:
    """The per-image metrics of image quality, whose paired deltas say whether a prompt improves the image."""
    return [metric for metric in METRICS.values() if metric.role == "quality"]


def learned_metrics(scope: Scope | None = None) -> list[Metric]:
    return [m for m in METRICS.values() if m.load is not None and scope in (None, m.scope)]


@contextmanager
def registered(metric: Metric) -> Iterator[Metric]:
    """``metric`` in the registry for the duration of the block (for tests and
    plug-ins that add a metric at run time)."""
    if metric.name in METRICS:
        raise ValueError(f"a metric named {metric.name!r} is already registered")
    METRICS[metric.name] = metric
    try:
        yield metric
    finally:
        del METRICS[metric.name]


@dataclass(frozen=True)
class LoadedMetrics:
    """The metrics of one scope as a job computes them: models loaded once."""

    metrics: list[Metric]
    models: dict[str, Any]
    notes: dict[str, str]
    """Why each learned metric that could not be loaded is NaN."""
    warnings: list[str]
    """Notes of metrics the config asked for: the job logs warn about them."""

    def score(self, samples: Sequence[Any]) -> dict[str, list[float]]:
        """Every metric's values for ``samples``; NaN where not computed.
        The per-sample metrics that the metric processes can import are
        computed together, in one pass over the samples (see :class:`PerSample`)."""
        if not samples:
            return {metric.name: [] for metric in self.metrics}
        computed = [metric for metric in self.metrics if metric.name not in self.notes]
        together = {
            metric.name: metric.score for metric in computed
            if isinstance(metric.score, PerSample) and importable(metric.score.function)
        }
        values: dict[str, list[float]] = {}
        if together:
            rows = map_measure(_AllOf(tuple(scorer.function for scorer in together.values())), samples)
            values = {name: [row[index] for row in rows] for index, name in enumerate(together)}
        for metric in computed:
            if metric.name not in values:
                values[metric.name] = [float(value) for value in metric.score(self.models.get(metric.name), samples)]
        nan = [float("nan")] * len(samples)
        return {metric.name: values.get(metric.name, nan) for metric in self.metrics}

    def note_columns(self) -> dict[str, str]:
        """The note column of every learned metric, "" where it was computed."""
        return {
            metric.note_column: self.notes.get(metric.name, "")
            for metric in self.metrics
            if metric.load is not None
        }


def load_metrics(scope: Scope, settings: Mapping[str, Any]) -> LoadedMetrics:
    """The metrics of ``scope`` with their models loaded from the ``metrics:``
    config; a learned metric whose weights cannot be used is noted, not fatal."""
    models: dict[str, Any] = {}
    notes: dict[str, str] = {}
    warnings = []
    for metric in metrics_of(scope):
        if metric.load is None:
            continue
        try:
            models[metric.name] = metric.load(settings[metric.config_key])
        except NotComputed as reason:
            notes[metric.name] = str(reason)
            if reason.configured:
                warnings.append(str(reason))
    return LoadedMetrics(metrics_of(scope), models, notes, warnings)


def configured(metric: Metric, settings: Mapping[str, Any]) -> bool:
    """Whether the ``metrics:`` config names every weight a learned metric
    needs (whether the files are there is the loader's to say)."""
    if metric.config_key is None:
        return True
    value = settings[metric.config_key]
    return all(item is not None for item in value.values()) if isinstance(value, Mapping) else bool(value)


def metric_settings(settings: Mapping[str, Any], scope: Scope) -> dict[str, Any]:
    """The part of the ``metrics:`` config that the metrics of ``scope`` read:
    a change elsewhere does not rerun their jobs."""
    return {m.config_key: settings[m.config_key] for m in metrics_of(scope) if m.config_key is not None}


def weight_files(settings: Mapping[str, Any], scope: Scope) -> list[Path]:
    """Every weight file the ``metrics:`` config names for the metrics of ``scope``."""
    return [
        path
        for metric in metrics_of(scope)
        if metric.config_key is not None
        for path in metric.weight_files(settings[metric.config_key])
    ]
