import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

from promptsweep import steps
from promptsweep.learned import lpips_weight_paths
from promptsweep.study import (
    BASELINE,
    condition_prompts,
    read_images,
    read_prompts,
)

try:
    validate(config, schema="../schemas/config.schema.yaml")
except WorkflowError as error:
    raise WorkflowError(
        "config/config.yaml (with any --configfile/--config given) does not fit "
        f"workflow/schemas/config.schema.yaml; fix the key named below.\n{error}"
    ) from None

IMAGES = {image.image_id: image for image in read_images(Path(config["images"]))}
PROMPTS = {prompt.prompt_id: prompt for prompt in read_prompts(Path(config["prompts"]))}
# JSON Schema accepts 1.0 as an integer; seeds become file names.
SEEDS = [int(seed) for seed in config["seeds"]]
CONDITIONS = [BASELINE, *PROMPTS]
IMAGES_PER_GENERATION_JOB = config["images_per_generation_job"]
LPIPS_WEIGHTS = lpips_weight_paths(config["metrics"]["lpips"])
for key, path in LPIPS_WEIGHTS.items():
    if not path.is_file():
        # Not an error (LPIPS is then reported as not computed), but comparisons
        # that had LPIPS are redone without it: say so before anything runs.
        logger.warning(
            f"metrics.lpips.{key}: {path} is not a file on this machine; LPIPS is "
            "reported as not computed, and comparisons made with it are redone without it"
        )


def image_shards():
    """The images in consecutive groups of ``images_per_generation_job``, in
    sheet order: an image added at the end joins only the last group."""
    ids = list(IMAGES)
    size = IMAGES_PER_GENERATION_JOB
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def _alternatives(ids):
    return "|".join(re.escape(identifier) for identifier in ids)


wildcard_constraints:
    image=_alternatives(IMAGES),
    condition=_alternatives(CONDITIONS),
    prompt=_alternatives(PROMPTS),


# Everything but generation is cheap: on a cluster it runs in the submitting
# process instead of waiting in the queue.
localrules:
    tiny_model,
    model_weights,
    edges,
    ssim,
    fidelity,
    noise_floor,
    pairs_table,
    summary_tables,
    plot_summary,
    contact_sheet,


def image_file(wildcards):
    """The raw image, declared as input only while it exists: a missing or
    looping path then fails its own edges job with a clear message instead of
    stopping the whole run while the DAG is built."""
    path = IMAGES[wildcards.image].path
    return [path] if Path(path).exists() else []


def lpips_weights(wildcards):
    """The LPIPS weight files, declared as input only while they exist: a
    missing one is reported as "not computed" rather than stopping the run,
    and one that appears later reruns the comparisons made without it."""
    return [str(path) for path in LPIPS_WEIGHTS.values() if path.is_file()]


def generated(image, condition, suffix):
    return [
        f"results/generated/{image}/{condition}/seed{seed}.{suffix}" for seed in SEEDS
    ]


def tiny_model_input(wildcards):
    return ["results/models/tiny"] if config["model"]["source"] == "tiny" else []


def model_params():
    """The model settings that identify its weights, the safety checker's
    included when it is used (a change reruns every generation)."""
    model = config["model"]
    return {
        "source": model["source"],
        "name": model.get("name", model["source"]),
        "base": model.get("base"),
        "controlnet": model.get("controlnet"),
        "safety_checker": config["runtime"]["safety_checker"],
    }


def pair_prompts(image, condition):
    """The prompt and negative prompt of one (image, condition)."""
    return condition_prompts(
        IMAGES[image], None if condition == BASELINE else PROMPTS[condition]
    )


def generation_request(image, condition):
    """Everything one (image, condition) generation depends on, as plain values."""
    prompts = pair_prompts(image, condition)
    return {
        "image_id": image,
        "condition": condition,
        "prompt": prompts.prompt,
        "negative_prompt": prompts.negative_prompt,
        "seeds": SEEDS,
        "generation": {
            key: config["generation"][key]
            for key in (
                "steps",
                "guidance_scale",
                "controlnet_scale",
                "scheduler",
                "eta",
                "guess_mode",
            )
        },
        "runtime": dict(config["runtime"]),
    }


def final_outputs():
    """The study's tables and plots, and every per-pair file: listing the
    intermediate results too means one deleted by hand is rebuilt."""
    return [
        "results/tables/pairs.csv",
        "results/tables/summary.csv",
        "results/tables/summary.md",
        "results/tables/summary.tex",
        "results/tables/trend.csv",
        "results/plots/ssim_by_prompt.png",
        "results/plots/effect_vs_emphasis.png",
        "results/plots/heatmap.png",
        *[f"results/plots/sheets/{image}.png" for image in IMAGES],
        *[
            path
            for image in IMAGES
            for condition in CONDITIONS
            for suffix in ("png", "json")
            for path in generated(image, condition, suffix)
        ],
        *expand("results/ssim/{image}/{prompt}.tsv", image=IMAGES, prompt=PROMPTS),
        *expand("results/fidelity/{image}.tsv", image=IMAGES),
        *expand("results/noise_floor/{image}.tsv", image=IMAGES),
    ]
