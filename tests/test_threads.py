"""Which thread runs a job's heavy work."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from promptsweep import quality, registry
from promptsweep.threads import (
    computed_alone,
    map_measure,
    metric_process_count,
    on_compute_thread,
    on_device_thread,
    use_metric_processes,
)


def thread_name() -> str:
    return threading.current_thread().name


def test_cpu_model_work_shares_the_compute_thread_and_gpu_work_has_its_own() -> None:
    compute = on_compute_thread(thread_name)
    assert compute.startswith("promptsweep-compute")
    assert on_device_thread("cpu", thread_name) == compute
    accelerator = on_device_thread("cuda", thread_name)
    assert accelerator.startswith("promptsweep-accelerator")
    assert on_device_thread("cuda:1", thread_name) == accelerator


def test_jobs_computed_alone_run_one_at_a_time() -> None:
    running, overlaps = [0], []
    lock = threading.Lock()

    @computed_alone
    def job() -> str:
        with lock:
            running[0] += 1
            overlaps.append(running[0])
        threading.Event().wait(0.01)
        with lock:
            running[0] -= 1
        return thread_name()

    with ThreadPoolExecutor(max_workers=4) as pool:
        names = list(pool.map(lambda _: job(), range(8)))
    assert max(overlaps) == 1
    assert {name.split("_")[0] for name in names} == {"promptsweep-compute"}


def test_nested_calls_do_not_deadlock() -> None:
    assert on_compute_thread(on_compute_thread, thread_name).startswith("promptsweep-compute")
    assert on_device_thread("cuda", on_device_thread, "cuda", thread_name).startswith("promptsweep-accelerator")


def process_id(_sample: object) -> int:
    return os.getpid()


def test_measures_in_metric_processes_equal_those_made_here(metric_processes: None) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(5)]
    expected = [quality.brisque(image) for image in images]
    # Equal up to the last bits of a float64 (a sum's order in SciPy's code).
    np.testing.assert_allclose(map_measure(quality.brisque, images), expected, rtol=1e-12)
    workers = set(map_measure(process_id, list(range(8))))
    assert os.getpid() not in workers and 1 <= len(workers) <= 2
    # What a worker cannot import by name is computed here.
    assert set(map_measure(lambda sample: os.getpid(), list(range(4)))) == {os.getpid()}


def ssim_already_computed(pair: registry.ImagePair) -> float:
    """1 where this pair object's SSIM statistics were computed before this call."""
    return float("ssim_and_ms_ssim" in vars(pair))


def pid_of_worker(_sample: object) -> float:
    return float(os.getpid())


def test_per_sample_metrics_share_one_pass_in_metric_processes(metric_processes: None) -> None:
    """A worker gets each pair once for every per-sample metric, so SSIM and
    MS-SSIM come from one computation of the pair's statistics."""
    rng = np.random.default_rng(1)
    pairs = [
        registry.ImagePair(*(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))) for _ in range(4)
    ]
    loaded = registry.LoadedMetrics(
        metrics=[
            registry.METRICS["ssim"], registry.METRICS["ms_ssim"],
            registry.Metric("shared", "pair", "shared", "", "higher is closer", "change",
                            registry.each(ssim_already_computed)),
            registry.Metric("pid", "pair", "pid", "", "higher is closer", "change", registry.each(pid_of_worker)),
        ],
        models={}, notes={}, warnings=[],
    )
    values = loaded.score(pairs)
    assert values["shared"] == [1.0] * len(pairs)
    assert os.getpid() not in values["pid"]
    expected = [registry.ImagePair(pair.baseline, pair.variant).ssim_and_ms_ssim for pair in pairs]
    assert values["ssim"] == [ssim for ssim, _ in expected]
    assert values["ms_ssim"] == [ms_ssim for _, ms_ssim in expected]


def test_without_metric_processes_measures_run_here() -> None:
    use_metric_processes(0, "cpu", 4)
    assert set(map_measure(process_id, list(range(4)))) == {os.getpid()}
    # Measures have run without processes; the setting can still change.
    use_metric_processes(2, "cpu", 2)
    try:
        assert os.getpid() not in set(map_measure(process_id, list(range(4))))
    finally:
        use_metric_processes(0, "cpu", 1)


def test_auto_metric_processes_leave_a_cpu_model_its_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert metric_process_count("auto", "cpu", 16) == 0
    # On a GPU: one fewer than the workflow's cores, at most the machine's.
    assert metric_process_count("auto", "cuda", 4) == 3
    assert metric_process_count("auto", "cuda:1", 64) == 15
    assert metric_process_count("auto", "cuda", 1) == 0
    assert metric_process_count(5, "cpu", 2) == 5


def test_resolving_the_device_and_loading_learned_metrics_do_not_import_the_model_code(tmp_path: Path) -> None:
    """Only the model code imports diffusers: its lazy modules fail ("cannot
    import name") when another thread imports them at the same time, as the
    compute thread did when the first metric job resolved runtime.device."""
    for name in ("backbone.pth", "linear.pth"):
        (tmp_path / name).write_bytes(b"")  # not checkpoints: the loader runs, then reports them
    script = (
        "import sys\n"
        "from promptsweep import registry, threads\n"
        "threads.metric_process_count('auto', 'auto', 4)\n"
        "loaded = registry.load_metrics('pair', {'lpips': {'network': 'alex',"
        f" 'backbone': {str(tmp_path / 'backbone.pth')!r}, 'linear': {str(tmp_path / 'linear.pth')!r}}}}})\n"
        "print(loaded.warnings[0].split(':')[0], 'diffusers' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "LPIPS not computed False"
