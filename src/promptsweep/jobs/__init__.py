"""The workflow's jobs, one module per stage: each job reads its input files,
calls the package's pure functions and writes its outputs atomically. Rules in
``workflow/rules`` only wire paths and parameters to these functions, by
keyword, and share their names.

Snakemake imports these modules whenever it parses the workflow, which every
dry run and every cluster job does (twice per job). So the heavy imports are
made inside the jobs that need them: torch and diffusers (about 5 s) in the
model jobs, matplotlib and scipy.stats (about 0.6 s) in the summary jobs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def job_log(path: str | Path, name: str) -> Iterator[logging.Logger]:
    """A logger writing to the job's log file and to stderr (progress).

    Jobs run as threads of one process, so each gets its own logger and handler.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"promptsweep.job.{path}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    file_handler = logging.FileHandler(path, mode="w")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(f"[{name}] %(message)s"))
    logger.handlers = [file_handler, console]
    # Only to the file: its time is where the job began (benchmarks read it).
    file_handler.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, "started", None, None))
    try:
        yield logger
    except Exception as error:
        logger.error("failed: %s", error)
        raise
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers = []


# sha256 of files already read in this process, by path, size and mtime: a
# learned metric's weights are hashed once per run, not once per job.
_file_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    from promptsweep import files

    status = os.stat(path)
    key = (str(path), status.st_size, status.st_mtime_ns)
    if key not in _file_digests:
        _file_digests[key] = files.file_sha256(path)
    return _file_digests[key]


def inputs_digest(inputs: Iterable[str], parameters: Mapping[str, Any]) -> str:
    """What a job's outputs are made of: the content of every input file (in
    order), the job's parameters, and the registered metrics."""
    from promptsweep import files, registry

    content = {
        "inputs": [[str(path), file_digest(path)] for path in inputs],
        "parameters": parameters,
        "metrics": sorted(registry.METRICS),
    }
    return files.json_digest(content)


class Ledger:
    """What a job's ``outputs`` were made from, kept beside the first of them:
    the :func:`inputs_digest` of their inputs and parameters.

    Snakemake reruns every job that reads a file its producer rewrote or only
    touched. The generate job touches every image of its control image when it
    regenerates a few (its outputs are update()), so the jobs that read one
    condition's images have update() outputs too and keep those made from
    inputs of unchanged content.
    """

    def __init__(self, outputs: Sequence[str], inputs: Iterable[str], parameters: Mapping[str, Any]) -> None:
        first = Path(outputs[0])
        self.outputs = [Path(path) for path in outputs]
        self.path = first.with_name(f".{first.name}.inputs")
        self.digest = inputs_digest(inputs, parameters)

    def current(self) -> bool:
        """Whether every output exists and was made from these inputs."""
        return (
            all(path.exists() for path in self.outputs)
            and self.path.exists()
            and self.path.read_text() == self.digest
        )

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Around making the outputs: the ledger is removed meanwhile, so
        outputs a failed job leaves are not trusted, and written after. The
        outputs are update() outputs, which Snakemake keeps: what a job
        killed while writing them left is removed first."""
        from promptsweep import files

        self.path.unlink(missing_ok=True)
        files.remove_unfinished_writes(self.outputs)
        yield
        self.path.write_text(self.digest)
