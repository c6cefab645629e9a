"""The study plan: what a config asks for, as plain values.

:func:`study_plan` reads a validated config and its sheets once, checks what
no schema can (a family's name, weighted texts a family cannot encode, a
search's objective), and returns a :class:`StudyPlan`: the images, prompts,
seeds and conditions, every generation request, and the paths of every file
the workflow makes. The Snakemake rules only wire these together, so the
plan is tested here, without Snakemake, and a registered family (one module
behind :class:`promptsweep.families.Family`) goes through it like a built-in one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from promptsweep import emphasis, families, files, model_comparison, registry, toy
from promptsweep.conditions import BASELINE
from promptsweep.search import dose_grid
from promptsweep.search import plan as search_plan
from promptsweep.study import (
    ImageSpec,
    PromptSpec,
    SheetError,
    condition_input,
    generation_settings,
    read_images,
    read_prompts,
    study_caveat,
    with_generation_defaults,
)

SEARCH_SLOTS = ("baseline", "chosen", "best_word")
"""What the grid search's evaluation generates per image: the baseline, the
chosen candidate and the best word prompt."""


class PlanError(ValueError):
    """A config key or sheet row that the user must fix; the message names it."""


IMAGE_METRICS_SCOPES = ("image_metrics", "search/image_metrics", "search/evaluation_metrics")
"""Where per-image metric tables go, ``results/<scope>/<image>.tsv``: the
study's conditions, the grid search's selection, and either search's
evaluation on the held-out split."""


@dataclass(frozen=True)
class ScoredImages:
    """What one per-image-metrics job scores: its generated images and their
    records, conditions-major then seeds, and the files it depends on."""

    inputs: list[str]
    images: list[str]
    records: list[str]
    conditions: list[str]
    seeds: list[int]

    def job_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``metric_jobs.image_metrics`` it gives."""
        return {"images": self.images, "records": self.records, "conditions": self.conditions, "seeds": self.seeds}


@dataclass(frozen=True)
class StudyPlan:
    """One study's config, sheets and checks, resolved: everything the rules wire."""

    config: Mapping[str, Any]
    """The config, with ``generation:`` completed by the model's defaults."""
    images: dict[str, ImageSpec]
    prompts: dict[str, PromptSpec]
    seeds: list[int]
    emphasis: emphasis.EmphasisPlan
    optimisation: search_plan.OptimisationSearch | None
    caveat: str | None
    """What every table and plot must say about the model, or nothing."""
    results: str = "results"
    """The folder of every file the study makes (a model's own in a study of
    several models: :mod:`promptsweep.model_comparison`)."""

    @property
    def comparison_name(self) -> str | None:
        """The model's name in a study of several models, else None."""
        return self.config["model"]["name"] if model_comparison.is_comparison(self.config) else None

    def rule_name(self, rule: str) -> str:
        """``rule`` as Snakemake names it in this study."""
        return model_comparison.rule_name(self.config, rule)

    # Conditions ---------------------------------------------------------------

    @property
    def dose_conditions(self) -> list[str]:
        """Prompts at doses ("pos5@0.5"), generated like the word conditions."""
        return list(self.emphasis.dose_conditions)

    @property
    def conditions(self) -> list[str]:
        """The baseline and every prompt of the sheet."""
        return [BASELINE, *self.prompts]

    @property
    def generated_conditions(self) -> list[str]:
        """Every condition the generate job makes for each control image."""
        return [*self.conditions, *self.dose_conditions]

    @property
    def variants(self) -> list[str]:
        """The conditions compared with the baseline: prompts, then prompts at doses."""
        return [*self.prompts, *self.dose_conditions]

    @property
    def search(self) -> dose_grid.SearchPlan | None:
        """The grid search over doses and mixtures, when configured."""
        return self.emphasis.search

    @property
    def search_conditions(self) -> list[str]:
        return list(self.search.conditions) if self.search is not None else []

    def image_shards(self) -> list[list[str]]:
        """The images in consecutive groups of ``images_per_generation_job``, in
        sheet order: an image added at the end joins only the last group."""
        ids = list(self.images)
        size = self.config["images_per_generation_job"]
        return [ids[start : start + size] for start in range(0, len(ids), size)]

    # Generated files ----------------------------------------------------------

    def edge_map(self, image: str) -> str:
        return f"{self.results}/edges/{image}.png"

    def generated_folder(self, image: str) -> str:
        """One control image's generated images and records, every condition: a
        generate job's output, and what the jobs that read them take as input."""
        return f"{self.results}/generated/{image}"

    def generated(self, image: str, condition: str, suffix: str) -> list[str]:
        """One (image, condition)'s files, one per seed."""
        return [f"{self.generated_folder(image)}/{condition}/seed{seed}.{suffix}" for seed in self.seeds]

    def generated_by_condition(self, image: str, suffix: str) -> dict[str, list[str]]:
        return {condition: self.generated(image, condition, suffix) for condition in self.generated_conditions}

    def generated_files(self, image: str, conditions: list[str], suffix: str) -> list[str]:
        """The files of ``conditions`` of one image, conditions-major, then seeds."""
        return [path for condition in conditions for path in self.generated(image, condition, suffix)]

    def by_variant(self, paths: list[str]) -> dict[str, list[str]]:
        """Files of every variant and seed, variants-major, as a mapping of each
        variant to its files per seed."""
        count = len(self.seeds)
        return {variant: paths[index * count : (index + 1) * count] for index, variant in enumerate(self.variants)}

    def pair_files(self, image: str) -> dict[str, Any]:
        """The files a pair-metrics job reads (the baselines and each variant's),
        and the SSIM maps it writes into its folder, variants-major."""
        return {
            "baselines": self.generated(image, BASELINE, "png"),
            "baseline_records": self.generated(image, BASELINE, "json"),
            "variants": self.by_variant(self.generated_files(image, self.variants, "png")),
            "variant_records": self.by_variant(self.generated_files(image, self.variants, "json")),
            "ssim_maps": [
                f"{self.results}/ssim_maps/{image}/{variant}/seed{seed}.png" for variant in self.variants for seed in self.seeds
            ],
        }

    # Generation requests ------------------------------------------------------

    def model_params(self) -> dict[str, Any]:
        """The model settings that identify its weights, the safety checker's
        included when it is used (a change reruns every generation)."""
        model = self.config["model"]
        return {
            "source": model["source"],
            "family": model["family"],
            "name": model.get("name", model["source"]),
            "base": model.get("base"),
            "controlnet": model.get("controlnet"),
            "safety_checker": self.config["runtime"]["safety_checker"],
        }

    def generation_request(self, image: str, condition: str, seeds: list[int] | None = None) -> dict[str, Any]:
        """Everything one (image, condition) generation depends on, as plain values.

        ``condition`` is baseline, a prompt id, a dosed prompt ("pos5@0.5") or a
        search candidate ("pos1@0.5+pos3@1"); a dosed or mixed one adds the
        texts and doses its conditioning is made of (only the prompts it names).
        """
        request: dict[str, Any] = {"image_id": image, "condition": condition}
        spec = self.images[image]
        if condition == BASELINE or condition in self.prompts:
            prompt = None if condition == BASELINE else self.prompts[condition]
            request.update(asdict(condition_input(spec, prompt)))
        else:
            terms = dose_grid.parse_candidate(condition).terms
            baseline = condition_input(spec, None)
            words = {prompt_id: condition_input(spec, self.prompts[prompt_id]) for prompt_id, _ in terms}
            # The record's texts (and the CLIP score's prompt): the word
            # variant's for a dose, the image prompt's for a mixture.
            shown = words[terms[0][0]] if len(terms) == 1 else baseline
            request.update(asdict(shown))
            request["embedding"] = emphasis.embedding_request(baseline, words, terms)
        request.update(
            {
                "seeds": self.seeds if seeds is None else list(seeds),
                "generation": generation_settings(self.config["generation"]),
                # How the metrics are spread over processes changes no image.
                "runtime": {key: value for key, value in self.config["runtime"].items() if key != "metric_processes"},
            }
        )
        return request

    def generation_requests(self, image: str) -> dict[str, dict[str, Any]]:
        return {condition: self.generation_request(image, condition) for condition in self.generated_conditions}

    # Targets ------------------------------------------------------------------

    def final_outputs(self) -> list[str]:
        """The study's tables and plots, and every per-pair file: listing the
        intermediate results too means one deleted by hand is rebuilt."""
        return [
            f"{self.results}/tables/pairs.csv",
            f"{self.results}/tables/summary.csv",
            f"{self.results}/tables/summary.md",
            f"{self.results}/tables/summary.tex",
            f"{self.results}/tables/trend.csv",
            f"{self.results}/tables/quality_summary.csv",
            f"{self.results}/tables/verdict.md",
            f"{self.results}/tables/power.csv",
            f"{self.results}/plots/power.png",
            f"{self.results}/plots/ssim_by_prompt.png",
            f"{self.results}/plots/effect_vs_emphasis.png",
            f"{self.results}/plots/heatmap.png",
            f"{self.results}/plots/quality_forest.png",
            f"{self.results}/plots/change_vs_gain.png",
            f"{self.results}/gallery",
            *[f"{self.results}/plots/sheets/{image}.png" for image in self.images],
            *[self.generated_folder(image) for image in self.images],
            *[f"{self.results}/pair_metrics/{image}/{prompt}.tsv" for image in self.images for prompt in self.prompts],
            *[f"{self.results}/image_metrics/{image}.tsv" for image in self.images],
            *[f"{self.results}/noise_floor/{image}.tsv" for image in self.images],
            *self.emphasis_outputs(),
        ]

    def emphasis_outputs(self) -> list[str]:
        """The dose-response table and plot when doses are configured, and the
        latent search's table (and the optimisers' plots) when it is."""
        outputs = []
        if self.dose_conditions:
            outputs += [
                f"{self.results}/tables/dose_response.csv",
                f"{self.results}/tables/dose_response.md",
                f"{self.results}/plots/dose_response.png",
            ]
        if self.search is not None or self.optimisation is not None:
            outputs += [f"{self.results}/tables/latent_search.csv", f"{self.results}/tables/latent_search.md"]
        if self.optimisation is not None:
            outputs += [f"{self.results}/plots/search_convergence.png", f"{self.results}/plots/search_contact_sheet.png"]
        return outputs

    def scored_images(self, scope: str, image: str) -> ScoredImages:
        """What the per-image-metrics job of ``scope`` (one of
        :data:`IMAGE_METRICS_SCOPES`) scores for ``image``. The study's jobs
        depend on the image's generated folder, which the generate job
        writes as a whole; the searches' on their files."""
        if scope == "image_metrics":
            conditions = self.conditions
            images = self.generated_files(image, conditions, "png")
            return ScoredImages(
                [self.generated_folder(image)], images, self.generated_files(image, conditions, "json"),
                conditions, self.seeds,
            )
        paths: Callable[[str, str, str], list[str]]
        if scope == "search/image_metrics" and self.search is not None:
            conditions, seeds, paths = self.search_conditions, list(self.search.selection_seeds), self.search_generated
        elif scope == "search/evaluation_metrics" and self.search is not None:
            conditions, seeds, paths = list(SEARCH_SLOTS), list(self.search.evaluation_seeds), self.evaluation_generated
        elif scope == "search/evaluation_metrics" and self.optimisation is not None:
            conditions = [BASELINE, *self.optimisation.evaluated_conditions]
            seeds, paths = list(self.optimisation.evaluation_seeds), self.search_evaluated_condition
        else:
            raise ValueError(f"no per-image metrics {scope!r} in this study")
        images = [path for condition in conditions for path in paths(image, condition, "png")]
        records = [path for condition in conditions for path in paths(image, condition, "json")]
        return ScoredImages([*images, *records], images, records, conditions, seeds)

    # The grid search (workflow/rules/emphasis.smk) -----------------------------

    def search_generated(self, image: str, condition: str, suffix: str) -> list[str]:
        assert self.search is not None
        return [
            f"{self.results}/search/generated/{image}/{condition}/seed{seed}.{suffix}" for seed in self.search.selection_seeds
        ]

    def evaluation_generated(self, image: str, slot: str, suffix: str) -> list[str]:
        assert self.search is not None
        return [
            f"{self.results}/search/evaluation/{image}/{slot}/seed{seed}.{suffix}" for seed in self.search.evaluation_seeds
        ]

    def search_settings(self) -> dict[str, Any]:
        assert self.search is not None
        return {
            "candidates": [candidate.name for candidate in self.search.candidates],
            "word_prompts": list(self.search.word_prompts),
            "selection_seeds": list(self.search.selection_seeds),
            "objective": self.search.objective,
            "tolerances": {
                "edge_f1": self.search.tolerances.edge_f1,
                "clip_score": self.search.tolerances.clip_score,
            },
        }

    def evaluation_conditions(self, slot: str) -> list[str]:
        """Every condition the selection may put in ``slot``."""
        assert self.search is not None
        return {
            BASELINE: [BASELINE],
            "chosen": [BASELINE, *(candidate.name for candidate in self.search.candidates)],
            "best_word": [BASELINE, *self.search.word_prompts],
        }[slot]

    # The optimisation search (workflow/rules/search.smk) -----------------------

    def search_word_requests(self, image: str, seeds: list[int]) -> dict[str, dict[str, Any]]:
        """The generation requests of the baseline and of every direction's word
        prompt of ``image`` on ``seeds``: what a point of the search is made of."""
        assert self.optimisation is not None
        return {
            condition: self.generation_request(image, condition, seeds)
            for condition in [BASELINE, *self.optimisation.space.prompt_ids]
        }

    def search_trial_settings(self, optimiser: str) -> dict[str, Any]:
        """Everything one optimiser's trials depend on, as plain values."""
        search = self.optimisation
        assert search is not None
        return {
            "optimiser_settings": dict(search.optimisers.get(optimiser, {})),
            "prompt_ids": list(search.space.prompt_ids),
            "weight_range": list(search.space.bounds[0]),
            "objective": search.objective,
            "direction": search.direction,
            "tolerances": asdict(search.tolerances),
            "trials": search.trials,
            "seed": search.seed,
            "selection_seeds": list(search.selection_seeds),
            # Only for the optimisers of the tokens space (the word prompts
            # are chosen among in the directions), so that no other search's
            # journal changes its name.
            **({"tokens": search.tokens.count} if search.tokens is not None and optimiser in search.optimisers else {}),
            "requests": {
                image: self.search_word_requests(image, list(search.selection_seeds))
                for image in search.selection_images
            },
            "metric_settings": registry.metric_settings(self.config["metrics"], "image"),
            "canny_low": self.config["generation"]["canny_low"],
            "canny_high": self.config["generation"]["canny_high"],
        }

    def search_journal(self, optimiser: str) -> str:
        """The optimiser's Optuna journal, named by a digest of what its trials
        depend on (the model included): a changed search starts a new journal,
        and a rerun of the same one resumes from its finished trials."""
        model = self.model_params()
        if self.config["model"]["source"] == "toy":
            model["checksums"] = toy.recorded_checksums()
        digest = files.json_digest({"search": self.search_trial_settings(optimiser), "model": model})
        return f"{self.results}/search/journals/{optimiser}-{digest[:12]}.journal"

    def search_evaluated_file(self, image: str, condition: str, seed: int, suffix: str = "png") -> str:
        return f"{self.results}/search/evaluation/{image}/{condition}/seed{seed}.{suffix}"

    def search_evaluated_condition(self, image: str, condition: str, suffix: str) -> list[str]:
        """One condition's files of the optimisation search's evaluation, one per evaluation seed."""
        assert self.optimisation is not None
        return [self.search_evaluated_file(image, condition, seed, suffix) for seed in self.optimisation.evaluation_seeds]

    def search_evaluated_by_condition(self, image: str, suffix: str) -> dict[str, list[str]]:
        assert self.optimisation is not None
        return {
            condition: self.search_evaluated_condition(image, condition, suffix)
            for condition in [BASELINE, *self.optimisation.evaluated_conditions]
        }

    def search_evaluated(self, image: str, suffix: str) -> list[str]:
        return [path for paths in self.search_evaluated_by_condition(image, suffix).values() for path in paths]

    def search_gallery_inputs(self) -> list[str]:
        """The optimisers' evaluation metrics the gallery shows; none without them."""
        if self.optimisation is None:
            return []
        return [f"{self.results}/search/evaluation_metrics/{image}.tsv" for image in self.optimisation.evaluation_images]

    def search_gallery_params(self) -> dict[str, Any]:
        """The gallery's arguments for the optimisers' held-out pictures
        (``jobs.gallery.search_gallery_pairs``); none without them, so that
        a study without the search keeps its gallery's parameters."""
        if self.optimisation is None:
            return {}
        return {
            "search_images": {
                image: self.search_evaluated_by_condition(image, "png") for image in self.optimisation.evaluation_images
            },
            "search_seeds": list(self.optimisation.evaluation_seeds),
        }


def _check_model(config: Mapping[str, Any]) -> None:
    model = config["model"]
    try:
        families.get(model["family"])
    except families.FamilyConfigError as error:
        raise PlanError(str(error)) from None
    if model["source"] != "toy":
        return
    if model["family"] != toy.FAMILY:
        raise PlanError(
            f"model.family: the toy model is a {toy.FAMILY} model, not {model['family']}; "
            f"set model.family to {toy.FAMILY}, or model.source to tiny or pretrained"
        )
    try:
        toy.recorded_checksums()
    except toy.ToyWeightsError as error:
        raise PlanError(str(error)) from None


def _check_settings(config: Mapping[str, Any]) -> None:
    quality_names = [metric.name for metric in registry.quality_metrics()]
    if config["plots"]["quality_metric"] not in quality_names:
        raise PlanError(
            f"plots.quality_metric: {config['plots']['quality_metric']!r} is not a quality metric; "
            f"choose one of {', '.join(quality_names)}"
        )
    runtime = config["runtime"]
    if runtime["compile"] and (runtime["attention_slicing"] or runtime["cpu_offload"]):
        raise PlanError(
            "runtime.compile cannot be combined with runtime.attention_slicing or "
            "runtime.cpu_offload; set those to false, or compile to false"
        )


def check_objective_configured(objective: str, metric_config: Mapping[str, Any]) -> None:
    """A search objective whose weights the config does not name would be
    NaN in every trial: stop before any job, naming both keys."""
    metric = registry.METRICS[objective]
    if not registry.configured(metric, metric_config):
        raise PlanError(
            f"emphasis.search.objective: {objective!r} needs weights that "
            f"metrics.{metric.config_key} does not name; "
            "set them, or choose a metric that needs none (e.g. sharpness)"
        )


def check_gradient(optimisers: Mapping[str, Mapping[str, Any]], family: str, steps: int, safety_checker: bool) -> None:
    """The gradient optimiser needs a family that generates with gradients,
    no safety checker (its images are not checked), and can backpropagate
    through at most the generation's steps."""
    from promptsweep.search.optimisers import gradient

    if gradient.NAME not in optimisers:
        return
    if not families.differentiable(families.get(family)):
        able = [name for name in families.names() if families.differentiable(families.get(name))]
        raise PlanError(
            f"emphasis.search.optimisers: gradient cannot generate with gradients on the {family} family "
            f"(model.family); drop gradient, or use {', '.join(able)}"
        )
    if safety_checker:
        raise PlanError(
            "emphasis.search.optimisers: gradient generates without the safety checker that "
            "runtime.safety_checker asks for; drop gradient, or set runtime.safety_checker to false"
        )
    backprop_steps = gradient.backprop_steps(optimisers[gradient.NAME])
    if backprop_steps > steps:
        raise PlanError(
            f"emphasis.search.optimisers.gradient.{gradient.BACKPROP_STEPS}: {backprop_steps} is more than the "
            f"generation's {steps} steps (generation.steps); lower it"
        )


def check_soft_prompts(tokens: bool, family: str) -> None:
    """The tokens space needs a family whose prompt can hold learnable tokens."""
    if tokens and not families.soft_prompts(families.get(family)):
        able = [name for name in families.names() if families.soft_prompts(families.get(name))]
        raise PlanError(
            f"emphasis.search.space: the {family} family (model.family) cannot hold learnable tokens in "
            f"its prompt; use the directions space, or {', '.join(able)}"
        )


def study_plan(config: Mapping[str, Any]) -> StudyPlan:
    """The plan of a schema-validated ``config``; a :class:`PlanError` names
    the key or sheet row to fix."""
    _check_model(config)
    _check_settings(config)
    config = {**config, "generation": with_generation_defaults(config["generation"], config["model"])}
    try:
        images = {image.image_id: image for image in read_images(Path(config["images"]))}
        prompts = {prompt.prompt_id: prompt for prompt in read_prompts(Path(config["prompts"]))}
    except SheetError as error:
        raise PlanError(str(error)) from None
    try:
        families.check_weighted_texts(
            families.get(config["model"]["family"]),
            {
                **{f"{config['prompts']}: prompt {prompt_id}": prompt.text for prompt_id, prompt in prompts.items()},
                **{f"{config['images']}: image {image_id}": image.prompt for image_id, image in images.items()},
            },
        )
    except families.FamilyConfigError as error:
        raise PlanError(str(error)) from None
    try:
        emphasis_plan = emphasis.emphasis_plan(
            config["emphasis"],
            {prompt_id: prompt.kind for prompt_id, prompt in prompts.items()},
            len(images),
            # The search raises its objective: one whose higher values are better.
            [metric.name for metric in registry.metrics_of("image") if metric.direction == "higher is better"],
        )
        optimisation = None
        if search_plan.is_optimisation_search(config["emphasis"].get("search")):
            optimisation = search_plan.optimisation_search(
                config["emphasis"]["search"], list(emphasis_plan.prompt_ids), list(images)
            )
    except emphasis.EmphasisConfigError as error:
        raise PlanError(f"config: {error}") from None
    for search in (emphasis_plan.search, optimisation):
        if search is not None:
            check_objective_configured(search.objective, config["metrics"])
    if optimisation is not None:
        check_gradient(
            optimisation.optimisers,
            config["model"]["family"],
            config["generation"]["steps"],
            bool(config["runtime"]["safety_checker"]),
        )
        check_soft_prompts(optimisation.tokens is not None, config["model"]["family"])
    return StudyPlan(
        config=config,
        images=images,
        prompts=prompts,
        # JSON Schema accepts 1.0 as an integer; seeds become file names.
        seeds=[int(seed) for seed in config["seeds"]],
        emphasis=emphasis_plan,
        optimisation=optimisation,
        caveat=study_caveat(config["model"], config["generation"], list(prompts.values())),
        results=model_comparison.results_folder(config),
    )


def model_plans(config: Mapping[str, Any]) -> dict[str, StudyPlan]:
    """The plan of each model of a study of several models (``models:``), by
    name; an error names the entry and the key to fix."""
    try:
        entries = model_comparison.model_entries(config)
    except model_comparison.ModelsConfigError as error:
        raise PlanError(str(error)) from None
    plans = {}
    for index, entry in enumerate(entries):
        try:
            plans[entry.name] = study_plan(entry.config)
        except PlanError as error:
            raise PlanError(f"models[{index}] ({entry.name}): {error}") from None
    return plans
