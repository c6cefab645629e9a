"""Model stage: the built-in tiny model, and the identity of the weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptsweep import files
from promptsweep.jobs import job_log


def tiny_model(*, output: str, log: str) -> None:
    from promptsweep.threads import import_on_compute_thread, on_compute_thread

    with job_log(log, "tiny model") as logger:
        # Inside the log: importing the model code takes seconds, and the
        # job's time is read from its log.
        import_on_compute_thread(["promptsweep.tiny"])
        from promptsweep.tiny import write_tiny_model

        on_compute_thread(write_tiny_model, Path(output) / "base", Path(output) / "controlnet")
        logger.info("wrote the tiny model to %s", output)


def model_weights(*, model: dict[str, Any], tiny_directory: str | None, output: str, log: str) -> None:
    """Locate the weights (fetching if allowed) and record their identity."""
    from promptsweep.threads import import_on_compute_thread

    with job_log(log, "model") as logger:
        import_on_compute_thread(["promptsweep.models"])  # inside the log, as above
        from promptsweep import models

        if model["source"] == "tiny":
            assert tiny_directory is not None
            base_source = models.ModelSource(str(Path(tiny_directory) / "base"))
            controlnet_source = models.ModelSource(str(Path(tiny_directory) / "controlnet"))
            patterns: dict[str, list[str]] = {"base": [], "controlnet": []}
        else:
            base_source = models.ModelSource(model["base"]["id"], model["base"].get("revision"))
            controlnet_source = models.ModelSource(
                model["controlnet"]["id"], model["controlnet"].get("revision")
            )
            # The safety checker's files are fetched only for runs that use it.
            safety_checker = models.SAFETY_CHECKER_PATTERNS if model["safety_checker"] else []
            patterns = {"base": models.BASE_PATTERNS + safety_checker, "controlnet": models.CONTROLNET_PATTERNS}
        base = models.resolve_weights(base_source, patterns["base"], "base")
        controlnet = models.resolve_weights(controlnet_source, patterns["controlnet"], "controlnet")
        for role, weights in (("base", base), ("controlnet", controlnet)):
            logger.info("%s: %s -> %s (commit %s)", role, weights.source.id, weights.directory, weights.commit)
        files.write_json(
            Path(output),
            {"name": model["name"], "source": model["source"],
             "base": base.as_record(), "controlnet": controlnet.as_record()},
        )
