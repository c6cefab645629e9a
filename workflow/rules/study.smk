# The study of one model: every rule, and its targets. A study of several
# models (models:) loads this file once per model (rules/models.smk).


include: "config.smk"
include: "common.smk"
include: "model.smk"
include: "edges.smk"
include: "generate.smk"
include: "metrics.smk"
include: "tables.smk"
include: "plots.smk"
include: "emphasis.smk"
include: "search.smk"


TARGETS = PLAN.final_outputs()
