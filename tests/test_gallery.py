"""The SSIM maps' pictures, the contact sheet's map row, and the static gallery:
its pure parts, the files it writes, and the page in headless Chromium."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

import headless_chromium
from promptsweep import files, gallery, metrics, plots, threads
from promptsweep.jobs import plots as plot_jobs

IMAGES = ("cat", "dog", "owl")
PROMPTS = (("good", "positive", math.nan), ("pos5@0.5", "positive", 0.5), ("bad", "negative", math.nan))
SEEDS = (0, 1)
# Width and height of the synthetic pictures: larger than a thumbnail, not square.
SIZE = (160, 192)


def synthetic_picture(rng: np.random.Generator) -> np.ndarray:
    """Smooth colour gradients with a few rectangles: something to see."""
    width, height = SIZE
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, rng.integers(0, 256))], axis=2)
    for _ in range(4):
        x0, y0 = rng.integers(0, width - 40), rng.integers(0, height - 40)
        pixels[y0 : y0 + 40, x0 : x0 + 40] = rng.integers(0, 256, 3)
    return pixels.astype(np.uint8)


def changed(picture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``picture`` with one region replaced by noise: a local change to find."""
    variant = picture.copy()
    y0, x0 = rng.integers(0, SIZE[1] - 60), rng.integers(0, SIZE[0] - 60)
    variant[y0 : y0 + 60, x0 : x0 + 60] = rng.integers(0, 256, (60, 60, 3))
    return variant


def write_study(directory: Path) -> pd.DataFrame:
    """Edge maps, baselines and variants of a small study as PNGs, and its pairs table."""
    rng = np.random.default_rng(0)
    rows = []
    for image in IMAGES:
        edge_path = directory / "edges" / f"{image}.png"
        files.write_png(edge_path, (rng.random((SIZE[1], SIZE[0])) > 0.95).astype(np.uint8) * 255)
        for seed in SEEDS:
            baseline = synthetic_picture(rng)
            baseline_path = directory / image / "baseline" / f"seed{seed}.png"
            files.write_png(baseline_path, baseline)
            for prompt, kind, dose in PROMPTS:
                variant = changed(baseline, rng)
                variant_path = directory / image / prompt / f"seed{seed}.png"
                files.write_png(variant_path, variant)
                map_path = directory / "ssim_maps" / image / prompt / f"seed{seed}.png"
                files.write_png(map_path, plots.ssim_map_picture(metrics.ssim_map(baseline, variant)))
                rows.append({
                    "image_id": image, "prompt_id": prompt, "kind": kind, "dose": dose, "seed": seed,
                    "ssim": metrics.ssim(baseline, variant), "psnr": metrics.psnr(baseline, variant),
                    "edge_f1_variant": rng.random(), "sharpness_delta": rng.normal(),
                    "excluded": "", "edge_path": str(edge_path),
                    "baseline_path": str(baseline_path), "variant_path": str(variant_path),
                    "ssim_map_path": str(map_path),
                })
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def study_pairs(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return write_study(tmp_path_factory.mktemp("study"))


@pytest.fixture(scope="module")
def gallery_index(study_pairs: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gallery.write_gallery(study_pairs, tmp_path_factory.mktemp("gallery"), "Synthetic study")


def read_gallery_data(index: Path) -> dict:
    script = (index.parent / gallery.DATA_FILE).read_text(encoding="utf-8")
    prefix = "window.GALLERY_DATA = "
    assert script.startswith(prefix)
    # JSON with JavaScript's Infinity, which Python's json reads too.
    return json.loads(script[len(prefix) :].rstrip().rstrip(";"))


# --- SSIM map pictures and the contact sheet ---------------------------------


def test_ssim_map_picture_uses_the_fixed_range_and_clips_below_it() -> None:
    ssim_map = np.array([[-0.5, 0.0, 0.5, 1.0]])
    picture = plots.ssim_map_picture(ssim_map)
    assert picture.shape == (1, 4, 3) and picture.dtype == np.uint8
    viridis_ends = plots.matplotlib.colormaps["viridis"]([0.0, 1.0], bytes=True)[:, :3]
    np.testing.assert_array_equal(picture[0, 0], picture[0, 1])
    np.testing.assert_array_equal(picture[0, [1, 3]], viridis_ends)


def test_contact_sheet_draws_a_map_under_each_variant(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    baseline = synthetic_picture(rng)
    variants = [("good", changed(baseline, rng)), ("bad", changed(baseline, rng))]
    maps = [(label, metrics.ssim_map(baseline, variant)) for label, variant in variants]
    path = tmp_path / "sheet.png"
    plots.contact_sheet(np.zeros(SIZE[::-1], np.uint8), [("baseline", baseline), *variants], "cat, seed 0", None, path, maps=maps)
    with Image.open(path) as sheet:
        assert sheet.height > sheet.width / 3  # two rows: pictures, then maps
    assert not path.with_suffix(".svg").exists()  # pictures: PNG only


def test_contact_sheet_job_draws_the_same_maps_in_metric_processes(
    study_pairs: pd.DataFrame, tmp_path: Path
) -> None:
    """The sheet's SSIM maps, computed by the workers when there are some,
    land under their own variants; the job logs when it is done (benchmarks
    read a job's time from its first and last lines)."""
    rows = study_pairs[(study_pairs["image_id"] == "cat") & (study_pairs["seed"] == 0)]
    arguments = {
        "image_id": "cat", "edge_map": rows["edge_path"].iloc[0],
        "labels": ["baseline", *rows["prompt_id"]], "images": [rows["baseline_path"].iloc[0], *rows["variant_path"]],
        "title": "cat, seed 0", "caveat": None,
    }
    plot_jobs.contact_sheet(**arguments, output=str(tmp_path / "here.png"), log=str(tmp_path / "here.log"))
    threads.use_metric_processes(2, "cpu", 2)
    try:
        plot_jobs.contact_sheet(**arguments, output=str(tmp_path / "workers.png"), log=str(tmp_path / "workers.log"))
    finally:
        threads.use_metric_processes(0, "cpu", 1)
    assert (tmp_path / "workers.png").read_bytes() == (tmp_path / "here.png").read_bytes()
    assert (tmp_path / "workers.log").read_text().splitlines()[-1].endswith(f"4 panels in {tmp_path / 'workers.png'}")


# --- the gallery's pure parts -----------------------------------------------


def test_metric_columns_are_the_numeric_columns_but_seed_and_dose(study_pairs: pd.DataFrame) -> None:
    assert gallery.metric_columns(study_pairs) == ["ssim", "psnr", "edge_f1_variant", "sharpness_delta"]


def test_missing_columns_are_named(study_pairs: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="seed, edge_path"):
        gallery.check_pairs(study_pairs.drop(columns=["seed", "edge_path"]))


def test_shared_pictures_are_planned_once(study_pairs: pd.DataFrame) -> None:
    planned = gallery.plan_pictures(study_pairs)
    roles = pd.Series([picture.role for picture in gallery.unique_pictures(planned)]).value_counts()
    n_pairs = len(IMAGES) * len(PROMPTS) * len(SEEDS)
    assert roles.to_dict() == {
        "edge": len(IMAGES), "baseline": len(IMAGES) * len(SEEDS), "variant": n_pairs, "ssim": n_pairs,
    }
    assert planned[0]["baseline"] is planned[1]["baseline"]  # two prompts, one image and seed


def test_picture_names_are_safe_and_distinct() -> None:
    pairs = pd.DataFrame({
        "image_id": ["a/b", "a b"], "prompt_id": ["p#1", "p#1"], "kind": "positive", "seed": 0,
        "edge_path": ["e1.png", "e2.png"], "baseline_path": ["b1.png", "b2.png"], "variant_path": ["v1.png", "v2.png"],
        "ssim_map_path": ["m1.png", "m2.png"],
    })
    first, second = gallery.plan_pictures(pairs)
    assert first["variant"].thumbnail == "thumbs/variant/a_b_p_1_seed0.webp"
    assert second["variant"].thumbnail == "thumbs/variant/a_b_p_1_seed0-2.webp"


def test_records_carry_ids_dose_values_and_pictures(study_pairs: pd.DataFrame) -> None:
    pairs = study_pairs.assign(psnr=[math.inf, math.nan, *study_pairs["psnr"][2:]])
    records = gallery.pair_records(pairs, gallery.plan_pictures(pairs), ["ssim", "psnr"])
    assert len(records) == len(pairs)
    first, second = records[0], records[1]
    assert (first["image_id"], first["prompt_id"], first["kind"], first["seed"]) == ("cat", "good", "positive", 0)
    assert first["dose"] is None and second["dose"] == 0.5
    assert first["values"] == {"ssim": pytest.approx(study_pairs["ssim"][0]), "psnr": math.inf}
    assert second["values"]["psnr"] is None
    assert first["pictures"]["edge"] == ["thumbs/edge/cat.webp", "full/edge/cat.webp"]
    json.dumps(records)  # plain Python values only


def test_records_without_a_dose_column_have_none(study_pairs: pd.DataFrame) -> None:
    pairs = study_pairs.drop(columns="dose")
    records = gallery.pair_records(pairs, gallery.plan_pictures(pairs), [])
    assert {record["dose"] for record in records} == {None}


@pytest.mark.parametrize(("size", "expected"), [((256, 256), (128, 128)), ((160, 192), (107, 128)), ((64, 40), (64, 40))])
def test_thumbnail_size_fits_the_longer_side(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert gallery.thumbnail_size(*size, 128) == expected


# --- the files the gallery writes --------------------------------------------


def test_gallery_holds_every_file_it_refers_to(gallery_index: Path, study_pairs: pd.DataFrame) -> None:
    data = read_gallery_data(gallery_index)
    assert len(data["pairs"]) == len(study_pairs)
    referenced = {path for record in data["pairs"] for paths in record["pictures"].values() for path in paths}
    written = {str(path.relative_to(gallery_index.parent)) for path in gallery_index.parent.rglob("*.webp")}
    assert referenced == written
    for name in ("index.html", "gallery.css", "gallery.js", "data.js"):
        assert (gallery_index.parent / name).is_file()
    assert "<title>Synthetic study</title>" in gallery_index.read_text(encoding="utf-8")


def test_gallery_writes_shared_thumbnails_once(gallery_index: Path) -> None:
    def count(role: str) -> int:
        return len(list((gallery_index.parent / "thumbs" / role).iterdir()))

    assert count("edge") == len(IMAGES)
    assert count("baseline") == len(IMAGES) * len(SEEDS)
    assert count("variant") == count("ssim") == len(IMAGES) * len(PROMPTS) * len(SEEDS)


def test_gallery_pictures_have_thumbnail_and_full_sizes(gallery_index: Path) -> None:
    for path in (gallery_index.parent / "thumbs").rglob("*.webp"):
        with Image.open(path) as thumbnail:
            assert thumbnail.size == (107, 128), path
    for path in (gallery_index.parent / "full").rglob("*.webp"):
        with Image.open(path) as full:
            assert full.size == SIZE, path


def test_gallery_edge_maps_are_lossless(gallery_index: Path, study_pairs: pd.DataFrame) -> None:
    with Image.open(gallery_index.parent / "full" / "edge" / "cat.webp") as edge_map:
        copied = np.asarray(edge_map.convert("L"))
    np.testing.assert_array_equal(copied, files.read_png(Path(study_pairs["edge_path"][0])))


def test_gallery_ssim_map_is_the_pairs_map(gallery_index: Path, study_pairs: pd.DataFrame) -> None:
    row = study_pairs.iloc[0]
    expected = plots.ssim_map_picture(
        metrics.ssim_map(files.read_png(Path(row["baseline_path"])), files.read_png(Path(row["variant_path"])))
    )
    with Image.open(gallery_index.parent / "full" / "ssim" / "cat_good_seed0.webp") as written:
        # Lossy: close to the map's colours, not equal.
        difference = np.abs(np.asarray(written.convert("RGB"), dtype=float) - expected)
    assert difference.mean() < 4


class PidOfWriter:
    """Runs a picture-writing function and returns the id of the process it ran in."""

    def __init__(self, write: Callable[[gallery.Picture], None]) -> None:
        self.write = write

    def __call__(self, picture: gallery.Picture) -> int:
        self.write(picture)
        return os.getpid()


def test_gallery_pictures_are_written_in_metric_processes(
    metric_processes: None,
    study_pairs: pd.DataFrame,
    gallery_index: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With metric processes, the workers encode the pictures, and the gallery
    is the one written without them, byte for byte, even from relative paths
    in a working directory the workers were not started in."""
    writers: list[int] = []
    monkeypatch.setattr(
        gallery, "map_measure", lambda write, pictures: writers.extend(threads.map_measure(PidOfWriter(write), pictures))
    )
    threads.map_measure(abs, [1, -1])  # the workers start here, in this directory
    relative = study_pairs.copy()
    for column in gallery.PATH_COLUMNS:
        relative[column] = [os.path.relpath(path, tmp_path) for path in relative[column]]
    monkeypatch.chdir(tmp_path)
    index = gallery.write_gallery(relative, Path("gallery"), "Synthetic study").absolute()

    assert writers and os.getpid() not in writers
    assert len(writers) == len(gallery.unique_pictures(gallery.plan_pictures(study_pairs)))
    written = {path.relative_to(index.parent): path.read_bytes() for path in index.parent.rglob("*.webp")}
    expected = {path.relative_to(gallery_index.parent): path.read_bytes() for path in gallery_index.parent.rglob("*.webp")}
    assert written == expected


# --- the page in headless Chromium -------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    reason = headless_chromium.missing_reason()
    if reason:
        # CI installs Chromium (.ci/run): there a missing browser is a failure.
        if os.environ.get("CI"):
            pytest.fail(f"the gallery's browser tests need headless Chromium: {reason}")
        pytest.skip(reason)
    driver = headless_chromium.start()
    yield driver
    driver.quit()


@pytest.fixture()
def page(browser: webdriver.Chrome, gallery_index: Path) -> Iterator[webdriver.Chrome]:
    """The gallery freshly loaded from disk; the test fails on any console error."""
    browser.get(gallery_index.as_uri())
    try:
        WebDriverWait(browser, 10).until(
            lambda driver: driver.execute_script("return document.documentElement.dataset.ready") == "true"
        )
    except TimeoutException:
        pytest.fail(f"the page never became ready; console errors: {headless_chromium.severe_console_messages(browser)}")
    yield browser
    assert headless_chromium.severe_console_messages(browser) == []


def shown_pair_indices(driver: webdriver.Chrome) -> list[int]:
    return driver.execute_script("return [...document.querySelectorAll('#pairs .pair')].map(a => Number(a.dataset.index))")


def current_pair_index(driver: webdriver.Chrome) -> int:
    return int(driver.find_element(By.CSS_SELECTOR, ".pair.current").get_attribute("data-index"))


def choose(driver: webdriver.Chrome, menu: str, value: str) -> None:
    Select(driver.find_element(By.ID, menu)).select_by_value(value)


def press(driver: webdriver.Chrome, *keys: str) -> None:
    driver.find_element(By.TAG_NAME, "h1").click()  # away from the menus, whose keys are theirs
    ActionChains(driver).send_keys(*keys).perform()


def count_shown(driver: webdriver.Chrome) -> int:
    return int(driver.find_element(By.ID, "count").text)


@pytest.mark.browser
def test_page_shows_every_pair(page: webdriver.Chrome, study_pairs: pd.DataFrame) -> None:
    assert count_shown(page) == len(study_pairs)
    assert shown_pair_indices(page) == list(range(len(study_pairs)))
    assert page.find_element(By.ID, "total").text == str(len(study_pairs))


@pytest.mark.browser
def test_filters_narrow_the_pairs(page: webdriver.Chrome, study_pairs: pd.DataFrame) -> None:
    choose(page, "image", "dog")
    assert count_shown(page) == len(PROMPTS) * len(SEEDS)
    choose(page, "prompt", "pos5@0.5")
    choose(page, "seed", "1")
    expected = study_pairs.index[
        (study_pairs.image_id == "dog") & (study_pairs.prompt_id == "pos5@0.5") & (study_pairs.seed == 1)
    ]
    assert shown_pair_indices(page) == list(expected)
    assert count_shown(page) == 1


@pytest.mark.browser
def test_sorting_by_effect_puts_the_least_similar_first(page: webdriver.Chrome, study_pairs: pd.DataFrame) -> None:
    choose(page, "sort", "effect")
    assert shown_pair_indices(page) == list(study_pairs["ssim"].sort_values(kind="stable").index)
    choose(page, "direction", "ascending")
    choose(page, "sort", "metric:sharpness_delta")
    assert shown_pair_indices(page) == list(study_pairs["sharpness_delta"].sort_values(kind="stable").index)


@pytest.mark.browser
def test_keys_step_through_the_pairs(page: webdriver.Chrome, study_pairs: pd.DataFrame) -> None:
    assert current_pair_index(page) == 0
    press(page, "j", "j")
    assert current_pair_index(page) == 2
    press(page, "k")
    assert current_pair_index(page) == 1
    press(page, *[Keys.ARROW_DOWN] * len(study_pairs))  # past the last pair
    assert current_pair_index(page) == len(study_pairs) - 1
    in_view = page.execute_script(
        "const box = document.querySelector('.pair.current').getBoundingClientRect();"
        "return box.top >= 0 && box.bottom <= window.innerHeight"
    )
    assert in_view and page.execute_script("return window.scrollY") > 0


@pytest.mark.browser
def test_a_thumbnail_opens_its_full_picture(page: webdriver.Chrome, gallery_index: Path) -> None:
    gallery_window = page.current_window_handle
    page.find_element(By.CSS_SELECTOR, ".pair figure a").click()
    opened = next(handle for handle in page.window_handles if handle != gallery_window)
    page.switch_to.window(opened)
    try:
        assert page.current_url == (gallery_index.parent / "full" / "edge" / "cat.webp").as_uri()
        assert page.execute_script("return document.images[0].naturalWidth") == SIZE[0]
    finally:
        page.close()
        page.switch_to.window(gallery_window)


@pytest.mark.browser
def test_screenshot_shows_pictures(page: webdriver.Chrome) -> None:
    assert headless_chromium.screenshot_pixels(page).std() > 20
    # The thumbnails on screen have loaded (lazily) and been decoded.
    assert page.execute_script(
        "return [...document.images].filter(i => i.getBoundingClientRect().top < innerHeight)"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
