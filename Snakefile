# The workflow is workflow/Snakefile (the catalog's layout). Not `include:`,
# which keeps an included file's `rule all` from being the default target.
workflow.include("workflow/Snakefile", overwrite_default_target=True)
