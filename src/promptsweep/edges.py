"""Input images to Canny edge maps, with ControlNet's own preprocessing.

ControlNet 1.0 (``gradio_canny2image.py``, ``annotator/util.py``) turns any
input into a 3-channel uint8 image (``HWC3``: gray repeated, RGBA blended on
white), resizes it so that the shorter side is the resolution and both sides
are multiples of 64 (LANCZOS4 when enlarging, INTER_AREA when shrinking), and
runs ``cv2.Canny`` on that RGB image.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's decompression-bomb threshold (about 89 megapixels): larger images
# are refused rather than decoded into gigabytes of memory.
MAX_IMAGE_PIXELS = 89_478_485


class ImageReadError(ValueError):
    """An input image that cannot be used; the message names the file."""


def to_rgb(image: np.ndarray) -> np.ndarray:
    """ControlNet's ``HWC3``: a uint8 image as 3 channels.

    Gray is repeated; an alpha channel is blended onto white (transparent
    regions become white paper, as in ControlNet).
    """
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 3:
        return image
    if channels == 4:
        color = image[:, :, :3].astype(np.float32)
        alpha = image[:, :, 3:].astype(np.float32) / 255.0
        blended = color * alpha + 255.0 * (1.0 - alpha)
        return blended.clip(0, 255).round().astype(np.uint8)
    raise ValueError(f"expected 1, 3 or 4 channels, got {channels}")


def resized_shape(height: int, width: int, resolution: int) -> tuple[int, int]:
    """(height, width) with the shorter side at ``resolution``, both rounded to
    multiples of 64 (ControlNet's ``resize_image``)."""
    scale = resolution / min(height, width)
    new_height = max(64, int(np.round(height * scale / 64.0)) * 64)
    new_width = max(64, int(np.round(width * scale / 64.0)) * 64)
    return new_height, new_width


def resize_to_resolution(image: np.ndarray, resolution: int) -> np.ndarray:
    """Resize like ControlNet: LANCZOS4 when enlarging, INTER_AREA when shrinking."""
    height, width = image.shape[:2]
    new_height, new_width = resized_shape(height, width, resolution)
    enlarging = resolution / min(height, width) > 1
    interpolation = cv2.INTER_LANCZOS4 if enlarging else cv2.INTER_AREA
    return cv2.resize(image, (new_width, new_height), interpolation=interpolation)


def _pil_to_uint8(picture: Image.Image) -> np.ndarray:
    """Pixels of any Pillow mode as uint8 gray, RGB or RGBA."""
    if picture.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit integer) gray: scale the full range to 8 bits.
        values = np.asarray(picture, dtype=np.float64)
        maximum = 65535.0 if picture.mode.startswith("I;16") else max(float(values.max()), 1.0)
        return (values / maximum * 255.0).clip(0, 255).round().astype(np.uint8)
    if picture.mode == "F":
        values = np.asarray(picture, dtype=np.float64)
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        return (scaled * 255.0).round().astype(np.uint8)
    if picture.mode in ("L", "RGB", "RGBA"):
        return np.asarray(picture)
    if picture.mode in ("LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
        return np.asarray(picture.convert("RGBA"))
    # P, CMYK, YCbCr, 1, ...: Pillow's conversion to RGB.
    return np.asarray(picture.convert("RGB"))


def read_image(path: Path) -> np.ndarray:
    """Read an input image as HxWx3 uint8 RGB, upright per its EXIF orientation.

    Raises :class:`ImageReadError` naming the file for anything that is not a
    complete, decodable image of a sane size.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as picture:
                if picture.width * picture.height > MAX_IMAGE_PIXELS:
                    raise Image.DecompressionBombError("too many pixels")
                picture.load()
                picture = ImageOps.exif_transpose(picture)
                pixels = _pil_to_uint8(picture)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file; fix its path in the image sheet") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(
            f"{path}: refused as a possible decompression bomb ({error}); "
            "downscale it below about 89 megapixels"
        ) from None
    except UnidentifiedImageError:
        raise ImageReadError(
            f"{path}: not an image file Pillow can read; replace it or remove its row"
        ) from None
    except OSError as error:
        raise ImageReadError(
            f"{path}: cannot be read ({error}); it may be truncated or a broken link, "
            "replace it or remove its row"
        ) from None
    if min(pixels.shape[:2]) < 1:
        raise ImageReadError(f"{path}: image has no pixels")
    return to_rgb(pixels)


def canny(image: np.ndarray, low: int, high: int) -> np.ndarray:
    """``cv2.Canny`` on an RGB uint8 image, as ControlNet's CannyDetector: HxW uint8, 0 or 255."""
    return cv2.Canny(image, low, high)


def edge_map(image: np.ndarray, resolution: int, low: int, high: int) -> np.ndarray:
    """The control input of one image: resize as ControlNet does, then Canny."""
    return canny(resize_to_resolution(to_rgb(image), resolution), low, high)


def control_image(edges: np.ndarray) -> Image.Image:
    """The 3-channel picture ControlNet is conditioned on, from an edge map."""
    return Image.fromarray(to_rgb(edges))
