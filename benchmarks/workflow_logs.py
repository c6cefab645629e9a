"""Running the workflow in a scratch copy, and reading where its time went
from the job logs (shared by the benchmarks that run the workflow).

    python benchmarks/workflow_logs.py LOGS_FOLDER

prints each job's first and last log line, in seconds from the first job's
start, for a run's logs kept by ``gpu_throughput.py --workflow-logs``."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "workflow", "profiles", "config")


def copy_workflow(root: Path, extra: Sequence[str] = ()) -> None:
    """The repository's workflow files, and ``extra`` ones (``resources``),
    copied into ``root`` without Python caches."""
    for name in (*WORKFLOW_FILES, *extra):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)


# A job log line: "2026-11-26 13:01:02,345 <message>".
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (.*)$", re.MULTILINE)
# A generate job's line: "<image>: 88 images in 12.31 s (0.14 s per image; ...)".
GENERATION_LINE = re.compile(r": (\d+) images in ([0-9.]+) s \(")
PIPELINE_LOAD_LINE = re.compile(r"^pipeline: loaded in ([0-9.]+) s")


def run_workflow(root: Path, cores: int = 4, timeout: float | None = None) -> float:
    """Wall seconds of ``snakemake --cores 4 --resources gpu=1`` (or ``cores``) in ``root``.
    Its output goes to ``root/snakemake.log``. A failure raises with that
    output's end; so does a run longer than ``timeout`` seconds, stopped
    with every process it started."""
    log = root / "snakemake.log"
    started = time.perf_counter()
    with log.open("w") as output:
        # A session of its own, so that stopping it reaches the metric worker processes too.
        process = subprocess.Popen(
            [sys.executable, "-m", "snakemake", "--cores", str(cores), "--resources", "gpu=1"],
            cwd=root, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            end = log_end(log)  # before Snakemake's own lines on being stopped
            stop_session(process)
            raise RuntimeError(f"snakemake did not finish in {timeout:.0f} s and was stopped; {end}") from None
        except BaseException:  # Ctrl-C no longer reaches a process of another session
            stop_session(process)
            raise
    wall = time.perf_counter() - started
    if returncode:
        raise RuntimeError(f"snakemake exited with {returncode}; {log_end(log)}")
    return wall


STOP_GRACE_SECONDS = 10


def stop_session(process: subprocess.Popen[bytes]) -> None:
    """``process`` and every process it started: asked to end, and killed
    after STOP_GRACE_SECONDS."""
    os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_GRACE_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def log_end(log: Path) -> str:
    """Snakemake's last error line (or last line), then its last 40 lines:
    an error record that keeps one line keeps the telling one."""
    lines = log.read_text().splitlines()
    headline = ([line for line in lines if "Error" in line] or [line for line in lines if line.strip()] or ["(none)"])[-1]
    return f"{headline.strip()}\nthe end of its output:\n" + "\n".join(lines[-40:])


def log_lines(log: Path) -> list[tuple[datetime, str]]:
    return [
        (datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f"), message)
        for stamp, message in LOG_LINE.findall(log.read_text())
    ]


def generation_totals(logs: Path) -> tuple[int, float]:
    """Images the generate jobs made, and the seconds they spent generating them."""
    images, seconds = 0, 0.0
    for log in (logs / "generate").rglob("*.log"):
        for count, duration in GENERATION_LINE.findall(log.read_text()):
            images += int(count)
            seconds += float(duration)
    return images, seconds


def job_spans(logs: Path) -> list[tuple[str, datetime, datetime]]:
    """Each job that logged: its log's path under ``logs`` without ``.log``
    (``pair_metrics/picture0``) and the times of its first and last log
    lines, in the order the jobs started."""
    spans = []
    for log in logs.rglob("*.log"):
        times = [stamp for stamp, _ in log_lines(log)]
        if times:
            spans.append((log.relative_to(logs).with_suffix("").as_posix(), min(times), max(times)))
    return sorted(spans, key=lambda span: span[1])


def seconds_by_stage(logs: Path) -> dict[str, float]:
    """Per stage (the log's first folder under logs/), the summed time from
    each job's first to its last log line: where the workflow's time went."""
    stages: dict[str, float] = {}
    for job, start, end in job_spans(logs):
        stage = job.split("/")[0]
        stages[stage] = stages.get(stage, 0.0) + (end - start).total_seconds()
    return dict(sorted(stages.items(), key=lambda item: -item[1]))


def jobs_after_last_generate_job(logs: Path) -> list[tuple[str, float, float]]:
    """The jobs still running or started after the last generate job's last
    log line, with their first and last lines in seconds after it: what the
    run's end waited for."""
    spans = job_spans(logs)
    last_generated = max(end for job, _start, end in spans if job.startswith("generate/"))
    return [
        (job, (start - last_generated).total_seconds(), (end - last_generated).total_seconds())
        for job, start, end in spans
        if end > last_generated and not job.startswith("generate/")
    ]


def generating_periods(logs: Path) -> list[tuple[datetime, datetime]]:
    """When the generate jobs were generating, in time order: each job's line
    "N images in S s" is stamped when its last batch came back, S seconds
    after its first was queued."""
    periods = []
    for log in (logs / "generate").rglob("*.log"):
        for stamp, message in log_lines(log):
            if match := GENERATION_LINE.search(message):
                periods.append((stamp - timedelta(seconds=float(match.group(2))), stamp))
    return sorted(periods)


def generation_timeline(logs: Path, started: datetime, finished: datetime) -> dict[str, float]:
    """When the GPU could not be generating: seconds from the workflow's start
    to the first generate job's start, the pipeline loads, and seconds from
    the last generate job's end to the workflow's end; and how much of the
    span from the first image queued to the last one generated it spent
    generating (what the gaps between generate jobs cost)."""
    lines = [log_lines(log) for log in (logs / "generate").rglob("*.log")]
    lines = [job for job in lines if job]
    loads = [float(match.group(1)) for job in lines for _, message in job if (match := PIPELINE_LOAD_LINE.match(message))]
    periods = generating_periods(logs)
    if not periods:
        raise ValueError(f"no generate job under {logs} logged its images: nothing was generated")
    span = (periods[-1][1] - periods[0][0]).total_seconds()
    generating = sum((end - start).total_seconds() for start, end in periods)
    return {
        "before_first_generate_job_seconds": round((min(job[0][0] for job in lines) - started).total_seconds(), 1),
        "pipeline_load_seconds": round(sum(loads), 1),
        "after_last_generate_job_seconds": round((finished - max(job[-1][0] for job in lines)).total_seconds(), 1),
        "generation_span_seconds": round(span, 1),
        "generating_share_of_span": round(generating / span, 3),
    }


def main(argv: Sequence[str]) -> int:
    """Print the timeline of a run's kept logs (``gpu_throughput.py --workflow-logs``)."""
    if len(argv) != 1:
        print("usage: python benchmarks/workflow_logs.py LOGS_FOLDER", file=sys.stderr)
        return 2
    logs = Path(argv[0])
    spans = job_spans(logs)
    if not spans:
        print(f"no job logs under {logs}", file=sys.stderr)
        return 1
    first = spans[0][1]
    for job, start, end in spans:
        print(f"{(start - first).total_seconds():7.1f} {(end - first).total_seconds():7.1f}  {job}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
