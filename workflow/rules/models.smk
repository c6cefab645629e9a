# A study of several models (models:): the study of each, in its own folder
# (promptsweep.model_comparison), then every model's answers side by side.
from snakemake.exceptions import WorkflowError

from promptsweep.jobs import gallery as gallery_jobs
from promptsweep.jobs import tables as table_jobs
from promptsweep import model_comparison
from promptsweep.plan import PlanError, model_plans


include: "config.smk"


try:
    for index, entry in enumerate(model_comparison.model_entries(config)):
        validate_config(
            entry.config,
            f"models[{index}] ({entry.name}), with its own generation: over the config's,",
        )
    MODEL_PLANS = model_plans(config)
except (PlanError, model_comparison.ModelsConfigError) as error:
    raise WorkflowError(str(error)) from None

# What the module statement does, for a number of models known only from the
# config: load the study's rules once per model, its paths in the model's
# folder and its rules prefixed with its name.
# Snakemake keeps each module in the Snakefile's globals under its name: one
# that is no Python name cannot replace a global (a model named "config").
for name, model_plan in MODEL_PLANS.items():
    workflow.module(
        f"model {name}",
        snakefile="study.smk",
        config=model_plan.config,
        replace_prefix=model_comparison.path_prefixes(name),
    )
    workflow.userule(
        rules=["*"], from_module=f"model {name}", name_modifier=f"{name}_*"
    )(lambda: None)


localrules:
    models_tables,
    models_gallery,


rule models_tables:
    input:
        summaries=[
            f"{plan.results}/tables/summary.csv" for plan in MODEL_PLANS.values()
        ],
        verdicts=[f"{plan.results}/tables/verdict.csv" for plan in MODEL_PLANS.values()],
    output:
        csv=report(
            "results/tables/models.csv",
            caption="../report/models.rst",
            category="Models",
            labels={"table": "every model's answers"},
        ),
        md="results/tables/models.md",
        plot=report(
            "results/plots/models.png",
            caption="../report/models_plot.rst",
            category="Models",
            labels={"plot": "effect per model"},
        ),
        svg="results/plots/models.svg",
    log:
        "logs/tables/models.log",
    params:
        models={
            name: {
                "family": plan.config["model"]["family"],
                "label": plan.model_params()["name"],
                "caveat": plan.caveat,
            }
            for name, plan in MODEL_PLANS.items()
        },
    run:
        table_jobs.models_tables(
            **input, **params, outputs=dict(output.items()), log=log[0]
        )


rule models_gallery:
    input:
        models="results/tables/models.csv",
        plot="results/plots/models.png",
        galleries=[f"{plan.results}/gallery" for plan in MODEL_PLANS.values()],
    output:
        report(
            "results/models.html",
            caption="../report/models_gallery.rst",
            category="Models",
            labels={"page": "every model's answers and galleries"},
        ),
    log:
        "logs/plots/models_gallery.log",
    params:
        names=list(MODEL_PLANS),
    run:
        gallery_jobs.models_gallery(**input, **params, output=output[0], log=log[0])


TARGETS = [
    "results/tables/models.csv",
    "results/models.html",
    *(path for plan in MODEL_PLANS.values() for path in plan.final_outputs()),
]
