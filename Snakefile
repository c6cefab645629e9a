"""promptsweep: how additional positive and negative prompts change ControlNet (Canny) generations."""

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/edges.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/plots.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
