import math

import cv2
import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from promptsweep import metrics


SKIMAGE_SSIM_SETTINGS = dict(
    channel_axis=2,
    gaussian_weights=True,
    sigma=1.5,
    use_sample_covariance=False,
    data_range=255,
)


def skimage_ssim(image_a: np.ndarray, image_b: np.ndarray) -> float:
    return structural_similarity(image_a, image_b, **SKIMAGE_SSIM_SETTINGS)


def random_image(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.resize(data.astronaut(), (96, 96), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return data.chelsea()[50:150, 100:180]


# --- SSIM -----------------------------------------------------------------


def test_ssim_of_identical_images_is_one(astronaut):
    assert metrics.ssim(astronaut, astronaut) == 1.0


@pytest.mark.parametrize("shift", [1, 3, 7])
def test_ssim_of_shifted_image_is_below_one_and_matches_skimage(astronaut, shift):
    shifted = np.roll(astronaut, shift, axis=(0, 1))
    score = metrics.ssim(astronaut, shifted)
    assert score < 1.0
    assert score == pytest.approx(skimage_ssim(astronaut, shifted), abs=1e-6)


def test_ssim_matches_skimage_on_random_images():
    image_a = random_image((40, 53, 3), seed=0)
    image_b = random_image((40, 53, 3), seed=1)
    assert metrics.ssim(image_a, image_b) == pytest.approx(
        skimage_ssim(image_a, image_b), abs=1e-6
    )


def test_ssim_matches_skimage_on_natural_images(chelsea):
    noisy = np.clip(
        chelsea + np.random.default_rng(2).normal(0, 25, chelsea.shape), 0, 255
    ).astype(np.uint8)
    blurred = cv2.GaussianBlur(chelsea, (5, 5), 2.0)
    for other in (noisy, blurred):
        assert metrics.ssim(chelsea, other) == pytest.approx(
            skimage_ssim(chelsea, other), abs=1e-6
        )


def test_ssim_of_noise_against_constant_is_near_zero():
    noise = random_image((64, 64, 3), seed=3)
    constant = np.full((64, 64, 3), 128, dtype=np.uint8)
    score = metrics.ssim(noise, constant)
    # A constant image has no variance, so cs = C2 / (var_noise + C2) ~ 0.01.
    assert 0.0 < score < 0.05
    assert score == pytest.approx(skimage_ssim(noise, constant), abs=1e-6)


def test_ssim_is_symmetric(astronaut):
    other = np.roll(astronaut, 2, axis=1)
    assert metrics.ssim(astronaut, other) == pytest.approx(
        metrics.ssim(other, astronaut), abs=1e-12
    )


def test_ssim_averages_channels():
    image_a = random_image((32, 32, 3), seed=4)
    image_b = random_image((32, 32, 3), seed=5)
    per_channel = [
        structural_similarity(
            image_a[..., c],
            image_b[..., c],
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
        )
        for c in range(3)
    ]
    assert metrics.ssim(image_a, image_b) == pytest.approx(
        np.mean(per_channel), abs=1e-9
    )


def test_ssim_rejects_shape_mismatch_naming_both_shapes():
    with pytest.raises(ValueError, match=r"\(32, 32, 3\).*\(32, 30, 3\)"):
        metrics.ssim(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 30, 3), np.uint8))


def test_ssim_rejects_non_uint8_and_tiny_images():
    with pytest.raises(ValueError, match="uint8"):
        metrics.ssim(np.zeros((32, 32, 3)), np.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="11 px"):
        metrics.ssim(np.zeros((10, 32, 3), np.uint8), np.zeros((10, 32, 3), np.uint8))


# --- SSIM map -------------------------------------------------------------


def interior(ssim_map: np.ndarray) -> np.ndarray:
    """The pixels at least 5 px from the border, which metrics.ssim averages."""
    border = (metrics.WINDOW_SIZE - 1) // 2
    return ssim_map[border:-border, border:-border]


def test_ssim_map_interior_mean_is_ssim(astronaut, chelsea):
    noisy = np.clip(
        chelsea + np.random.default_rng(6).normal(0, 25, chelsea.shape), 0, 255
    ).astype(np.uint8)
    pairs = [
        (astronaut, np.roll(astronaut, 3, axis=(0, 1))),
        (chelsea, noisy),
        (random_image((40, 53, 3), seed=0), random_image((40, 53, 3), seed=1)),
    ]
    for image_a, image_b in pairs:
        ssim_map = metrics.ssim_map(image_a, image_b)
        assert ssim_map.shape == image_a.shape[:2]
        assert interior(ssim_map).mean() == pytest.approx(
            metrics.ssim(image_a, image_b), abs=1e-9
        )


def test_ssim_map_equals_skimage_full_map_border_included(astronaut, chelsea):
    noisy = np.clip(
        chelsea + np.random.default_rng(7).normal(0, 25, chelsea.shape), 0, 255
    ).astype(np.uint8)
    pairs = [
        (astronaut, np.roll(astronaut, 5, axis=1)),
        (chelsea, noisy),
        (random_image((11, 17, 3), seed=2), random_image((11, 17, 3), seed=3)),
    ]
    for image_a, image_b in pairs:
        _, channel_maps = structural_similarity(
            image_a, image_b, full=True, **SKIMAGE_SSIM_SETTINGS
        )
        np.testing.assert_allclose(
            metrics.ssim_map(image_a, image_b), channel_maps.mean(axis=2), atol=1e-9
        )


def test_ssim_map_is_low_only_where_the_images_differ(astronaut):
    changed = astronaut.copy()
    changed[60:80, 60:80] = 255 - changed[60:80, 60:80]
    ssim_map = metrics.ssim_map(astronaut, changed)
    # Farther than a window from the change, the images agree exactly.
    assert np.all(ssim_map[:45, :] == pytest.approx(1.0))
    assert ssim_map[65:75, 65:75].max() < 0.5


def test_ssim_map_rejects_what_ssim_rejects():
    with pytest.raises(ValueError, match="uint8"):
        metrics.ssim_map(np.zeros((32, 32, 3)), np.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="11 px"):
        metrics.ssim_map(np.zeros((10, 32, 3), np.uint8), np.zeros((10, 32, 3), np.uint8))


# --- MS-SSIM --------------------------------------------------------------


def upsample_2x2(image: np.ndarray) -> np.ndarray:
    """Each pixel becomes a 2x2 block, so 2x2 average pooling restores the image."""
    return np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)


def test_ms_ssim_of_identical_images_is_one(astronaut):
    assert metrics.ms_ssim(astronaut, astronaut) == pytest.approx(1.0, abs=1e-12)


def test_ms_ssim_with_one_scale_equals_ssim(astronaut):
    shifted = np.roll(astronaut, 2, axis=0)
    assert metrics.ms_ssim(astronaut, shifted, weights=(1.0,)) == pytest.approx(
        metrics.ssim(astronaut, shifted), abs=1e-12
    )


def test_ms_ssim_coarsest_scale_is_ssim_of_pooled_image(chelsea):
    other = np.roll(chelsea, 3, axis=1)
    # Weight only on the second scale: the result is SSIM of the pooled
    # images, which for 2x2-upsampled inputs are the originals.
    score = metrics.ms_ssim(
        upsample_2x2(chelsea), upsample_2x2(other), weights=(0.0, 1.0)
    )
    assert score == pytest.approx(metrics.ssim(chelsea, other), abs=1e-12)


def test_ms_ssim_uses_the_scales_that_fit_and_renormalises_weights():
    image_a = random_image((64, 64, 3), seed=6)
    image_b = np.roll(image_a, 1, axis=0)
    # 64 -> 32 -> 16 px fit an 11-px window, 8 px does not: three scales.
    three_scales = metrics.ms_ssim(image_a, image_b, weights=(0.0448, 0.2856, 0.3001))
    assert metrics.ms_ssim(image_a, image_b) == pytest.approx(three_scales, abs=1e-12)
    scaled_weights = metrics.ms_ssim(image_a, image_b, weights=(2.0, 2.0))
    assert scaled_weights == pytest.approx(
        metrics.ms_ssim(image_a, image_b, weights=(0.5, 0.5)), abs=1e-12
    )


def test_ms_ssim_is_finite_and_orders_distortions(astronaut):
    slightly = np.roll(astronaut, 1, axis=1)
    strongly = np.roll(astronaut, 8, axis=1)
    noise = random_image(astronaut.shape, seed=7)
    scores = [
        metrics.ms_ssim(astronaut, other) for other in (slightly, strongly, noise)
    ]
    assert all(math.isfinite(score) and 0.0 <= score <= 1.0 for score in scores)
    assert scores[0] > scores[1] > scores[2]


def test_ssim_and_ms_ssim_together_equal_each_alone(chelsea):
    """The workflow's one-pass pair: its SSIM is :func:`ssim` (MS-SSIM's first
    scale) and its MS-SSIM is :func:`ms_ssim`, on an odd-sized crop too."""
    for image in (chelsea, chelsea[:201, :175]):
        other = np.roll(image, 4, axis=1)
        together = metrics.ssim_and_ms_ssim(image, other)
        assert together == pytest.approx(
            (metrics.ssim(image, other), metrics.ms_ssim(image, other)), abs=1e-12
        )
    assert together[0] != pytest.approx(together[1], abs=1e-3)


def test_ms_ssim_rejects_shape_mismatch_and_tiny_images():
    with pytest.raises(ValueError, match=r"\(64, 64, 3\).*\(64, 63, 3\)"):
        metrics.ms_ssim(
            np.zeros((64, 64, 3), np.uint8), np.zeros((64, 63, 3), np.uint8)
        )
    with pytest.raises(ValueError, match="11 px"):
        metrics.ms_ssim(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))


# --- PSNR -----------------------------------------------------------------


def test_psnr_of_identical_images_is_inf(astronaut):
    assert metrics.psnr(astronaut, astronaut) == math.inf


def test_psnr_against_hand_computed_mse():
    black = np.zeros((8, 8, 3), np.uint8)
    grey = np.full((8, 8, 3), 10, np.uint8)
    # MSE = 10^2 = 100.
    assert metrics.psnr(black, grey) == pytest.approx(
        10 * math.log10(255**2 / 100), abs=1e-12
    )
    one_pixel = black.copy()
    one_pixel[0, 0, 0] = 255
    # MSE = 255^2 / 192 pixel-channels, so PSNR = 10 log10(192).
    assert metrics.psnr(black, one_pixel) == pytest.approx(
        10 * math.log10(192), abs=1e-12
    )


def test_psnr_matches_skimage(chelsea):
    other = random_image(chelsea.shape, seed=8)
    assert metrics.psnr(chelsea, other) == pytest.approx(
        peak_signal_noise_ratio(chelsea, other, data_range=255), abs=1e-9
    )


def test_psnr_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        metrics.psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))


# --- Edge F1 --------------------------------------------------------------


def edge_map(flat_indices: np.ndarray, shape: tuple[int, int] = (20, 20)) -> np.ndarray:
    edges = np.zeros(shape, np.uint8)
    edges.flat[flat_indices] = 255
    return edges


def test_edge_f1_of_identical_maps_is_one():
    edges = edge_map(np.arange(0, 400, 7))
    assert metrics.edge_f1(edges, edges) == 1.0


def test_edge_f1_half_overlap_is_one_half():
    reference = edge_map(np.arange(100))
    predicted = edge_map(np.concatenate([np.arange(50), np.arange(200, 250)]))
    # precision 50/100, recall 50/100.
    assert metrics.edge_f1(predicted, reference) == pytest.approx(0.5)


def test_edge_f1_asymmetric_cases():
    reference = edge_map(np.arange(40))
    subset = edge_map(np.arange(20))
    # precision 1, recall 1/2: F1 = 2 * 1 * 0.5 / 1.5.
    assert metrics.edge_f1(subset, reference) == pytest.approx(2 / 3)
    mixed = edge_map(np.concatenate([np.arange(10), np.arange(300, 320)]))
    # precision 10/30, recall 10/40: F1 = 2 * (1/12) / (7/12) = 2/7.
    assert metrics.edge_f1(mixed, reference) == pytest.approx(2 / 7)
    assert metrics.edge_f1(reference, mixed) == pytest.approx(2 / 7)


def test_edge_f1_treats_any_nonzero_value_as_edge():
    reference = edge_map(np.arange(30))
    assert metrics.edge_f1((reference > 0).astype(np.uint8), reference) == 1.0


def test_edge_f1_empty_maps():
    empty = np.zeros((20, 20), np.uint8)
    some = edge_map(np.arange(5))
    assert metrics.edge_f1(empty, empty) == 1.0
    assert metrics.edge_f1(empty, some) == 0.0
    assert metrics.edge_f1(some, empty) == 0.0
    assert metrics.edge_f1(some, edge_map(np.arange(5, 10))) == 0.0


def test_edge_f1_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(20, 20\).*\(20, 21\)"):
        metrics.edge_f1(np.zeros((20, 20), np.uint8), np.zeros((20, 21), np.uint8))


# --- Canny F1 -------------------------------------------------------------


def test_canny_f1_of_image_against_its_own_edges_is_one(astronaut):
    reference = cv2.Canny(astronaut, 100, 200)
    assert metrics.canny_f1(astronaut, reference, 100, 200) == 1.0
    assert metrics.canny_f1(np.roll(astronaut, 4, axis=1), reference, 100, 200) < 0.5


def test_canny_f1_runs_canny_on_rgb_not_grey():
    # Red (255, 0, 0) and green (0, 130, 0) have the same grey level (76), so
    # only a colour-aware Canny sees the boundary between them.
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :16, 0] = 255
    image[:, 16:, 1] = 130
    assert not cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 100, 200).any()
    column_edges = np.zeros((32, 32), np.uint8)
    column_edges[:, 15:17] = 255
    assert metrics.canny_f1(image, column_edges, 100, 200) > 0.5
    assert metrics.canny_f1(image, np.zeros((32, 32), np.uint8), 100, 200) == 0.0


def test_canny_f1_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="edge map"):
        metrics.canny_f1(
            np.zeros((32, 32, 3), np.uint8), np.zeros((32, 31), np.uint8), 100, 200
        )
