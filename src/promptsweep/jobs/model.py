"""Model stage: the built-in tiny model, and the identity of the weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptsweep import families, files, toy
from promptsweep.jobs import job_log


def tiny_model(*, family: str, output: str, log: str) -> None:
    """The model family's tiny random model, in its on-disk layout."""
    from promptsweep.threads import on_compute_thread

    with job_log(log, "tiny model") as logger:
        # The builder imports the model code on the compute thread, inside
        # the log: it takes seconds, and the job's time is read from its log.
        model_family = families.get(family)
        on_compute_thread(model_family.write_tiny_model, Path(output) / "base", Path(output) / "controlnet")
        logger.info("wrote the tiny %s model to %s", family, output)


def model_weights(*, model: dict[str, Any], tiny_directory: str | None, output: str, log: str) -> None:
    """Locate the weights (fetching if allowed) and record their identity."""
    from promptsweep.threads import import_on_compute_thread

    with job_log(log, "model") as logger:
        import_on_compute_thread(["promptsweep.models"])  # inside the log, as above
        from promptsweep import models

        family = families.get(model["family"])
        patterns: dict[str, list[str]] = {"base": [], "controlnet": []}
        if model["source"] == "tiny":
            assert tiny_directory is not None
            base_source = models.ModelSource(str(Path(tiny_directory) / "base"))
            controlnet_source = models.ModelSource(str(Path(tiny_directory) / "controlnet"))
        elif model["source"] == "toy":
            base_source = models.ModelSource(str(toy.WEIGHTS / "base"))
            controlnet_source = models.ModelSource(str(toy.WEIGHTS / "controlnet"))
        else:
            base_source = models.ModelSource(model["base"]["id"], model["base"].get("revision"))
            controlnet_source = models.ModelSource(
                model["controlnet"]["id"], model["controlnet"].get("revision")
            )
            patterns = {role: family.weight_patterns(role, model["safety_checker"]) for role in ("base", "controlnet")}
        base = models.resolve_weights(base_source, patterns["base"], "base")
        controlnet = models.resolve_weights(controlnet_source, patterns["controlnet"], "controlnet")
        if model["source"] == "toy":
            toy.check_checksums(
                {f"{role}/{name}": digest for role, weights in (("base", base), ("controlnet", controlnet))
                 for name, digest in weights.sha256.items()}
            )
        mismatch = family.controlnet_mismatch(Path(base.directory), Path(controlnet.directory))
        if mismatch:
            raise families.FamilyConfigError(
                f"model.controlnet.id: {controlnet.source.id!r} does not fit the {family.name} base "
                f"{base.source.id!r}: {mismatch}; choose a ControlNet trained for this base, or set "
                f"{families.FAMILY_KEY} to the ControlNet's family"
            )
        for role, weights in (("base", base), ("controlnet", controlnet)):
            logger.info("%s: %s -> %s (commit %s)", role, weights.source.id, weights.directory, weights.commit)
        files.write_json(
            Path(output),
            {"name": model["name"], "source": model["source"], "family": family.name,
             "pipeline_class": family.pipeline_class,
             "base": base.as_record(), "controlnet": controlnet.as_record()},
        )
