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
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
    try:
        yield logger
    except Exception as error:
        logger.error("failed: %s", error)
        raise
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers = []
