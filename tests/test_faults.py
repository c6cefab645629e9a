"""Faults: a killed run resumes, missing weights stop before generation, out of
GPU memory names the remedies, invalid images are excluded and counted; and
the generation job's batches, written as they come."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import Study, killed_while_writing
from promptsweep import files, generation, models
from promptsweep.jobs import generate as generate_jobs
from promptsweep.jobs import metrics as metric_jobs


def test_killed_run_resumes_and_leaves_no_truncated_file(study: Study) -> None:
    study.root.joinpath("config/config.yaml").write_text(
        study.root.joinpath("config/config.yaml").read_text().replace("steps: 2", "steps: 6")
    )
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--resources", "gpu=1"]
    run = subprocess.Popen(command, cwd=study.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    generated = study.root / "results/generated"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(generated.rglob("*.png"))) < 4:
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    finished_before = len(list(generated.rglob("*.png")))
    assert 0 < finished_before < 16, "the kill must land during generation"

    study.snakemake("--unlock")
    study.snakemake()
    images = sorted(generated.rglob("*.png"))
    assert len(images) == 16
    for path in images:
        with Image.open(path) as picture:
            picture.load()  # raises on a truncated file
    assert not list(study.root.joinpath("results").rglob(".*.png")), "temporary files left behind"
    assert pd.read_csv(study.root / "results/tables/pairs.csv").shape[0] == 12


def test_an_unknown_model_family_stops_before_any_job(study: Study) -> None:
    config = study.root / "config/config.yaml"
    config.write_text(config.read_text().replace("  source: tiny\n", "  source: tiny\n  family: sd99\n"))
    result = study.snakemake("--dry-run", check=False)
    assert result.returncode != 0
    assert "model.family: unknown model family 'sd99'; set it to one of" in result.stderr + result.stdout


def test_missing_weights_stop_before_any_generation(study: Study) -> None:
    config = study.root / "config/config.yaml"
    config.write_text(
        config.read_text().replace(
            "  source: tiny\n",
            "  source: pretrained\n  base:\n    id: ./weights/sd15\n  controlnet:\n    id: ./weights/canny\n",
        )
    )
    result = study.snakemake("--keep-going", check=False)
    assert result.returncode != 0
    assert "base model directory './weights/sd15' does not exist" in result.stderr + result.stdout
    assert not (study.root / "results/generated").exists()
    assert (study.root / "results/edges/square.png").exists()  # other work still ran


def write_weights(path: Path, tiny: Path) -> None:
    files.write_json(path, {
        "name": "tiny", "source": "tiny", "family": "sd15", "pipeline_class": "StableDiffusionControlNetPipeline",
        "base": models.resolve_weights(models.ModelSource(str(tiny / "base")), [], "base").as_record(),
        "controlnet": models.resolve_weights(models.ModelSource(str(tiny / "controlnet")), [], "c").as_record(),
    })


def request(on_invalid: str = "fail") -> dict:
    return {
        "image_id": "square", "condition": "bad", "prompt": "thing", "negative_prompt": "bad",
        "seeds": [0, 1],
        "generation": {"steps": 2, "guidance_scale": 9.0, "controlnet_scale": 1.0,
                       "scheduler": "unipc", "eta": 0.0, "guess_mode": False},
        "runtime": {"device": "cpu", "dtype": "auto", "batch_size": "auto", "on_invalid_image": on_invalid,
                    "safety_checker": False, "attention_slicing": False, "cpu_offload": False, "compile": False},
    }


def generation_files(tmp_path: Path, tiny: Path) -> dict:
    write_weights(tmp_path / "weights.json", tiny)
    files.write_png(tmp_path / "edges.png", np.pad(np.full((8, 8), 255, np.uint8), 28))
    return {
        "edge_maps": [str(tmp_path / "edges.png")],
        "weights": str(tmp_path / "weights.json"),
        "images": [{"bad": [str(tmp_path / f"seed{seed}.png") for seed in (0, 1)]}],
        "records": [{"bad": [str(tmp_path / f"seed{seed}.json") for seed in (0, 1)]}],
        "log": str(tmp_path / "job.log"),
    }


def test_out_of_memory_names_the_remedies(tmp_path: Path, tiny: Path, monkeypatch) -> None:
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(generation, "generate_batch", out_of_memory)
    with pytest.raises(generate_jobs.GenerationError) as error:
        generate_jobs.generate(**generation_files(tmp_path, tiny), requests=[{"bad": request()}])
    message = str(error.value)
    assert "square: out of GPU memory" in message
    for remedy in ("batch_size", "attention_slicing", "cpu_offload"):
        assert remedy in message
    assert not (tmp_path / "seed0.png").exists()


def test_a_job_stopped_while_regenerating_leaves_its_folder_unfinished(tmp_path: Path, tiny: Path, monkeypatch) -> None:
    """A killed job cannot be restored by Snakemake: its folder must then read
    as unfinished (its job runs again), not as images changed by hand."""
    generate_jobs.generate(**generation_files(tmp_path, tiny), requests=[{"bad": request()}], folders=[str(tmp_path)])
    (tmp_path / generate_jobs.FINISHED_MARK).touch()
    names = ["seed0.png", "seed1.png"]
    (tmp_path / "seed1.png").unlink()
    assert generate_jobs.folder_problems(tmp_path, names, generate_jobs.FINISHED_MARK) != []

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # what a kill leaves behind, without the kill

    monkeypatch.setattr(generation, "generate_batch", stopped)
    with pytest.raises(KeyboardInterrupt):
        generate_jobs.generate(**generation_files(tmp_path, tiny), requests=[{"bad": request()}], folders=[str(tmp_path)])
    assert generate_jobs.folder_problems(tmp_path, names, generate_jobs.FINISHED_MARK) == []


def test_a_regenerating_job_removes_what_a_killed_write_left(tmp_path: Path, tiny: Path) -> None:
    generate_jobs.generate(**generation_files(tmp_path, tiny), requests=[{"bad": request()}], folders=[str(tmp_path)])
    (tmp_path / "seed1.png").unlink()
    (tmp_path / "seed1.json").unlink()
    killed_while_writing(tmp_path / "seed1.png")
    killed_while_writing(tmp_path / "seed1.json")
    left = sorted(path.name for path in tmp_path.glob(".seed1.*"))
    assert len(left) == 2
    # Look alike, but no temporary of this job's files: kept.
    kept = {".notes.0123456789ab", ".seed0.png.0123456789ab.json", ".other.png.0123456789ab.png"}
    for name in kept:
        (tmp_path / name).write_text("not the job's")
    before = {path: path.stat().st_mtime_ns for path in tmp_path.iterdir()}

    generate_jobs.generate(**generation_files(tmp_path, tiny), requests=[{"bad": request()}], folders=[str(tmp_path)])
    assert not list(tmp_path.glob(".seed1.*"))
    assert {path.name for path in tmp_path.glob(".*")} == kept | {generate_jobs.GENERATED_LIST}
    assert (tmp_path / "seed1.png").exists()
    assert (tmp_path / "seed0.png").stat().st_mtime_ns == before[tmp_path / "seed0.png"]
    log = (tmp_path / "job.log").read_text()
    assert all(f"removed {tmp_path / name}" in log for name in left)


def constant_images(family, pipeline, control, items, settings, batch_size):
    from promptsweep.generation import GeneratedImage

    return [GeneratedImage(item.seed, np.zeros((64, 64, 3), np.uint8), "constant image") for item in items]


def test_invalid_images_fail_the_job_by_default(tmp_path: Path, tiny: Path, monkeypatch) -> None:
    monkeypatch.setattr(generation, "generate_batch", constant_images)
    with pytest.raises(generate_jobs.GenerationError, match="on_invalid_image: exclude"):
        generate_jobs.generate(**generation_files(tmp_path, tiny), requests=[{"bad": request("fail")}])
    assert not (tmp_path / "seed0.png").exists()


def one_image_per_batch(on_invalid: str = "fail") -> dict:
    one_per_batch = request(on_invalid)
    one_per_batch["runtime"]["batch_size"] = 1
    return one_per_batch


def test_an_invalid_image_fails_the_job_before_its_batch_is_written(tmp_path: Path, tiny: Path, monkeypatch) -> None:
    def second_seed_constant(family, pipeline, control, items, settings, batch_size):
        return [
            generation.GeneratedImage(item.seed, np.full((64, 64, 3), 40 + item.seed, np.uint8),
                                      "constant image" if item.seed == 1 else None)
            for item in items
        ]

    monkeypatch.setattr(generation, "generate_batch", second_seed_constant)
    paths = generation_files(tmp_path, tiny)
    with pytest.raises(generate_jobs.GenerationError, match="seed 1: constant image"):
        generate_jobs.generate(**paths, requests=[{"bad": one_image_per_batch()}])
    # Seed 0's batch came first and was valid: it was written, with its record.
    assert files.read_json(tmp_path / "seed0.json")["sha256"] == files.file_sha256(tmp_path / "seed0.png")
    assert not (tmp_path / "seed1.png").exists() and not (tmp_path / "seed1.json").exists()


def test_a_batch_is_written_while_the_next_one_generates(tmp_path: Path, tiny: Path, monkeypatch) -> None:
    """The device is not left waiting for the files of the batch before."""
    first_written: list[bool] = []

    def waits_for_the_first_image(family, pipeline, control, items, settings, batch_size):
        if items[0].seed == 1:
            deadline = time.monotonic() + 5
            while not (tmp_path / "seed0.json").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            first_written.append((tmp_path / "seed0.json").exists())
        return [generation.GeneratedImage(item.seed, np.full((64, 64, 3), 40 + item.seed, np.uint8), None)
                for item in items]

    monkeypatch.setattr(generation, "generate_batch", waits_for_the_first_image)
    generate_jobs.generate(**generation_files(tmp_path, tiny), requests=[{"bad": one_image_per_batch()}])
    assert first_written == [True]
    assert files.read_json(tmp_path / "seed1.json")["images_in_batch"] == 1
    assert "square: 2 images in" in (tmp_path / "job.log").read_text()


def test_excluded_images_are_recorded_and_left_out_of_metrics(tmp_path: Path, tiny: Path, monkeypatch) -> None:
    monkeypatch.setattr(generation, "generate_batch", constant_images)
    paths = generation_files(tmp_path, tiny)
    generate_jobs.generate(**paths, requests=[{"bad": request("exclude")}])
    record = files.read_json(Path(paths["records"][0]["bad"][0]))
    assert record["valid"] is False and record["problem"] == "constant image"

    baseline = tmp_path / "baseline"
    for seed in (0, 1):
        files.write_png(baseline / f"seed{seed}.png", np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        files.write_json(
            baseline / f"seed{seed}.json",
            {"valid": True, "problem": None, "sha256": files.file_sha256(baseline / f"seed{seed}.png")},
        )
    metric_jobs.pair_metrics(
        image_id="square", prompts=["bad"], seeds=[0, 1],
        baselines=[str(baseline / f"seed{seed}.png") for seed in (0, 1)],
        baseline_records=[str(baseline / f"seed{seed}.json") for seed in (0, 1)],
        variants=paths["images"][0], variant_records=paths["records"][0], weights=[],
        settings={"lpips": {"network": "alex", "backbone": None, "linear": None}},
        outputs=[str(tmp_path / "pairs.tsv")], ssim_maps=[str(tmp_path / f"map{seed}.png") for seed in (0, 1)],
        log=str(tmp_path / "compare.log"),
    )
    table = pd.read_csv(tmp_path / "pairs.tsv", sep="\t")
    assert table[["ssim", "ms_ssim", "psnr", "lpips"]].isna().all().all()
    assert (table["excluded"] == "variant: constant image").all()
