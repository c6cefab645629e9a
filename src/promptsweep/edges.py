"""Input images to Canny edge maps, with ControlNet's own preprocessing.

ControlNet 1.0 (``gradio_canny2image.py``, ``annotator/util.py``) turns any
input into a 3-channel uint8 image (``HWC3``: gray repeated, RGBA blended on
white), resizes it so that the shorter side is the resolution and both sides
are multiples of 64 (LANCZOS4 when enlarging, INTER_AREA when shrinking), and
runs ``cv2.Canny`` on that RGB image.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
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
    """Resize like ControlNet: LANCZOS4 when enlarging, INTER_AREA when shrinking.

    Raises ``ValueError`` when the result would be larger than
    :data:`MAX_IMAGE_PIXELS`: only a sliver (say 1x2000 pixels) gets there, and
    ControlNet would try to allocate gigabytes for it.
    """
    height, width = image.shape[:2]
    new_height, new_width = resized_shape(height, width, resolution)
    if new_height * new_width > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"a {width}x{height} image would become {new_width}x{new_height} at resolution "
            f"{resolution} (shorter side); crop it to a less extreme aspect ratio"
        )
    enlarging = resolution / min(height, width) > 1
    interpolation = cv2.INTER_LANCZOS4 if enlarging else cv2.INTER_AREA
    return cv2.resize(image, (new_width, new_height), interpolation=interpolation)


def _scale_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] linearly onto 0..255 (a constant image becomes black)."""
    if not high > low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - low) / (high - low) * 255.0
    return np.nan_to_num(scaled).clip(0, 255).round().astype(np.uint8)


def _pil_to_uint8(picture: Image.Image) -> np.ndarray:
    """Pixels of any Pillow mode as uint8 gray, RGB or RGBA.

    ControlNet only takes uint8, so deeper images are scaled, never clipped:
    clipping (what ``convert("L")`` does to 16-bit gray) turns almost every
    pixel white and leaves no edges.
    """
    if picture.mode.startswith("I;16"):
        # 16-bit gray (how current Pillow opens 16-bit PNGs): the full range to 8 bits.
        return _scale_to_uint8(np.asarray(picture), 0.0, 65535.0)
    if picture.mode == "I":
        # 32-bit integers: 16-bit PNGs in older Pillow, some TIFFs. Samples that
        # fit in 16 bits are read as 16-bit; anything else by its own range.
        values = np.asarray(picture)
        low, high = int(values.min()), int(values.max())
        if low >= 0 and high <= 65535:
            return _scale_to_uint8(values, 0.0, 65535.0)
        return _scale_to_uint8(values, float(low), float(high))
    if picture.mode == "F":
        values = np.asarray(picture)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return np.zeros(values.shape, dtype=np.uint8)
        return _scale_to_uint8(values, float(finite.min()), float(finite.max()))
    if picture.mode in ("L", "RGB", "RGBA"):
        return np.asarray(picture)
    if picture.mode in ("LA", "La", "PA", "RGBa") or (
        picture.mode == "P" and "transparency" in picture.info
    ):
        # Keep the alpha channel so that to_rgb puts transparent areas on white.
        return np.asarray(picture.convert("RGBA"))
    # P, CMYK, YCbCr, LAB, HSV, 1, ...: Pillow's conversion to RGB (CMYK
    # JPEGs, including Adobe's inverted ones, are undone by the JPEG reader).
    return np.asarray(picture.convert("RGB"))


def _file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an image before even opening it, or None."""
    try:
        status = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return (
                f"broken symbolic link (to {os.readlink(path)!r}); point it at the "
                "image or fix the path in the image sheet"
            )
        return (
            "no such file; fix its path in the image sheet (relative paths start "
            "from the directory snakemake runs in)"
        )
    except OSError as error:
        if error.errno == errno.ELOOP:
            return (
                "symbolic link loop; point the link at the image file or fix "
                "the path in the image sheet"
            )
        return f"cannot be accessed ({error.strerror}); fix its path or permissions"
    if stat.S_ISDIR(status.st_mode):
        return "is a directory; the image sheet must name an image file"
    if status.st_size == 0:
        return "empty file (0 bytes); replace it with the image or remove its row from the image sheet"
    return None


def _first_bytes(path: Path, count: int = 16) -> bytes:
    try:
        with path.open("rb") as stream:
            return stream.read(count)
    except OSError:
        return b""


def read_image(path: Path) -> np.ndarray:
    """Read an input image as HxWx3 uint8 RGB, upright per its EXIF orientation.

    Any mode is normalised as ControlNet's ``HWC3`` would after a conversion
    to 8 bits: gray and palette become RGB, transparency goes white, 16 bits
    are scaled down, CMYK becomes RGB.

    Raises :class:`ImageReadError` naming the file and the fix for anything
    that is not a complete, decodable image of a sane size; the edges job of
    that image then fails alone.
    """
    path = Path(path)
    problem = _file_problem(path)
    if problem is not None:
        raise ImageReadError(f"{path}: {problem}")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as picture:
                # The header alone gives the size: check it before decoding,
                # also where someone has set Image.MAX_IMAGE_PIXELS = None.
                if picture.width * picture.height > MAX_IMAGE_PIXELS:
                    raise Image.DecompressionBombError(
                        f"{picture.width}x{picture.height} pixels"
                    )
                picture.load()
                picture = ImageOps.exif_transpose(picture)
                pixels = _pil_to_uint8(picture)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(
            f"{path}: refused as a possible decompression bomb ({error}); "
            f"downscale it below {MAX_IMAGE_PIXELS:,} pixels"
        ) from None
    except UnidentifiedImageError:
        raise ImageReadError(
            f"{path}: not an image format Pillow can read (the file starts with "
            f"{_first_bytes(path)!r}); replace it with a PNG or JPEG file or remove "
            "its row from the image sheet"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as error:
        # Truncated or corrupt data: Pillow raises OSError ("image file is
        # truncated"), SyntaxError (broken PNG chunks) and others.
        raise ImageReadError(
            f"{path}: truncated or corrupt image data ({type(error).__name__}: {error}); "
            "export or download it again, or remove its row from the image sheet"
        ) from None
    if min(pixels.shape[:2]) < 1:
        raise ImageReadError(f"{path}: image has no pixels; replace it or remove its row")
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
