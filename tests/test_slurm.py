"""The reduced study through ``snakemake --profile profiles/slurm`` on a
throw-away one-node SLURM cluster on this machine (one fake GPU, started by
tests/cluster/slurm_up.sh, stopped by tests/cluster/slurm_down.sh).

Needs root (it installs slurmctld, slurmd, slurm-client and munge with apt-get
where they are missing, and writes /etc/slurm); skipped, with the reason,
where the cluster cannot start. Run it alone with ``pytest -m slurm -s`` to see
the timings it prints.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import REPO, Study

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

CLUSTER_SCRIPTS = REPO / "tests" / "cluster"
IMAGES = ["square", "blocks"]
CONDITIONS = ["baseline", "good", "best", "bad"]
SEEDS = [0, 1]
LOCAL_RULES = [
    "tiny_model", "model_weights", "edge_map", "pair_metrics", "image_metrics", "noise_floor",
    "pairs_table", "summary_tables", "power_tables", "summary_plots", "contact_sheet", "gallery", "all",
]

# seconds
UP_TIMEOUT = 900  # includes apt-get install on a fresh machine
DOWN_TIMEOUT = 120
RUN_TIMEOUT = 300  # the cluster run; about 2-3 min on 2 cores
INTERRUPT_GRACE = 30  # after SIGINT (Snakemake then scancels its jobs), before SIGKILL
LOCK_WAIT = 600

# Only one test session at a time may own the machine-wide test cluster: a
# second one would otherwise tear it down under the first.
LOCK_FILE = Path("/run/lock" if Path("/run/lock").is_dir() else "/tmp") / "promptsweep-slurm-test.lock"

# The test node has 2 CPUs and a few GB: replace the site values of the
# profile's default-resources (--default-resources on the command line
# replaces the profile's whole mapping). gpu=1 still comes from the rules.
TEST_NODE_RESOURCES = ["runtime=10", "mem_mb=1000", "cpus_per_gpu=1"]


def _script(name: str, timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPTS / name)], capture_output=True, text=True, timeout=timeout
    )


def _reason(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    tagged = [line for line in lines if line.startswith("slurm_up:")]
    return (tagged or lines or ["no reason given"])[-1]


def _slurm_down() -> None:
    try:
        result = _script("slurm_down.sh", DOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        warnings.warn(f"tests/cluster/slurm_down.sh did not finish in {DOWN_TIMEOUT} s")
        return
    if result.returncode != 0:
        warnings.warn(f"tests/cluster/slurm_down.sh failed:\n{result.stdout}\n{result.stderr}")


def _lock() -> int:
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                pytest.skip(f"another test session has held the SLURM test cluster ({LOCK_FILE}) for {LOCK_WAIT} s")
            time.sleep(1)


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[None]:
    """A running one-node cluster (partition debug, gres gpu:1); always torn down."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the SLURM test cluster needs Linux")
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster needs root (apt-get install, /etc/slurm, daemons)")
    lock = _lock()
    try:
        try:
            up = _script("slurm_up.sh", UP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _slurm_down()
            pytest.skip(f"tests/cluster/slurm_up.sh did not finish in {UP_TIMEOUT} s")
        if up.returncode == 3:
            pytest.skip(f"SLURM cannot start here: {_reason(up.stderr)}")
        if up.returncode != 0:
            _slurm_down()
            pytest.fail(f"tests/cluster/slurm_up.sh exited {up.returncode}:\n{up.stdout}\n{up.stderr}")
        print(f"\n{up.stdout.strip()}")
        try:
            yield
        finally:
            _slurm_down()
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)


def _run(command: list[str], cwd: Path, timeout: float) -> tuple[int, str, bool]:
    """Run like ``timeout -s INT -k 30``: SIGINT at the limit (Snakemake then
    cancels its SLURM jobs), SIGKILL to the whole process group 30 s later."""
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output, False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=INTERRUPT_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        return process.returncode, output, True


def _planned_remote_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run plans outside LOCAL_RULES
    (a dry run prints local jobs as ``rule X:`` too)."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n)", output):
        rule = re.search(r"^rule (\w+):$", block, flags=re.MULTILINE)
        resources = re.search(r"^\s+resources: (.*)$", block, flags=re.MULTILINE)
        if rule and resources and rule.group(1) not in LOCAL_RULES:
            jobs.append((rule.group(1), dict(re.findall(r"(\w+)=([^,]+)", resources.group(1)))))
    return jobs


@pytest.mark.parametrize(("images_per_job", "remote_rule"), [(1, "generate"), (2, "generate_shard0")])
def test_profile_gives_every_generation_job_its_resources(
    tmp_path: Path, images_per_job: int, remote_rule: str
) -> None:
    """A dry run through the profile, no cluster needed: every job that would
    go to SLURM, one image per job or several, gets the profile's generation
    resources and one GPU."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())["default-resources"]
    study = Study(tmp_path)
    command = [
        sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--dry-run",
        "--config", f"images_per_generation_job={images_per_job}",
    ]
    returncode, output, timed_out = _run(command, study.root, RUN_TIMEOUT)
    assert returncode == 0 and not timed_out, output[-6000:]
    jobs = _planned_remote_jobs(output)
    assert len(jobs) == len(IMAGES) // images_per_job
    for rule, resources in jobs:
        assert rule == remote_rule
        assert resources["gpu"] == "1"
        for name in ("runtime", "mem_mb", "cpus_per_gpu"):
            assert resources[name] == str(profile[name]), (rule, name, resources)


def _slurm_jobs(job_name: str) -> dict[int, dict[str, str]]:
    """The jobs of one Snakemake run (its SLURM job name), from slurmctld.

    The test cluster keeps finished jobs for MinJobAge=300 s and has no
    accounting database, so scontrol (not sacct) is the record here."""
    output = subprocess.run(
        ["scontrol", "show", "job", "--oneliner"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    jobs = {}
    for line in output.splitlines():
        fields = dict(re.findall(r"(\w+(?:/\w+)?)=(\S*)", line))
        if fields.get("JobName") == job_name:
            jobs[int(fields["JobId"])] = fields
    return jobs


def _seconds(timestamp: str) -> float:
    return time.mktime(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%S"))


def test_generation_jobs_go_through_sbatch(slurm_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> None:
    # The same study locally first: its wall time is the baseline for the
    # cluster overhead, and its results must come out of the cluster unchanged.
    local = Study(tmp_path_factory.mktemp("local"))
    start = time.monotonic()
    local.snakemake()
    local_wall = time.monotonic() - start

    study = Study(tmp_path_factory.mktemp("slurm"))
    root = study.root
    command = [
        sys.executable, "-m", "snakemake", "--profile", "profiles/slurm",
        "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1",
        "--default-resources", *TEST_NODE_RESOURCES,
        # One job per image, so that every image's submission can be checked.
        "--config", "images_per_generation_job=1",
    ]
    start = time.monotonic()
    returncode, output, timed_out = _run(command, root, RUN_TIMEOUT)
    cluster_wall = time.monotonic() - start
    (root / "snakemake-slurm.log").write_text(output)
    assert not timed_out, f"the cluster run took over {RUN_TIMEOUT} s (interrupted):\n{output[-6000:]}"
    assert returncode == 0, f"{' '.join(command)} exited {returncode}:\n{output[-6000:]}"

    # every output of the study
    expected = [
        "results/tables/pairs.csv", "results/tables/summary.csv", "results/tables/summary.md",
        "results/tables/summary.tex", "results/tables/trend.csv", "results/tables/image_metrics.csv",
        "results/tables/noise_floor.csv", "results/plots/ssim_by_prompt.png",
        "results/plots/effect_vs_emphasis.png", "results/plots/heatmap.png",
        *[f"results/plots/sheets/{image}.png" for image in IMAGES],
        *[f"results/edges/{image}.png" for image in IMAGES],
        *[
            f"results/generated/{image}/{condition}/seed{seed}.{suffix}"
            for image in IMAGES for condition in CONDITIONS for seed in SEEDS for suffix in ("png", "json")
        ],
    ]
    assert [path for path in expected if not (root / path).is_file()] == []

    # Snakemake: exactly the generate jobs were submitted, one sbatch each,
    # and every other rule ran locally.
    submissions = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", output)
    generate_jobs = set(IMAGES)
    assert len(submissions) == len(generate_jobs) == 2
    job_ids = {int(job_id) for job_id, _ in submissions}
    assert len(job_ids) == len(submissions)
    remote_rules = re.findall(r"^rule (\w+):$", output, flags=re.MULTILINE)
    assert remote_rules == ["generate"] * len(generate_jobs)
    local_rules = set(re.findall(r"^localrule (\w+):$", output, flags=re.MULTILINE))
    assert set(LOCAL_RULES) <= local_rules

    # SLURM logs: .snakemake/slurm_logs/rule_generate/<image>/<jobid>.log
    log_dir = root / ".snakemake" / "slurm_logs"
    logs = sorted(path.relative_to(log_dir) for path in log_dir.rglob("*.log"))
    assert {log.parts[0] for log in logs} == {"rule_generate"}
    assert {log.parts[1] for log in logs} == generate_jobs
    assert {int(log.stem) for log in logs} == job_ids
    assert {Path(path).resolve() for _, path in submissions} == {(log_dir / log).resolve() for log in logs}
    for log in logs:
        text = (log_dir / log).read_text()
        assert "Finished jobid: 0 (Rule: generate)" in text, f"{log}:\n{text[-3000:]}"

    # slurmctld: the run's jobs are these 2 generate jobs, each with one GPU
    # (--gpus=1 shows as TresPerJob=gres:gpu:1, gres/gpu:1 or gres/gpu=1 by
    # SLURM version), all completed.
    run_id = re.search(r"SLURM run ID: (\S+)", output)
    assert run_id, output[:3000]
    jobs = _slurm_jobs(run_id.group(1))
    assert set(jobs) == job_ids
    assert {job["Comment"] for job in jobs.values()} == {
        f"rule_generate_wildcards_{name}" for name in generate_jobs
    }
    for job_id, job in jobs.items():
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", (job_id, job)
        assert re.fullmatch(r"gres[:/]gpu[:=]1", job.get("TresPerJob", "")), (job_id, job)

    # the cluster produced what the local run produced
    for image in IMAGES:
        for condition in CONDITIONS:
            for seed in SEEDS:
                path = f"results/generated/{image}/{condition}/seed{seed}.png"
                pixels = np.asarray(Image.open(root / path))
                assert np.array_equal(pixels, np.asarray(Image.open(local.root / path))), path
    pd.testing.assert_frame_equal(
        pd.read_csv(root / "results/tables/pairs.csv"), pd.read_csv(local.root / "results/tables/pairs.csv")
    )

    # timings (shown with pytest -s)
    spans = sorted(
        (_seconds(job["StartTime"]), _seconds(job["EndTime"]), _seconds(job["SubmitTime"])) for job in jobs.values()
    )
    in_job = [end - begin for begin, end, _ in spans]
    gaps = [later[0] - earlier[1] for earlier, later in zip(spans, spans[1:])]
    print(
        f"\nSLURM run: {cluster_wall:.1f} s wall for {len(jobs)} generate jobs via sbatch "
        f"(local run of the same study: {local_wall:.1f} s) -> "
        f"{(cluster_wall - local_wall) / len(jobs):.1f} s cluster overhead per generate job.\n"
        f"  per SLURM job: {np.mean(in_job):.1f} s from start to end (min {min(in_job):.0f}, max {max(in_job):.0f});"
        f" one GPU, so one job after another, {np.mean(gaps) if gaps else 0:.1f} s from one's end to the next's"
        f" start; first start {spans[0][0] - spans[0][2]:.0f} s after submission"
    )


def test_sharded_generation_loads_once_per_cluster_job(
    slurm_cluster: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With the profile's images_per_generation_job, one sbatch job generates
    every condition of several images and loads the pipeline once."""
    study = Study(tmp_path_factory.mktemp("slurm-sharded"))
    command = [
        sys.executable, "-m", "snakemake", "--profile", "profiles/slurm",
        "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1",
        "--default-resources", *TEST_NODE_RESOURCES,
    ]
    returncode, output, timed_out = _run(command, study.root, RUN_TIMEOUT)
    assert not timed_out and returncode == 0, output[-6000:]
    submissions = re.findall(r"submitted with SLURM jobid (\d+)", output)
    assert len(submissions) == 1  # both images, every condition, in one job
    assert sorted(set(re.findall(r"^rule (\S+):", output, flags=re.MULTILINE))) == ["generate_shard0"]
    # The run's own --default-resources reached the group jobs, as the profile's do.
    run_id = re.search(r"SLURM run ID: (\S+)", output)
    assert run_id, output[:3000]
    jobs = _slurm_jobs(run_id.group(1))
    assert len(jobs) == 1
    for job in jobs.values():
        assert (job["MinMemoryNode"], job["TimeLimit"]) == ("1000M", "00:10:00"), job
    log = (study.root / "logs/generate/shard0.log").read_text()
    assert log.count("pipeline: loaded") == 1
    assert log.count(f" {len(CONDITIONS) * len(SEEDS)} images in ") == len(IMAGES)
    assert (study.root / "results/tables/summary.csv").is_file()
