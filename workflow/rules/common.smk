import os
import re
from functools import cache, partial
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from promptsweep import registry, threads
from promptsweep.plan import IMAGE_METRICS_SCOPES, SEARCH_SLOTS, PlanError, study_plan
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
from promptsweep.toy import WEIGHTS as TOY_WEIGHTS
from promptsweep.study import ID_PATTERN

# The study's conditions, requests and paths (promptsweep.plan); the rules
# below only wire them together.
try:
    PLAN = study_plan(config)
except PlanError as error:
    raise WorkflowError(str(error)) from None
config["generation"] = PLAN.config["generation"]
# --cores; a cluster profile gives none, and jobs run here use --local-cores.
threads.use_metric_processes(
    config["runtime"]["metric_processes"],
    config["runtime"]["device"],
    workflow.resource_settings.cores or workflow.resource_settings.local_cores or 1,
)
IMAGES = PLAN.images
PROMPTS = PLAN.prompts
SEEDS = PLAN.seeds
CONDITIONS = PLAN.conditions
DOSE_CONDITIONS = PLAN.dose_conditions
VARIANTS = PLAN.variants
EMPHASIS = PLAN.emphasis
SEARCH = PLAN.search
SEARCH_CONDITIONS = PLAN.search_conditions
OPTIMISATION = PLAN.optimisation
MODEL_CAVEAT = PLAN.caveat
# In a study of several models the report groups each model's tables and
# plots under its name.
REPORT_SUBCATEGORY = PLAN.comparison_name
# ... and the log names the model its lines are about.
LOG_PREFIX = f"{PLAN.comparison_name}: " if PLAN.comparison_name else ""
# Names of their own for the run blocks that call them, which Snakemake's
# linter measures in bytecode.
generated_by_condition = PLAN.generated_by_condition
search_trial_settings = PLAN.search_trial_settings
if SEARCH is not None:
    logger.info(
        f"{LOG_PREFIX}emphasis.search: {len(SEARCH.candidates)} candidates; {SEARCH.cost.total} extra "
        f"generations at most ({SEARCH.cost.selection} on selection seeds "
        f"{list(SEARCH.selection_seeds)}, {SEARCH.cost.evaluation} on evaluation seeds "
        f"{list(SEARCH.evaluation_seeds)}); budget {SEARCH.budget}"
    )
if OPTIMISATION is not None:
    logger.info(LOG_PREFIX + search_plan.describe(OPTIMISATION))
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
                f"{LOG_PREFIX}metrics: {path} is not on this machine; {metric.display_name} is "
                "reported as not computed, and results made with it are redone without it"
            )


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
def local_rules(*rules):
    """The localrules directive, for rules named through the plan: in a study
    of several models each model's rules carry its name, which the directive
    cannot spell."""
    workflow.localrules(*map(PLAN.rule_name, rules))


local_rules(
    "tiny_model",
    "model_weights",
    "edge_map",
    "pair_metrics",
    "image_metrics",
    "noise_floor",
    "pairs_table",
    "summary_tables",
    "power_tables",
    "summary_plots",
    "contact_sheet",
    "gallery",
)


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


@cache
def folders_changed_by_hand():
    """Per image, what was done by hand to its generated folder
    (``generate_jobs.folder_problems``), looked at once per run."""
    return {
        image: generate_jobs.folder_problems(
            Path(PLAN.generated_folder(image)),
            [
                str(Path(path).relative_to(PLAN.generated_folder(image)))
                for condition in PLAN.generated_conditions
                for path in PLAN.generated(image, condition, "png")
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
        or any(PLAN.generated_folder(image) in forced for image in images)
        or not any(folders_changed_by_hand()[image] for image in images)
    ):
        return []
    unforced = {
        image: problems
        for image, problems in folders_changed_by_hand().items()
        if problems and PLAN.generated_folder(image) not in forced
    }
    listed = [problem for problems in unforced.values() for problem in problems]
    raise WorkflowError(
        "; ".join(listed[:5])
        + (f" (and {len(listed) - 5} more)" if len(listed) > 5 else "")
        + ". Run again with --forcerun "
        + " ".join(PLAN.generated_folder(image) for image in unforced)
        + " to regenerate exactly those images (bit-identically, from the same seeds)"
    )


def generated_input(wildcards):
    """The folder of the job's image, whose files the job reads."""
    return PLAN.generated_folder(wildcards.image)


def built_in_model_input(wildcards):
    """The tiny model's directory, or the shipped toy weights' checksums (so
    that new toy weights rerun every generation); nothing for real weights."""
    if config["model"]["source"] == "tiny":
        return {"tiny": "results/models/tiny"}
    if config["model"]["source"] == "toy":
        return {"toy_checksums": str(TOY_WEIGHTS / TOY_CHECKSUMS)}
    return {}
