"""Which thread runs a job's heavy work."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from promptsweep.threads import computed_alone, on_compute_thread, on_device_thread


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
