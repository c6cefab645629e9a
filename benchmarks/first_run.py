"""Where a new user's first run of the default study spends its time.

    python benchmarks/first_run.py [--runs 3] [--resolution 128] [--steps 20] [--source DIR]

runs the default study (``snakemake --cores 4 --resources gpu=1``, the
README's command) ``--runs`` times, each in a fresh scratch copy of the
workflow and its sample images, as a fresh clone would: the built-in model is
written, hashed and loaded, every analysis runs. ``--resolution`` and
``--steps`` override the config's generation settings (fewer steps leave the
time that is not generation to measure). ``--source`` times another checkout
of the project (its workflow and its ``src``), so that two versions of the
code are compared by the same script; given more than once, the runs
alternate between the checkouts, so that both see the same load.

For each run it prints the wall time, the seconds spent generating, the rest,
where that rest went (before the first generate job, after the last one, the
summed job time of each stage) and the load average, then the median and
range of each figure over the runs."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_logs import (  # noqa: E402
    WORKFLOW_FILES,
    generation_timeline,
    generation_totals,
    jobs_after_last_generate_job,
    run_workflow,
    seconds_by_stage,
)

REPO = Path(__file__).resolve().parents[1]


def scratch_copy(source: Path, root: Path, resolution: int | None, steps: int | None) -> None:
    """The workflow, config and sample images of ``source`` in ``root``, with
    the generation settings overridden in its config."""
    for name in (*WORKFLOW_FILES, "resources"):
        path = source / name
        if path.is_dir():
            shutil.copytree(path, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, root / name)
    config = root / "config" / "config.yaml"
    text = config.read_text()
    overrides = {"resolution": resolution, "steps": steps}
    for key, value in overrides.items():
        if value is not None:
            text = re.sub(rf"(?m)^  {key}: .*\n", "", text)
            text = text.replace("\ngeneration:\n", f"\ngeneration:\n  {key}: {value}\n", 1)
    config.write_text(text)


def one_run(source: Path, resolution: int | None, steps: int | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="first_run_") as scratch:
        root = Path(scratch)
        scratch_copy(source, root, resolution, steps)
        load_before = os.getloadavg()[0]
        started = datetime.now()
        wall = run_workflow(root)
        finished = datetime.now()
        load_after = os.getloadavg()[0]
        logs = root / "logs"
        images, generating = generation_totals(logs)
        timeline = generation_timeline(logs, started, finished)
        figures = {
            "wall_seconds": wall,
            "images": images,
            "generating_seconds": generating,
            "not_generating_seconds": wall - generating,
            "before_first_generate_job_seconds": timeline["before_first_generate_job_seconds"],
            "after_last_generate_job_seconds": timeline["after_last_generate_job_seconds"],
            "load_before": load_before,
            "load_after": load_after,
        }
        figures.update({f"stage_{stage}_seconds": seconds for stage, seconds in seconds_by_stage(logs).items()})
        tail = jobs_after_last_generate_job(logs)
        print("  jobs after the last generate job (start, end, s after it): " + ", ".join(
            f"{job} {start:.1f}..{end:.1f}" for job, start, end in tail
        ))
        return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=None, help="generation.resolution (default: the config's)")
    parser.add_argument("--steps", type=int, default=None, help="generation.steps (default: the config's)")
    parser.add_argument(
        "--source", type=Path, action="append",
        help="checkout to time (default: this one); given twice or more, the runs alternate between them",
    )
    args = parser.parse_args()
    sources = [source.resolve() for source in args.source or [REPO]]
    print(f"sources {', '.join(map(str, sources))}; resolution {args.resolution or 'config'}; "
          f"steps {args.steps or 'config'}; {os.cpu_count()} CPUs; {args.runs} runs each")
    runs: dict[Path, list[dict[str, float]]] = {source: [] for source in sources}
    python_path = os.environ.get("PYTHONPATH", "")
    for index in range(args.runs):
        for source in sources:
            # The copy's rules import promptsweep: from the checkout being timed.
            os.environ["PYTHONPATH"] = os.pathsep.join([str(source / "src"), python_path])
            figures = one_run(source, args.resolution, args.steps)
            runs[source].append(figures)
            print(f"{source} run {index + 1}: " + ", ".join(f"{key} {value:.1f}" for key, value in figures.items()),
                  flush=True)
    for source, source_runs in runs.items():
        keys = [key for key in source_runs[0] if all(key in run for run in source_runs)]
        print(f"{source}: median (min-max) over {len(source_runs)} runs:")
        for key in keys:
            values = [run[key] for run in source_runs]
            print(f"  {key}: {statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
