"""The workflow end to end through the real ``snakemake`` command line, on a
reduced study (2 images x (baseline + 3 prompts) x 2 seeds, 64 px, 2 steps)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import Study, write_test_image

pytestmark = pytest.mark.workflow

IMAGES = ["square", "blocks"]
PROMPTS = ["good", "best", "bad"]
SEEDS = [0, 1]


def test_every_output_exists(finished_study: Study) -> None:
    root = finished_study.root
    expected = [
        "results/tables/pairs.csv", "results/tables/summary.csv", "results/tables/summary.md",
        "results/tables/summary.tex", "results/tables/trend.csv", "results/tables/trend.tex",
        "results/plots/ssim_by_prompt.png", "results/plots/ssim_by_prompt.svg",
        "results/plots/effect_vs_emphasis.png", "results/plots/heatmap.png",
        *[f"results/edges/{image}.png" for image in IMAGES],
        *[f"results/plots/sheets/{image}.png" for image in IMAGES],
        *[
            f"results/generated/{image}/{condition}/seed{seed}.{suffix}"
            for image in IMAGES for condition in ["baseline", *PROMPTS]
            for seed in SEEDS for suffix in ("png", "json")
        ],
        *[f"results/pair_metrics/{image}/{prompt}.tsv" for image in IMAGES for prompt in PROMPTS],
    ]
    missing = [path for path in expected if not (root / path).is_file()]
    assert missing == []


def test_pairs_table_has_one_row_per_image_prompt_seed(finished_study: Study) -> None:
    pairs = pd.read_csv(finished_study.root / "results/tables/pairs.csv")
    assert len(pairs) == len(IMAGES) * len(PROMPTS) * len(SEEDS)
    for column in ["image_id", "prompt_id", "kind", "emphasis", "seed", "ssim", "baseline_path", "variant_path"]:
        assert column in pairs.columns
    assert pairs["ssim"].between(-1, 1).all()
    assert set(pairs.loc[pairs.prompt_id == "bad", "kind"]) == {"negative"}
    for row in pairs.itertuples():
        assert f"/baseline/seed{row.seed}.png" in row.baseline_path
        assert f"/{row.prompt_id}/seed{row.seed}.png" in row.variant_path
        assert (finished_study.root / row.variant_path).is_file()


def test_summary_has_one_row_per_prompt_and_says_tiny(finished_study: Study) -> None:
    summary = pd.read_csv(finished_study.root / "results/tables/summary.csv")
    assert list(summary["prompt_id"]) == PROMPTS
    assert list(summary["n"]) == [len(IMAGES) * len(SEEDS)] * len(PROMPTS)
    for column in ["prompt_id", "kind", "emphasis", "text", "n", "ssim_mean", "ssim_std"]:
        assert column in summary.columns
    assert "tiny random model" in (finished_study.root / "results/tables/summary.md").read_text().lower()


def test_provenance_record_beside_every_image(finished_study: Study) -> None:
    record = json.loads(
        (finished_study.root / "results/generated/square/bad/seed1.json").read_text()
    )
    assert record["seed"] == 1
    assert record["prompt"] == "thing"
    assert record["negative_prompt"] == "bad"
    assert record["generation"]["steps"] == 2
    assert record["valid"] is True
    assert record["packages"]["torch"] and record["packages"]["diffusers"]
    assert record["dtype"] == "float32"
    assert set(record["model"]["base"]["sha256"]) >= {"unet/diffusion_pytorch_model.safetensors"}
    positive = json.loads(
        (finished_study.root / "results/generated/square/best/seed0.json").read_text()
    )
    assert positive["prompt"] == "thing, best quality" and positive["negative_prompt"] == ""


def test_pipeline_is_loaded_once_per_run(finished_study: Study) -> None:
    logs = sorted((finished_study.root / "logs/generate").rglob("*.log"))
    assert len(logs) == len(IMAGES)  # one generate job per image, every condition in it
    loads = [log for log in logs if "pipeline: loaded" in log.read_text()]
    reuses = [log for log in logs if "pipeline: reused" in log.read_text()]
    assert len(loads) == 1
    assert len(reuses) == len(logs) - 1


def test_second_run_does_nothing(finished_study: Study) -> None:
    assert finished_study.planned_jobs() == {}


def test_a_run_without_the_latent_search_does_not_warn_about_its_rules(finished_study: Study) -> None:
    result = finished_study.snakemake("--dry-run")
    assert "not present in the Snakefile" not in result.stdout + result.stderr


def planned_after_edit(study: Study, relative_path: str, old: str, new: str) -> dict[str, int]:
    """The jobs a run would do after replacing ``old`` by ``new`` in one file;
    the file is restored afterwards."""
    path = study.root / relative_path
    original = path.read_text()
    assert old in original
    path.write_text(original.replace(old, new))
    try:
        return study.planned_jobs()
    finally:
        path.write_text(original)


def test_changing_one_prompt_reruns_its_images_jobs(finished_study: Study) -> None:
    planned = planned_after_edit(finished_study, "config/prompts.tsv", "\tbest quality", "\tbest quality, sharp")
    assert planned["generate"] == len(IMAGES)  # each regenerates only "best": see the next test
    assert "edge_map" not in planned and "model_weights" not in planned
    assert planned["pairs_table"] == 1 and planned["summary_tables"] == 1


def generated_files(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every generated image and record under ``folder``: its inode (a rewrite
    makes a new one) and its bytes."""
    return {
        str(path.relative_to(folder)): (path.stat().st_ino, path.read_bytes())
        for path in sorted(folder.rglob("*.*"))
        if path.name != ".snakemake_timestamp"
    }


def test_a_changed_prompt_rewrites_only_its_own_images(study: Study) -> None:
    study.snakemake()
    before = generated_files(study.root / "results/generated")
    prompts = study.root / "config/prompts.tsv"
    prompts.write_text(prompts.read_text().replace("\tbest quality", "\tbest quality, sharp"))
    study.snakemake()
    after = generated_files(study.root / "results/generated")
    assert after.keys() == before.keys()
    rewritten = {path for path in after if after[path][0] != before[path][0]}
    assert rewritten == {
        f"{image}/best/seed{seed}.{suffix}"
        for image in IMAGES for seed in SEEDS for suffix in ("png", "json")
    }
    unchanged = [path for path in after if path not in rewritten and after[path] != before[path]]
    assert unchanged == []
    assert all(after[path][1] != before[path][1] for path in rewritten if path.endswith(".png"))
    # The pairs of the other prompts, and the noise floor, are kept as they are.
    for image in IMAGES:
        log = (study.root / f"logs/pair_metrics/{image}.log").read_text()
        assert [prompt for prompt in PROMPTS if f"{prompt}: inputs unchanged, kept" in log] == ["good", "bad"]
    assert "kept" in (study.root / "logs/noise_floor/square.log").read_text()
    log = (study.root / "logs/generate/square.log").read_text()
    total = (1 + len(PROMPTS)) * len(SEEDS)
    assert f"square: {total - len(SEEDS)} of {total} images up to date" in log
    assert f"square: {len(SEEDS)} images in" in log


def test_adding_an_image_runs_only_its_jobs(finished_study: Study) -> None:
    root = finished_study.root
    write_test_image(root / "resources/extra.png", 7)
    planned = planned_after_edit(
        finished_study, "config/images.tsv", "blocks\tresources/blocks.png\tthing\n",
        "blocks\tresources/blocks.png\tthing\nextra\tresources/extra.png\tthing\n",
    )
    assert planned["edge_map"] == 1
    assert planned["generate"] == 1
    assert planned["pair_metrics"] == 1
    assert planned["noise_floor"] == 1 and planned["contact_sheet"] == 1


def test_changing_a_generation_setting_reruns_generation(finished_study: Study) -> None:
    planned = planned_after_edit(finished_study, "config/config.yaml", "steps: 2", "steps: 3")
    assert planned["generate"] == len(IMAGES)
    assert "edge_map" not in planned


def test_changing_the_model_reruns_generation(finished_study: Study) -> None:
    planned = planned_after_edit(finished_study, "config/config.yaml", "name: tiny (random weights)", "name: tiny, renamed")
    assert planned["model_weights"] == 1
    assert planned["generate"] == len(IMAGES)


def test_changing_canny_thresholds_reruns_edges(finished_study: Study) -> None:
    planned = planned_after_edit(finished_study, "config/config.yaml", "  steps: 2", "  steps: 2\n  canny_low: 50")
    assert planned["edge_map"] == len(IMAGES)
    assert planned["generate"] == len(IMAGES)


def test_deleted_result_is_rebuilt(finished_study: Study) -> None:
    target = finished_study.root / "results/pair_metrics/blocks/good.tsv"
    target.unlink()
    planned = finished_study.planned_jobs()
    assert planned["pair_metrics"] == 1 and "generate" not in planned
    finished_study.snakemake()
    assert target.is_file()


def test_image_edited_or_deleted_by_hand_is_detected_then_rebuilt(finished_study: Study) -> None:
    folder = finished_study.root / "results/generated/square"
    image = folder / "good/seed0.png"
    original = image.read_bytes()
    time.sleep(0.05)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    result = finished_study.snakemake("--dry-run", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "results/generated/square/good/seed0.png was changed after it was generated" in output
    assert "Run again with --forcerun results/generated/square to regenerate exactly those images" in output
    image.unlink()
    result = finished_study.snakemake("--dry-run", check=False)
    assert result.returncode != 0
    assert "results/generated/square/good/seed0.png is missing" in result.stdout + result.stderr
    image.with_suffix(".json").unlink()
    result = finished_study.snakemake("--dry-run", check=False)
    assert result.returncode != 0
    assert "results/generated/square/good/seed0.png and its record were deleted" in result.stdout + result.stderr
    others = {path: path.stat().st_mtime_ns for path in finished_study.root.glob("results/generated/*/*/*.png")}
    forced = finished_study.snakemake("--dry-run", "--quiet", "rules", "--forcerun", "results/generated/square/").stdout
    assert re.search(r"^generate\s+1$", forced, re.MULTILINE)
    finished_study.snakemake("--forcerun", "results/generated/square/")
    assert image.read_bytes() == original  # regenerated bit-identically from the same seed
    assert {path: path.stat().st_mtime_ns for path in others} == others  # no other image rewritten
    assert finished_study.planned_jobs() == {}


def test_report_has_every_entry_and_the_gallery(finished_study: Study) -> None:
    import zipfile

    finished_study.snakemake("--report", "results/report.zip")
    with zipfile.ZipFile(finished_study.root / "results/report.zip") as archive:
        names = archive.namelist()
        html = archive.read(next(name for name in names if name.endswith("report.html"))).decode()
    for entry in [
        "ssim_by_prompt.png", "effect_vs_emphasis.png", "heatmap.png", "quality_forest.png",
        "change_vs_gain.png", "pairs.csv", "summary.csv", "summary.tex", "trend.csv", "verdict.md",
        "quality_summary.csv", "power.csv", "power.png", "square.png", "blocks.png", "Contact sheets", "Tables",
        "Plots", "Gallery",
    ]:
        assert entry in html, entry
    # The gallery folder travels inside the archive, under the report's data.
    gallery_files = {Path(name).name for name in names if "/data/raw/" in name}
    assert {"index.html", "data.js", "gallery.js", "gallery.css"} <= gallery_files


def test_generation_goes_first_when_a_core_frees_up(finished_study: Study) -> None:
    """Generate jobs have priority: when an image's generation ends, the next
    generate job takes one of the freed cores (--cores 2) at once, rather than
    waiting for that image's analysis jobs, which are ready at the same time."""
    first_run = min((finished_study.root / ".snakemake/log").glob("*.snakemake.log"))
    events = re.findall(
        r"^(?:localrule (\w+):|Finished jobid: \d+ \(Rule: (\w+)\))", first_run.read_text(), re.MULTILINE
    )
    after_first_generation = events[events.index(("", "generate")) + 1 :]
    started_before_any_finished = list(
        itertools.takewhile(bool, (started for started, _ in after_first_generation))
    )
    assert "generate" in started_before_any_finished


def test_several_images_per_generation_job(study: Study) -> None:
    """Sharded generation: one job per shard of images, every condition in it,
    and the pipeline loaded once per job."""
    config = study.root / "config/config.yaml"
    config.write_text(config.read_text() + "images_per_generation_job: 2\n")
    assert study.planned_jobs()["generate_shard0"] == 1
    study.snakemake()
    assert len(list((study.root / "results/generated").rglob("*.png"))) == len(IMAGES) * (1 + len(PROMPTS)) * len(SEEDS)
    logs = sorted((study.root / "logs/generate").rglob("*.log"))
    assert sum("pipeline: loaded" in log.read_text() for log in logs) == 1
    planned = planned_after_edit(study, "config/prompts.tsv", "\tbest quality", "\tbest quality, sharp")
    assert planned["generate_shard0"] == 1
