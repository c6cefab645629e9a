import os
import re
from dataclasses import asdict
from functools import cache, partial
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

from promptsweep import emphasis, families, files, registry, threads
from promptsweep.search import plan as search_plan
from promptsweep.conditions import BASELINE
from promptsweep.jobs import edges as edge_jobs
from promptsweep.jobs import gallery as gallery_jobs
from promptsweep.jobs import emphasis as emphasis_jobs
from promptsweep.jobs import generate as generate_jobs
from promptsweep.jobs import metrics as metric_jobs
from promptsweep.jobs import model as model_jobs
from promptsweep.jobs import plots as plot_jobs
from promptsweep.jobs import search as search_jobs
from promptsweep.jobs import tables as table_jobs
from promptsweep.toy import CHECKSUMS as TOY_CHECKSUMS
from promptsweep.toy import FAMILY as TOY_FAMILY
from promptsweep.toy import WEIGHTS as TOY_WEIGHTS
from promptsweep.toy import ToyWeightsError
from promptsweep.toy import recorded_checksums as recorded_toy_checksums
from promptsweep.study import (
    ID_PATTERN,
    condition_input,
    generation_settings,
    read_images,
    read_prompts,
    study_caveat,
    with_generation_defaults,
)

try:
    validate(config, schema="../schemas/config.schema.yaml")
except WorkflowError as error:
    raise WorkflowError(
        "config/config.yaml (with any --configfile/--config given) does not fit "
        f"workflow/schemas/config.schema.yaml; fix the key named below.\n{error}"
    ) from None

try:
    families.get(config["model"]["family"])
except families.FamilyConfigError as error:
    raise WorkflowError(str(error)) from None
if config["model"]["source"] == "toy":
    if config["model"]["family"] != TOY_FAMILY:
        raise WorkflowError(
            f"model.family: the toy model is a {TOY_FAMILY} model, not {config['model']['family']}; "
            f"set model.family to {TOY_FAMILY}, or model.source to tiny or pretrained"
        )
    try:
        recorded_toy_checksums()
    except ToyWeightsError as error:
        raise WorkflowError(str(error)) from None
config["generation"] = with_generation_defaults(config["generation"], config["model"])
if config["plots"]["quality_metric"] not in {
    m.name for m in registry.quality_metrics()
}:
    raise WorkflowError(
        f"plots.quality_metric: {config['plots']['quality_metric']!r} is not a quality metric; "
        f"choose one of {', '.join(m.name for m in registry.quality_metrics())}"
    )
if config["runtime"]["compile"] and (
    config["runtime"]["attention_slicing"] or config["runtime"]["cpu_offload"]
):
    raise WorkflowError(
        "runtime.compile cannot be combined with runtime.attention_slicing or "
        "runtime.cpu_offload; set those to false, or compile to false"
    )
# --cores; a cluster profile gives none, and jobs run here use --local-cores.
threads.use_metric_processes(
    config["runtime"]["metric_processes"],
    config["runtime"]["device"],
    workflow.resource_settings.cores or workflow.resource_settings.local_cores or 1,
)
IMAGES = {image.image_id: image for image in read_images(Path(config["images"]))}
PROMPTS = {prompt.prompt_id: prompt for prompt in read_prompts(Path(config["prompts"]))}
# JSON Schema accepts 1.0 as an integer; seeds become file names.
SEEDS = [int(seed) for seed in config["seeds"]]
CONDITIONS = [BASELINE, *PROMPTS]
try:
    families.check_weighted_texts(
        families.get(config["model"]["family"]),
        {
            **{
                f"{config['prompts']}: prompt {prompt_id}": prompt.text
                for prompt_id, prompt in PROMPTS.items()
            },
            **{
                f"{config['images']}: image {image_id}": image.prompt
                for image_id, image in IMAGES.items()
            },
        },
    )
except families.FamilyConfigError as error:
    raise WorkflowError(str(error)) from None
MODEL_CAVEAT = study_caveat(
    config["model"], config["generation"], list(PROMPTS.values())
)
try:
    EMPHASIS = emphasis.emphasis_plan(
        config["emphasis"],
        {prompt_id: prompt.kind for prompt_id, prompt in PROMPTS.items()},
        len(IMAGES),
        # The search raises its objective: one whose higher values are better.
        [
            m.name
            for m in registry.metrics_of("image")
            if m.direction == "higher is better"
        ],
    )
except emphasis.EmphasisConfigError as error:
    raise WorkflowError(f"config: {error}") from None
# Prompts at doses ("pos5@0.5"): generated like the word conditions, on SEEDS.
DOSE_CONDITIONS = list(EMPHASIS.dose_conditions)
SEARCH = EMPHASIS.search


def check_objective_configured(objective):
    """A search objective whose weights the config does not name would be
    NaN in every trial: stop before any job, naming both keys."""
    if not registry.configured(registry.METRICS[objective], config["metrics"]):
        raise WorkflowError(
            f"emphasis.search.objective: {objective!r} needs weights that "
            f"metrics.{registry.METRICS[objective].config_key} does not name; "
            "set them, or choose a metric that needs none (e.g. sharpness)"
        )


if SEARCH is not None:
    check_objective_configured(SEARCH.objective)
if SEARCH is not None:
    logger.info(
        f"emphasis.search: {len(SEARCH.candidates)} candidates; {SEARCH.cost.total} extra "
        f"generations at most ({SEARCH.cost.selection} on selection seeds "
        f"{list(SEARCH.selection_seeds)}, {SEARCH.cost.evaluation} on evaluation seeds "
        f"{list(SEARCH.evaluation_seeds)}); budget {SEARCH.budget}"
    )
SEARCH_CONDITIONS = SEARCH.conditions if SEARCH is not None else []
OPTIMISATION = None
if search_plan.is_optimisation_search(config["emphasis"].get("search")):
    try:
        OPTIMISATION = search_plan.optimisation_search(
            config["emphasis"]["search"], list(EMPHASIS.prompt_ids), list(IMAGES)
        )
    except emphasis.EmphasisConfigError as error:
        raise WorkflowError(f"config: {error}") from None
    check_objective_configured(OPTIMISATION.objective)
    logger.info(search_plan.describe(OPTIMISATION))
# Every condition the generate job makes for each control image, and those
# compared with the baseline (the prompts and the prompts at doses).
GENERATED_CONDITIONS = [*CONDITIONS, *DOSE_CONDITIONS]
VARIANTS = [*PROMPTS, *DOSE_CONDITIONS]
SEARCH_SLOTS = ["baseline", "chosen", "best_word"]
IMAGES_PER_GENERATION_JOB = config["images_per_generation_job"]
# Jobs that hold the GPU are started first whenever a core frees up. Without
# this, an image's four analysis jobs, ready when its generation ended, took
# the free cores, and the next generation waited for one of them to finish.
GPU_JOB_PRIORITY = 1
for metric in registry.learned_metrics():
    for path in metric.weight_files(config["metrics"][metric.config_key]):
        if not path.exists():
            # Not an error (the metric is then reported as not computed), but
            # results that had it are redone without it: say so before anything runs.
            logger.warning(
                f"metrics: {path} is not on this machine; {metric.display_name} is "
                "reported as not computed, and results made with it are redone without it"
            )


def image_shards():
    """The images in consecutive groups of ``images_per_generation_job``, in
    sheet order: an image added at the end joins only the last group."""
    ids = list(IMAGES)
    size = IMAGES_PER_GENERATION_JOB
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def _alternatives(ids):
    return "|".join(re.escape(identifier) for identifier in ids)


# Image ids by their pattern, not as an alternation of every id: compiling a
# 400-way alternation into each rule's patterns cost seconds of planning.
wildcard_constraints:
    image=ID_PATTERN.pattern.strip("^$"),
    condition=_alternatives([*CONDITIONS, *DOSE_CONDITIONS]),
    candidate=_alternatives(SEARCH_CONDITIONS or [BASELINE]),
    slot=_alternatives(SEARCH_SLOTS),


# Everything but generation is cheap: on a cluster it runs in the submitting
# process instead of waiting in the queue.
localrules:
    tiny_model,
    model_weights,
    edge_map,
    pair_metrics,
    image_metrics,
    noise_floor,
    pairs_table,
    summary_tables,
    power_tables,
    summary_plots,
    contact_sheet,
    gallery,


def image_file(wildcards):
    """The raw image, declared as input only while it exists: a missing or
    looping path then fails its own edges job with a clear message instead of
    stopping the whole run while the DAG is built."""
    path = IMAGES[wildcards.image].path
    return [path] if Path(path).exists() else []


def weight_files(scope):
    """An input function: the weight files the config names for the learned
    metrics of ``scope``, declared only while they exist. A missing one is
    reported as "not computed" rather than stopping the run, and one that
    appears later reruns the jobs made without it."""
    paths = registry.weight_files(config["metrics"], scope)
    return lambda wildcards: [str(path) for path in paths if path.exists()]


def generated(image, condition, suffix):
    return [
        f"results/generated/{image}/{condition}/seed{seed}.{suffix}" for seed in SEEDS
    ]


def generated_by_condition(image, suffix):
    return {
        condition: generated(image, condition, suffix)
        for condition in GENERATED_CONDITIONS
    }


def generated_folder(image):
    """One control image's generated images and records, every condition: a
    generate job's output, and what the jobs that read them take as input."""
    return f"results/generated/{image}"


def generated_files(image, conditions, suffix):
    """The files of ``conditions`` of one image, conditions-major, then seeds."""
    return [
        path for condition in conditions for path in generated(image, condition, suffix)
    ]


def by_variant(paths):
    """Files of every variant and seed, VARIANTS-major, as a mapping of each
    variant to its files per seed."""
    return {
        variant: paths[index * len(SEEDS) : (index + 1) * len(SEEDS)]
        for index, variant in enumerate(VARIANTS)
    }


def pair_files(image):
    """The files a pair_metrics job reads (the baselines and each variant's),
    and the SSIM maps it writes into its folder, VARIANTS-major."""
    return {
        "baselines": generated(image, BASELINE, "png"),
        "baseline_records": generated(image, BASELINE, "json"),
        "variants": by_variant(generated_files(image, VARIANTS, "png")),
        "variant_records": by_variant(generated_files(image, VARIANTS, "json")),
        "ssim_maps": [
            f"results/ssim_maps/{image}/{variant}/seed{seed}.png"
            for variant in VARIANTS
            for seed in SEEDS
        ],
    }


@cache
def folders_changed_by_hand():
    """Per image, what was done by hand to its generated folder
    (``generate_jobs.folder_problems``), looked at once per run."""
    return {
        image: generate_jobs.folder_problems(
            Path(generated_folder(image)),
            [
                str(Path(path).relative_to(generated_folder(image)))
                for condition in GENERATED_CONDITIONS
                for path in generated(image, condition, "png")
            ],
            mark=generate_jobs.FINISHED_MARK,
        )
        for image in IMAGES
    }


def forced_targets():
    """What --forcerun names, as paths or rule names (known only once the
    workflow is parsed; a folder may be typed with a trailing slash)."""
    return {os.path.normpath(target) for target in workflow.dag_settings.forcerun}


def unchanged_by_hand(rule_name, images, _wildcards=None):
    """An input function of the generate rules that adds no input: it stops
    the run while the DAG is built, before anything runs, when a generated
    image or record of ``images`` was deleted or changed by hand (Snakemake
    tracks the folders, not the files in them), naming every such file of the
    study. A run that forces the job (--forcerun with ``rule_name`` or one of
    the images' folders, --forceall) goes on: the job regenerates exactly the
    images that are missing or no longer match their records. A cluster job's
    process skips it: the run that submitted the job checked."""
    forced = forced_targets()
    if (
        not workflow.is_main_process
        or workflow.dag_settings.forceall
        or rule_name in forced
        or any(generated_folder(image) in forced for image in images)
        or not any(folders_changed_by_hand()[image] for image in images)
    ):
        return []
    unforced = {
        image: problems
        for image, problems in folders_changed_by_hand().items()
        if problems and generated_folder(image) not in forced
    }
    listed = [problem for problems in unforced.values() for problem in problems]
    raise WorkflowError(
        "; ".join(listed[:5])
        + (f" (and {len(listed) - 5} more)" if len(listed) > 5 else "")
        + ". Run again with --forcerun "
        + " ".join(generated_folder(image) for image in unforced)
        + " to regenerate exactly those images (bit-identically, from the same seeds)"
    )


def generated_input(wildcards):
    """The folder of the job's image, whose files the job reads."""
    return generated_folder(wildcards.image)


def generation_requests(image):
    return {
        condition: generation_request(image, condition)
        for condition in GENERATED_CONDITIONS
    }


def built_in_model_input(wildcards):
    """The tiny model's directory, or the shipped toy weights' checksums (so
    that new toy weights rerun every generation); nothing for real weights."""
    if config["model"]["source"] == "tiny":
        return {"tiny": "results/models/tiny"}
    if config["model"]["source"] == "toy":
        return {"toy_checksums": str(TOY_WEIGHTS / TOY_CHECKSUMS)}
    return {}


def model_params():
    """The model settings that identify its weights, the safety checker's
    included when it is used (a change reruns every generation)."""
    model = config["model"]
    return {
        "source": model["source"],
        "family": model["family"],
        "name": model.get("name", model["source"]),
        "base": model.get("base"),
        "controlnet": model.get("controlnet"),
        "safety_checker": config["runtime"]["safety_checker"],
    }


def generation_request(image, condition, seeds=None):
    """Everything one (image, condition) generation depends on, as plain values.

    ``condition`` is baseline, a prompt id, a dosed prompt ("pos5@0.5") or a
    search candidate ("pos1@0.5+pos3@1"); a dosed or mixed one adds the
    texts and doses its embeddings are made of (only the prompts it names).
    """
    request = {"image_id": image, "condition": condition}
    if condition == BASELINE or condition in PROMPTS:
        prompt = None if condition == BASELINE else PROMPTS[condition]
        request.update(asdict(condition_input(IMAGES[image], prompt)))
    else:
        terms = emphasis.parse_candidate(condition).terms
        baseline = condition_input(IMAGES[image], None)
        words = {
            prompt_id: condition_input(IMAGES[image], PROMPTS[prompt_id])
            for prompt_id, _ in terms
        }
        # The record's texts (and the CLIP score's prompt): the word
        # variant's for a dose, the image prompt's for a mixture.
        shown = words[terms[0][0]] if len(terms) == 1 else baseline
        request.update(asdict(shown))
        request["embedding"] = emphasis.embedding_request(baseline, words, terms)
    request.update(
        {
            "seeds": SEEDS if seeds is None else list(seeds),
            "generation": generation_settings(config["generation"]),
            # How the metrics are spread over processes changes no image.
            "runtime": {
                key: value
                for key, value in config["runtime"].items()
                if key != "metric_processes"
            },
        }
    )
    return request


def final_outputs():
    """The study's tables and plots, and every per-pair file: listing the
    intermediate results too means one deleted by hand is rebuilt."""
    return [
        "results/tables/pairs.csv",
        "results/tables/summary.csv",
        "results/tables/summary.md",
        "results/tables/summary.tex",
        "results/tables/trend.csv",
        "results/tables/quality_summary.csv",
        "results/tables/verdict.md",
        "results/tables/power.csv",
        "results/plots/power.png",
        "results/plots/ssim_by_prompt.png",
        "results/plots/effect_vs_emphasis.png",
        "results/plots/heatmap.png",
        "results/plots/quality_forest.png",
        "results/plots/change_vs_gain.png",
        "results/gallery",
        *[f"results/plots/sheets/{image}.png" for image in IMAGES],
        *[generated_folder(image) for image in IMAGES],
        *expand(
            "results/pair_metrics/{image}/{prompt}.tsv", image=IMAGES, prompt=PROMPTS
        ),
        *expand("results/image_metrics/{image}.tsv", image=IMAGES),
        *expand("results/noise_floor/{image}.tsv", image=IMAGES),
        *emphasis_outputs(),
    ]


def emphasis_outputs():
    """The dose-response table and plot when doses are configured, and the
    latent search's table when it is."""
    outputs = []
    if DOSE_CONDITIONS:
        outputs += [
            "results/tables/dose_response.csv",
            "results/tables/dose_response.md",
            "results/plots/dose_response.png",
        ]
    if SEARCH is not None or OPTIMISATION is not None:
        outputs += [
            "results/tables/latent_search.csv",
            "results/tables/latent_search.md",
        ]
    if OPTIMISATION is not None:
        outputs += [
            "results/plots/search_convergence.png",
            "results/plots/search_contact_sheet.png",
        ]
    return outputs


# Emphasis (workflow/rules/emphasis.smk) ----------------------------------------


def search_generated(image, condition, suffix):
    return [
        f"results/search/generated/{image}/{condition}/seed{seed}.{suffix}"
        for seed in SEARCH.selection_seeds
    ]


def evaluation_generated(image, slot, suffix):
    return [
        f"results/search/evaluation/{image}/{slot}/seed{seed}.{suffix}"
        for seed in SEARCH.evaluation_seeds
    ]


def search_settings():
    return {
        "candidates": [candidate.name for candidate in SEARCH.candidates],
        "word_prompts": list(SEARCH.word_prompts),
        "selection_seeds": list(SEARCH.selection_seeds),
        "objective": SEARCH.objective,
        "tolerances": {
            "edge_f1": SEARCH.tolerances.edge_f1,
            "clip_score": SEARCH.tolerances.clip_score,
        },
    }


def evaluation_conditions(slot):
    """Every condition the selection may put in ``slot``."""
    return {
        BASELINE: [BASELINE],
        "chosen": [BASELINE, *(candidate.name for candidate in SEARCH.candidates)],
        "best_word": [BASELINE, *SEARCH.word_prompts],
    }[slot]


# Optimisation search (workflow/rules/search.smk) ---------------------------------


def search_word_requests(image, seeds):
    """The generation requests of the baseline and of every direction's word
    prompt of ``image`` on ``seeds``: what a point of the search is made of."""
    return {
        condition: generation_request(image, condition, seeds)
        for condition in [BASELINE, *OPTIMISATION.space.prompt_ids]
    }


def search_trial_settings(search):
    """Everything one search's trials depend on, as plain values."""
    return {
        "optimiser_settings": dict(OPTIMISATION.optimisers.get(search, {})),
        "prompt_ids": list(OPTIMISATION.space.prompt_ids),
        "weight_range": list(OPTIMISATION.space.bounds[0]),
        "objective": OPTIMISATION.objective,
        "direction": OPTIMISATION.direction,
        "tolerances": asdict(OPTIMISATION.tolerances),
        "trials": OPTIMISATION.trials,
        "seed": OPTIMISATION.seed,
        "selection_seeds": list(OPTIMISATION.selection_seeds),
        "requests": {
            image: search_word_requests(image, OPTIMISATION.selection_seeds)
            for image in OPTIMISATION.selection_images
        },
        "metric_settings": registry.metric_settings(config["metrics"], "image"),
        "canny_low": config["generation"]["canny_low"],
        "canny_high": config["generation"]["canny_high"],
    }


def search_journal(search):
    """The search's Optuna journal, named by a digest of what its trials
    depend on (the model included): a changed search starts a new journal,
    and a rerun of the same one resumes from its finished trials."""
    model = model_params()
    if config["model"]["source"] == "toy":
        model["checksums"] = recorded_toy_checksums()
    digest = files.json_digest(
        {"search": search_trial_settings(search), "model": model}
    )
    return f"results/search/journals/{search}-{digest[:12]}.journal"


def search_evaluated_file(image, condition, seed, suffix="png"):
    return f"results/search/evaluation/{image}/{condition}/seed{seed}.{suffix}"


def search_evaluated_by_condition(image, suffix):
    return {
        condition: [
            search_evaluated_file(image, condition, seed, suffix)
            for seed in OPTIMISATION.evaluation_seeds
        ]
        for condition in [BASELINE, *OPTIMISATION.evaluated_conditions]
    }


def search_evaluated(image, suffix):
    return [
        path
        for paths in search_evaluated_by_condition(image, suffix).values()
        for path in paths
    ]
