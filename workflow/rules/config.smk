from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

try:
    validate(config, schema="../schemas/config.schema.yaml")
except WorkflowError as error:
    raise WorkflowError(
        "config/config.yaml (with any --configfile/--config given) does not fit "
        f"workflow/schemas/config.schema.yaml; fix the key named below.\n{error}"
    ) from None
