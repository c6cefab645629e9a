"""Learned metrics from local weights only: CLIP score and LPIPS, and the
"not computed" reasons when weights are absent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clip_weights import write_tiny_clip
from conftest import REPO, Study
from lpips_weights import reference_image_pairs, write_lpips_weights
from promptsweep import learned, registry


@pytest.fixture(scope="module")
def clip_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("clip")
    write_tiny_clip(directory)
    return directory


def test_clip_score_is_the_clamped_scaled_cosine(clip_directory: Path) -> None:
    clip = learned.load_clip(str(clip_directory))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    texts = ["cat", "cat, best quality", "a dog"]
    scores = learned.clip_scores(clip, images, texts)
    inputs = clip.processor(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.inference_mode():
        outputs = clip.model(**inputs)
    image_unit = outputs.image_embeds / outputs.image_embeds.norm(dim=-1, keepdim=True)
    text_unit = outputs.text_embeds / outputs.text_embeds.norm(dim=-1, keepdim=True)
    expected = (100 * (image_unit * text_unit).sum(-1)).clamp(min=0)
    assert scores == pytest.approx(expected.tolist(), abs=1e-4)
    assert all(0 <= score <= 100 for score in scores)
    assert learned.clip_scores(clip, images[:1], texts[:1]) == pytest.approx(scores[:1], abs=1e-4)


def test_absent_clip_weights_raise_without_download(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError):
        learned.load_clip(str(tmp_path / "no-such-clip"))


def with_clip_model(study: Study, clip_model: str) -> None:
    config = study.root / "config/config.yaml"
    config.write_text(config.read_text() + f"metrics:\n  clip_model: {clip_model}\n")


def test_workflow_scores_clip_when_weights_are_local(study: Study, clip_directory: Path) -> None:
    with_clip_model(study, str(clip_directory))
    study.snakemake()
    pairs = pd.read_csv(study.root / "results/tables/pairs.csv")
    assert pairs[["clip_score_baseline", "clip_score_variant"]].notna().all().all()
    summary = (study.root / "results/tables/summary.md").read_text()
    assert "CLIP score not computed" not in summary
    assert "LPIPS not computed: metrics.lpips.backbone and metrics.lpips.linear are not set" in summary
    # Unset is the quiet default: the job logs do not repeat it.
    assert "LPIPS" not in (study.root / "logs/pair_metrics/square.log").read_text()


def test_workflow_marks_clip_not_computed_with_reason(study: Study, tmp_path: Path) -> None:
    missing = tmp_path / "missing-clip"
    with_clip_model(study, str(missing))
    study.snakemake()
    pairs = pd.read_csv(study.root / "results/tables/pairs.csv")
    assert pairs["clip_score_variant"].isna().all()
    summary = (study.root / "results/tables/summary.md").read_text()
    assert f"CLIP score not computed: '{missing}' is not on this machine" in summary


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("lpips")
    return {network: write_lpips_weights(directory, network) for network in learned.LPIPS_NETWORKS}


@pytest.mark.parametrize("network", learned.LPIPS_NETWORKS)
def test_lpips_equals_the_lpips_package(network: str, lpips_files) -> None:
    """Same weights, same images: the distances the lpips package computed
    (tests/reference/lpips_reference.py) to float32 precision."""
    reference = json.loads((REPO / "tests/reference/lpips_reference.json").read_text())
    backbone, linear = lpips_files[network]
    lpips = learned.load_lpips(network, str(backbone), str(linear))
    pairs = reference_image_pairs()
    distances = learned.lpips_distances(lpips, [a for a, _ in pairs], [b for _, b in pairs])
    assert distances == pytest.approx(reference["distances"][network], rel=1e-5, abs=1e-7)


def test_lpips_is_zero_for_identical_images_and_symmetric(lpips_files) -> None:
    lpips = learned.load_lpips("alex", *map(str, lpips_files["alex"]))
    rng = np.random.default_rng(1)
    image_a, image_b = (rng.integers(0, 256, (80, 72, 3), dtype=np.uint8) for _ in range(2))
    same, forward, backward = learned.lpips_distances(lpips, [image_a, image_a, image_b], [image_a, image_b, image_a])
    assert same == 0.0
    assert forward > 0.0
    assert backward == pytest.approx(forward, rel=1e-6)


def test_missing_lpips_file_raises_naming_it(tmp_path: Path, lpips_files) -> None:
    backbone, _ = lpips_files["alex"]
    missing = tmp_path / "alex.pth"
    with pytest.raises(FileNotFoundError, match=f"LPIPS alex linear layers {missing} is not on this machine"):
        learned.load_lpips("alex", str(backbone), str(missing))


def test_lpips_files_of_another_network_are_rejected(lpips_files) -> None:
    alex_backbone, alex_linear = lpips_files["alex"]
    vgg_backbone, _ = lpips_files["vgg"]
    with pytest.raises(learned.WeightsError, match=r"'features.0.weight' has shape \(64, 3, 11, 11\), not \(64, 3, 3, 3\)"):
        learned.load_lpips("vgg", str(alex_backbone), str(alex_linear))
    with pytest.raises(learned.WeightsError, match=r"'lin1.model.1.weight' has shape \(1, 192, 1, 1\), not \(1, 128, 1, 1\).*vgg.pth"):
        learned.load_lpips("vgg", str(vgg_backbone), str(alex_linear))


def test_lpips_file_that_is_not_a_checkpoint_is_rejected(tmp_path: Path, lpips_files) -> None:
    not_weights = tmp_path / "alex.pth"
    not_weights.write_text("<html>404</html>")
    with pytest.raises(learned.WeightsError, match="is not a PyTorch checkpoint"):
        learned.load_lpips("alex", str(lpips_files["alex"][0]), str(not_weights))


def test_lpips_directory_empty_file_and_pickled_model_are_named(tmp_path: Path, lpips_files) -> None:
    backbone = str(lpips_files["alex"][0])
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    pickled = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)
    for linear, message in [
        (tmp_path, f"{tmp_path} is not a file"),
        (empty, f"{empty} is not a PyTorch checkpoint"),
        (pickled, "holds pickled Python objects, not only tensors; only a state dict is loaded"),
    ]:
        with pytest.raises(learned.WeightsError, match=message) as error:
            learned.load_lpips("alex", backbone, str(linear))
        assert "\n" not in str(error.value)


def settings(backbone: Path | str | None, linear: Path | str | None) -> dict:
    return {"network": "alex", "backbone": backbone and str(backbone), "linear": linear and str(linear)}


def lpips_or_reason(lpips_settings: dict) -> tuple[object, str, list[str]]:
    loaded = registry.load_metrics("pair", {"lpips": lpips_settings})
    return loaded.models.get("lpips"), loaded.notes.get("lpips", ""), loaded.warnings


def test_lpips_or_reason_names_what_to_set_or_fix(tmp_path: Path, lpips_files) -> None:
    backbone, linear = lpips_files["alex"]
    lpips, reason, warnings = lpips_or_reason(settings(None, None))
    assert lpips is None and warnings == []  # left unset: the quiet default
    assert reason.startswith("LPIPS not computed: metrics.lpips.backbone and metrics.lpips.linear are not set")
    assert "metrics.lpips.linear is not set" in lpips_or_reason(settings(backbone, None))[1]
    missing = tmp_path / "alex.pth"
    lpips, reason, warnings = lpips_or_reason(settings(backbone, missing))
    assert lpips is None
    assert reason == (
        f"LPIPS not computed: LPIPS alex linear layers {missing} is not on this machine; "
        "correct metrics.lpips in your config"
    )
    assert warnings == [reason]
    lpips, reason, _ = lpips_or_reason(settings(backbone, linear))
    assert isinstance(lpips, learned.Lpips) and reason == ""


def test_lpips_paths_expand_the_home_directory(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    paths = learned.lpips_weight_paths(settings("~/alex.pth", None))
    assert paths == {"backbone": tmp_path / "alex.pth"}


def test_workflow_scores_lpips_once_its_weights_appear(study: Study, tmp_path: Path) -> None:
    """Named but absent weights: LPIPS is NaN with the reason; once the files
    are there, only the comparisons rerun, and every pair and seed pair has LPIPS."""
    weights = tmp_path / "weights"
    backbone, linear = weights / "alex-backbone.pth", weights / "alex-linear.pth"
    config = study.root / "config/config.yaml"
    config.write_text(config.read_text() + f"metrics:\n  lpips:\n    backbone: {backbone}\n    linear: {linear}\n")
    study.snakemake()
    pairs = pd.read_csv(study.root / "results/tables/pairs.csv")
    assert pairs["lpips"].isna().all()
    summary = (study.root / "results/tables/summary.md").read_text()
    assert f"LPIPS not computed: LPIPS alex backbone {backbone} is not on this machine" in summary
    for log in ("logs/pair_metrics/square.log", "logs/noise_floor/square.log"):
        assert "LPIPS not computed" in (study.root / log).read_text(), log

    write_lpips_weights(weights, "alex")
    planned = study.planned_jobs()
    assert planned["pair_metrics"] == 2  # one job per image
    assert planned["noise_floor"] == 2
    assert "generate" not in planned
    study.snakemake()
    pairs = pd.read_csv(study.root / "results/tables/pairs.csv")
    assert (pairs["lpips"] > 0).all()
    noise_floor = pd.read_csv(study.root / "results/tables/noise_floor.csv")
    assert (noise_floor["lpips"] > 0).all()
    summary_table = pd.read_csv(study.root / "results/tables/summary.csv")
    assert summary_table["lpips_mean"].to_numpy() == pytest.approx(
        pairs.groupby("prompt_id", sort=False)["lpips"].mean().reindex(summary_table["prompt_id"]).to_numpy()
    )
    assert summary_table["lpips_noise_floor_mean"].to_numpy() == pytest.approx(noise_floor["lpips"].mean())
    summary = (study.root / "results/tables/summary.md").read_text()
    assert "LPIPS not computed" not in summary
    assert "LPIPS: alex network" in summary
