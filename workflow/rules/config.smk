from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def validate_config(
    config, where="config/config.yaml (with any --configfile/--config given)"
):
    """Check ``config`` against the schema, filling in its defaults."""
    try:
        validate(config, schema="../schemas/config.schema.yaml")
    except WorkflowError as error:
        raise WorkflowError(
            f"{where} does not fit workflow/schemas/config.schema.yaml; fix the "
            f"key named below.\n{error}"
        ) from None


validate_config(config)
