"""Per-image quality measures: known values on made-up images, and BRISQUE's
ranking of a real photograph against degraded copies of it."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.color
import skimage.data

from isolation import opened_files, refuse_network
from promptsweep import quality, registry


def gray_image(levels: np.ndarray) -> np.ndarray:
    """An RGB image with R = G = B = ``levels``; its 8-bit gray is ``levels``."""
    return np.repeat(levels.astype(np.uint8)[:, :, None], 3, axis=2)


def two_level_image(low: int, high: int) -> np.ndarray:
    """Left half ``low``, right half ``high``: each level on half the pixels."""
    levels = np.full((8, 8), low)
    levels[:, 4:] = high
    return gray_image(levels)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """The astronaut photograph shipped with scikit-image, 256 x 256 px."""
    return cv2.resize(skimage.data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


def blurred(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigmaX=2.0)


def noised(image: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(0).normal(0.0, 20.0, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


MEASURES = [quality.sharpness, quality.colorfulness, quality.rms_contrast, quality.entropy, quality.brisque]


def test_every_measure_returns_a_python_float(photo: np.ndarray) -> None:
    values = [measure(photo) for measure in MEASURES]
    assert all(type(value) is float and math.isfinite(value) for value in values)


def test_measures_are_registered_with_their_direction() -> None:
    directions = {metric.name: metric.direction for metric in registry.quality_metrics() if metric.load is None}
    assert directions == {
        "sharpness": "higher is better", "colorfulness": "higher is better", "rms_contrast": "higher is better",
        "entropy": "higher is better", "brisque": "lower is better",
    }
    assert all(metric.display_name for metric in registry.quality_metrics())


def test_sharpness_of_a_single_bright_pixel() -> None:
    # The Laplacian is -4v at the pixel and v at its four neighbours, 0 on
    # the other 20 pixels of 5 x 5: mean 0, variance (16 + 4) v^2 / 25.
    levels = np.zeros((5, 5))
    levels[2, 2] = 10
    assert quality.sharpness(gray_image(levels)) == pytest.approx(0.8 * 10**2, abs=1e-12)
    assert quality.sharpness(gray_image(np.full((5, 5), 90))) == 0.0


def test_blur_lowers_sharpness(photo: np.ndarray) -> None:
    assert quality.sharpness(blurred(photo)) < 0.5 * quality.sharpness(photo)


def test_colorfulness_of_gray_is_zero(photo: np.ndarray) -> None:
    gray = gray_image(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY))
    assert quality.colorfulness(gray) == 0.0


def test_colorfulness_of_red_and_black_halves() -> None:
    # rg is 255 or 0 and yb 127.5 or 0, each on half the pixels: means and
    # standard deviations are 127.5 and 63.75, so both terms are sqrt(127.5^2 + 63.75^2).
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[:, :2, 0] = 255
    both_terms = math.hypot(127.5, 63.75)
    assert quality.colorfulness(image) == pytest.approx(both_terms + 0.3 * both_terms, rel=1e-12)


def test_entropy_of_two_equally_frequent_levels_is_one_bit() -> None:
    assert quality.entropy(two_level_image(40, 200)) == 1.0
    assert quality.entropy(gray_image(np.full((4, 4), 7))) == 0.0


def test_rms_contrast_of_two_levels() -> None:
    # Levels 0.2 and 0.8 of full range, equally frequent: standard deviation 0.3.
    assert quality.rms_contrast(two_level_image(51, 204)) == pytest.approx(0.3, abs=1e-12)
    assert quality.rms_contrast(two_level_image(0, 255)) == pytest.approx(0.5, abs=1e-12)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_network(monkeypatch)


def test_brisque_ranks_blurred_and_noised_photos_worse(photo: np.ndarray, no_network: None) -> None:
    quality._brisque_model.cache_clear()  # load it here, with the network refused
    clean = quality.brisque(photo)
    assert 0.0 < clean < 40.0
    assert quality.brisque(blurred(photo)) > clean + 20.0
    assert quality.brisque(noised(photo)) > clean + 10.0


def test_brisque_loads_only_the_model_its_package_ships(photo: np.ndarray, no_network: None) -> None:
    import brisque

    quality._brisque_model.cache_clear()
    with opened_files() as opened:
        quality.brisque(photo)
    # libsvm reads svm.txt from C, unseen here; BRISQUE(url=False) loads it
    # from the same folder as the scaling parameters.
    assert opened == [Path(brisque.__file__).parent / "models" / "normalize.pickle"]


def test_brisque_agrees_with_the_packages_own_convolution(photo: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """The normalised luminances are filtered in two 1-D passes instead of
    the package's 2-D convolution: equal to float rounding. Values within
    1e-16 of 0 may then change sign, which moves the score by a few
    thousandths (0.008 at most on eight photos)."""
    from brisque import BRISQUE

    pictures = [photo, blurred(photo), noised(photo), photo[:101, :77]]
    model = quality._brisque_model()
    for picture in pictures:
        gray = skimage.color.rgb2gray(picture)
        np.testing.assert_allclose(
            model.calculate_mscn_coefficients(gray, 7, 7 / 6),
            BRISQUE.calculate_mscn_coefficients(model, gray, 7, 7 / 6),
            atol=1e-9,
        )
    ours = [quality.brisque(picture) for picture in pictures]
    monkeypatch.setattr(type(model), "calculate_mscn_coefficients", BRISQUE.calculate_mscn_coefficients)
    assert ours == pytest.approx([quality.brisque(picture) for picture in pictures], abs=0.02)


def test_brisque_of_a_flat_image_is_nan() -> None:
    with np.errstate(all="raise"):
        assert math.isnan(quality.brisque(gray_image(np.full((32, 32), 128))))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8), dtype=np.uint8), r"\(H, W, 3\) RGB array, got shape \(8, 8\)"),
        (np.zeros((8, 8, 4), dtype=np.uint8), r"got shape \(8, 8, 4\)"),
        (np.zeros((8, 8, 3), dtype=np.float32), "must be uint8 .* got float32"),
    ],
)
def test_images_that_are_not_8_bit_rgb_are_refused(image: np.ndarray, message: str) -> None:
    for measure in MEASURES:
        with pytest.raises(ValueError, match=message):
            measure(image)


def test_brisque_can_be_called_from_threads_at_once(photo: np.ndarray) -> None:
    """Workflow jobs run as threads of one process; libsvm crashed the whole
    process when two of them scored at once."""
    from concurrent.futures import ThreadPoolExecutor

    pictures = [np.roll(photo, shift, axis=1) for shift in range(8)]
    with ThreadPoolExecutor(4) as pool:
        scores = list(pool.map(quality.brisque, pictures))
    assert scores == pytest.approx([quality.brisque(picture) for picture in pictures], rel=1e-9)
