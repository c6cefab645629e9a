"""Per-image quality measures of generated images.

Where :mod:`promptsweep.metrics` compares two pictures, these describe one:
how sharp, colourful, contrasted and detailed it is, and how natural it looks
to a no-reference quality model. Images are ``(H, W, 3)`` ``uint8`` RGB
arrays; every measure is a plain function of one image that returns a Python
``float``. :mod:`promptsweep.registry` declares them for the workflow.

The four hand-made measures describe an image rather than judge it: noise
raises sharpness, contrast and entropy as much as detail does. BRISQUE is the
measure trained to judge (on human opinion scores of distorted photographs).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from skimage.measure import shannon_entropy

Image = npt.NDArray[np.uint8]


def _checked_rgb(image: np.ndarray) -> Image:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an (H, W, 3) RGB array, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (0-255), got {image.dtype}")
    return image


def _gray(image: np.ndarray) -> Image:
    """8-bit luma of ITU-R BT.601 (0.299 R + 0.587 G + 0.114 B), rounded."""
    return cv2.cvtColor(_checked_rgb(image), cv2.COLOR_RGB2GRAY)


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the gray image, in squared gray levels.

    The gray image (:func:`cv2.cvtColor`, RGB to 8-bit gray) is filtered with
    OpenCV's 3x3 Laplacian ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` (borders
    reflected without repeating the edge pixel) into float64, and the
    population variance of the result is returned. Blur removes the high
    frequencies the Laplacian responds to, so a blurred image scores lower;
    0 for a flat image.

    Pech-Pacheco, Cristóbal, Chamorro-Martínez & Fernández-Valdivia, "Diatom
    autofocusing in brightfield microscopy: a comparative study", ICPR 2000.
    """
    return float(cv2.Laplacian(_gray(image), cv2.CV_64F).var())


def colorfulness(image: np.ndarray) -> float:
    """Colourfulness M of Hasler & Süsstrunk, in 8-bit RGB levels.

    With R, G, B as floats in [0, 255], the opponent components are
    ``rg = R - G`` and ``yb = (R + G) / 2 - B``; with population means mu and
    standard deviations sigma over all pixels,

        M = sqrt(sigma_rg^2 + sigma_yb^2) + 0.3 * sqrt(mu_rg^2 + mu_yb^2)

    0 for any gray image (R = G = B everywhere); larger is more colourful.

    Hasler & Süsstrunk, "Measuring colourfulness in natural images", Proc.
    SPIE 5007, Human Vision and Electronic Imaging VIII, 2003.
    """
    red, green, blue = np.moveaxis(_checked_rgb(image).astype(np.float64), 2, 0)
    red_green = red - green
    yellow_blue = 0.5 * (red + green) - blue
    spread = np.hypot(red_green.std(), yellow_blue.std())
    offset = np.hypot(red_green.mean(), yellow_blue.mean())
    return float(spread + 0.3 * offset)


def rms_contrast(image: np.ndarray) -> float:
    """RMS contrast: population standard deviation of the gray image / 255.

    The gray image is :func:`cv2.cvtColor`'s 8-bit gray scaled to [0, 1], so
    the result is a fraction of the full range: 0 for a flat image, 0.5 for
    one half black and half white (the largest possible).

    Peli, "Contrast in complex images", J. Opt. Soc. Am. A 7(10), 1990.
    """
    return float((_gray(image) / 255.0).std())


def entropy(image: np.ndarray) -> float:
    """Shannon entropy of the gray levels, in bits.

    ``-sum_k p_k log2 p_k`` over the frequencies p_k of the 8-bit gray levels
    (:func:`skimage.measure.shannon_entropy` of :func:`cv2.cvtColor`'s gray
    image): 0 for a flat image, 1 for two equally frequent levels, at most 8.
    It counts how many levels are used and how evenly, not where they are.

    Shannon, "A mathematical theory of communication", Bell Syst. Tech. J.
    27(3), 1948.
    """
    return float(shannon_entropy(_gray(image), base=2))


_BRISQUE_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _brisque_model() -> Any:
    """The brisque package's model, loaded once per process from the SVM and
    scaling files it ships (brisque/models/); nothing is downloaded."""
    from brisque import BRISQUE

    class _ScalarFeatureBrisque(BRISQUE):
        # brisque 0.2.0 computes some of its 36 features as 1-element arrays
        # and converts each with float(), which NumPy >= 2.4 refuses
        # ("only 0-dimensional arrays can be converted to Python scalars").
        # Handing it the same values as scalars is the whole fix.
        def scale_features(self, features: Any) -> Any:
            return super().scale_features([np.asarray(value).item() for value in features])

        # The package's normalised luminances, (I - mu) / (sqrt|E[I^2] - mu^2| + 1/255)
        # under its zero-padded 7x7 Gaussian window, with that window applied
        # as its two 1-D factors: 18 of BRISQUE's 24 s for 88 images at 512 px
        # went to scipy's 2-D convolution.
        def calculate_mscn_coefficients(self, image: np.ndarray, kernel_size: int = 6, sigma: float = 7 / 6) -> Any:
            if kernel_size % 2 == 0:  # centred differently by OpenCV; the package itself uses 7
                return super().calculate_mscn_coefficients(image, kernel_size, sigma)
            window = cv2.getGaussianKernel(kernel_size, sigma)  # the package's 2-D window's 1-D factor

            def windowed(values: np.ndarray) -> np.ndarray:
                return cv2.sepFilter2D(values, cv2.CV_64F, window, window, borderType=cv2.BORDER_CONSTANT)

            local_mean = windowed(image)
            local_deviation = np.sqrt(np.abs(local_mean**2 - windowed(image**2)))
            return (image - local_mean) / (local_deviation + 1 / 255)

    return _ScalarFeatureBrisque(url=False)


def brisque(image: np.ndarray) -> float:
    """BRISQUE score: 0 (best) to about 100; lower is better.

    Natural photographs have locally normalised luminances (mean-subtracted,
    contrast-normalised over a 7x7 Gaussian window) whose distribution and
    neighbour products follow fitted generalised Gaussians; distortions such
    as blur, noise and compression change those fits. The 36 fitted
    parameters (18 at full and 18 at half resolution) go into a support
    vector regressor trained on human opinion scores of distorted
    photographs (the LIVE database in the paper).

    Computed by the ``brisque`` package with the regressor and feature
    scaling it ships (brisque/models/svm.txt, normalize.pickle); its Gaussian
    window is applied in two 1-D passes (see :func:`_brisque_model`). ``nan`` when
    the image has flat regions the fit is undefined on, such as a uniform or
    a piecewise-flat image (a safety checker's black frame, for one).

    Mittal, Moorthy & Bovik, "No-reference image quality assessment in the
    spatial domain", IEEE Trans. Image Process. 21(12), 2012.
    """
    rgb = _checked_rgb(image)
    # Flat regions make the package divide 0 by 0: nan is then the answer,
    # and NumPy's warnings about it are not news. One call at a time: the
    # package's libsvm model crashes the process (segfault) when two threads
    # score at once, as workflow jobs running as threads would.
    with _BRISQUE_LOCK, np.errstate(divide="ignore", invalid="ignore"):
        return float(_brisque_model().score(rgb))
