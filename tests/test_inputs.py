"""Bad inputs: each one either works (normalised as ControlNet's own
preprocessing would) or is rejected with a message that names the file or
row and the fix. Sheet and config errors stop the run while the workflow is
parsed, before any job; an unreadable image fails only its own jobs."""

from __future__ import annotations

import copy
import io
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageFile
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from promptsweep import edges, files
from promptsweep import study as sheets

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def picture(size: tuple[int, int] = (80, 64)) -> np.ndarray:
    """An RGB picture with edges: a dark rectangle on a light background."""
    width, height = size
    pixels = np.full((height, width, 3), 220, dtype=np.uint8)
    pixels[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = (30, 60, 90)
    return pixels


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def assert_rejected(path: Path, *hints: str) -> str:
    with pytest.raises(edges.ImageReadError) as caught:
        edges.read_image(path)
    message = str(caught.value)
    assert str(path) in message
    for hint in hints:
        assert hint in message, message
    return message


# --- images that work ------------------------------------------------------


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (10, 1))
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    image = edges.read_image(tmp_path / "gray.png")
    assert image.shape == (10, 64, 3) and image.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], gray)


@pytest.mark.parametrize(
    ("samples", "expected"),
    [([0, 257, 32768, 65535], [0, 1, 128, 255])],
)
def test_16_bit_gray_png_is_scaled_not_clipped(
    tmp_path: Path, samples: list[int], expected: list[int]
) -> None:
    deep = np.array([samples], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    image = edges.read_image(tmp_path / "deep.png")
    assert image.shape == (1, 4, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, :, 0], expected)


def test_16_bit_rgb_png_keeps_its_colours(tmp_path: Path) -> None:
    import cv2

    bgr = np.zeros((2, 3, 3), dtype=np.uint16)
    bgr[:, :, 0] = 65535  # blue
    bgr[:, :, 2] = 32768  # red
    cv2.imwrite(str(tmp_path / "deep.png"), bgr)
    image = edges.read_image(tmp_path / "deep.png")
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, 0], [128, 0, 255])


def test_32_bit_integer_image_is_scaled(tmp_path: Path) -> None:
    # Mode "I": how older Pillow opens 16-bit PNGs; samples within 16 bits
    # are read as 16-bit.
    wide = np.array([[0, 65535]], dtype=np.int32)
    Image.fromarray(wide, mode="I").save(tmp_path / "wide.tif")
    image = edges.read_image(tmp_path / "wide.tif")
    np.testing.assert_array_equal(image[0, :, 1], [0, 255])


def test_rgba_transparency_becomes_white(tmp_path: Path) -> None:
    rgba = np.array(
        [[[0, 0, 0, 0], [255, 0, 0, 255], [0, 0, 0, 255], [0, 0, 0, 128]]], dtype=np.uint8
    )
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    image = edges.read_image(tmp_path / "alpha.png")
    assert image.shape == (1, 4, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, :3], [[255, 255, 255], [255, 0, 0], [0, 0, 0]])
    assert 125 <= image[0, 3, 0] <= 129 and len(set(image[0, 3])) == 1


def test_palette_image_becomes_rgb(tmp_path: Path) -> None:
    colours = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], dtype=np.uint8)
    paletted = Image.fromarray(colours).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    paletted.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    image = edges.read_image(tmp_path / "palette.png")
    assert image.shape == (1, 4, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, colours)


def test_palette_transparency_becomes_white(tmp_path: Path) -> None:
    colours = np.array([[[255, 0, 0], [0, 0, 0]]], dtype=np.uint8)
    paletted = Image.fromarray(colours).convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
    black = int(np.asarray(paletted)[0, 1])
    paletted.save(tmp_path / "palette.png", transparency=black)
    image = edges.read_image(tmp_path / "palette.png")
    np.testing.assert_array_equal(image[0], [[255, 0, 0], [255, 255, 255]])


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((16, 32, 3), dtype=np.uint8)
    rgb[:, :16] = (200, 30, 30)
    rgb[:, 16:] = (30, 30, 200)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    image = edges.read_image(tmp_path / "cmyk.jpg")
    assert image.shape == (16, 32, 3) and image.dtype == np.uint8
    np.testing.assert_allclose(image[8, 4], (200, 30, 30), atol=12)
    np.testing.assert_allclose(image[8, 28], (30, 30, 200), atol=12)


def test_exif_rotated_jpeg_is_turned_upright(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high, left half black. Orientation 6 means "rotate
    # 90 degrees clockwise to display": upright it is 20 wide x 40 high with
    # the black half on top.
    stored = np.full((20, 40, 3), 255, dtype=np.uint8)
    stored[:, :20] = 0
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image = edges.read_image(tmp_path / "rotated.jpg")
    assert image.shape == (40, 20, 3) and image.dtype == np.uint8
    assert image[:18].max() < 40 and image[22:].min() > 215


@pytest.mark.parametrize("resolution", [64, 512])
def test_one_pixel_image_gives_a_blank_edge_map(tmp_path: Path, resolution: int) -> None:
    Image.fromarray(np.array([[[10, 20, 30]]], dtype=np.uint8)).save(tmp_path / "dot.png")
    image = edges.read_image(tmp_path / "dot.png")
    assert image.shape == (1, 1, 3)
    edge = edges.edge_map(image, resolution, 100, 200)
    assert edge.shape == (resolution, resolution) and edge.dtype == np.uint8
    assert not edge.any()


def test_image_far_larger_than_the_resolution_is_shrunk(tmp_path: Path) -> None:
    Image.fromarray(picture((4000, 3000))).save(tmp_path / "large.jpg", quality=90)
    image = edges.read_image(tmp_path / "large.jpg")
    assert image.shape == (3000, 4000, 3)
    edge = edges.edge_map(image, 512, 100, 200)
    # Shorter side at the resolution, the longer one 4000 * 512 / 3000 = 683
    # rounded to a multiple of 64.
    assert edge.shape == (512, 704)
    assert edge.any()


def test_sliver_that_would_grow_huge_is_refused() -> None:
    # Not a file problem: a 1 x 2000 sliver at resolution 512 would be resized
    # to 512 x 1024000 (1.5 GB as RGB); it is refused instead.
    with pytest.raises(ValueError, match="crop it"):
        edges.edge_map(np.zeros((1, 2000, 3), dtype=np.uint8), 512, 100, 200)


# --- images that are rejected -----------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("kept", [0.5, 0.9, 24])
def test_truncated_image_is_rejected(tmp_path: Path, fmt: str, kept: float) -> None:
    # Noise, so that every part of the file holds pixels.
    noise = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    data = encoded(noise, fmt)
    cut = int(kept) if kept > 1 else int(len(data) * kept)
    path = tmp_path / f"truncated.{fmt.lower()}"
    path.write_bytes(data[:cut])
    assert_rejected(path, "remove its row")


def test_png_missing_only_its_end_chunk_works(tmp_path: Path) -> None:
    # Every pixel row is there, only the IEND chunk is missing: Pillow decodes
    # the whole picture, so it is used rather than rejected.
    data = encoded(picture(), "PNG")
    assert data.endswith(b"IEND\xaeB`\x82")
    (tmp_path / "endless.png").write_bytes(data[:-12])
    np.testing.assert_array_equal(edges.read_image(tmp_path / "endless.png"), picture())


def test_text_file_named_png_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("these are my notes, not a picture\n")
    assert_rejected(path, "not an image format", "these are my", "replace it with a PNG or JPEG")


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert_rejected(path, "empty file", "replace it")


def png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR chunk (with a correct CRC) claims another size."""
    data = bytearray(encoded(picture((8, 8)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize(
    ("width", "height", "pillow_limit"),
    [
        (10_000, 10_000, "default"),  # above Pillow's limit: Pillow only warns
        (40_000, 40_000, "default"),  # above twice the limit: Pillow refuses
        (10_000, 10_000, None),  # Pillow's check switched off elsewhere
    ],
)
def test_decompression_bomb_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int, height: int, pillow_limit: str | None
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(width, height))
    if pillow_limit is None:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the bomb was decoded")

    # Decoding would allocate gigabytes: the size must be refused from the header.
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert_rejected(path, "decompression bomb", "downscale it")


def test_missing_path_is_rejected(tmp_path: Path) -> None:
    assert_rejected(tmp_path / "nowhere" / "cat.png", "no such file", "fix its path")


def test_symlink_loop_is_rejected(tmp_path: Path) -> None:
    os.symlink(tmp_path / "b.png", tmp_path / "a.png")
    os.symlink(tmp_path / "a.png", tmp_path / "b.png")
    assert_rejected(tmp_path / "a.png", "symbolic link loop", "fix the path")


def test_broken_symlink_and_directory_are_rejected(tmp_path: Path) -> None:
    os.symlink(tmp_path / "gone.png", tmp_path / "link.png")
    assert_rejected(tmp_path / "link.png", "broken symbolic link", "gone.png")
    (tmp_path / "folder.png").mkdir()
    assert_rejected(tmp_path / "folder.png", "is a directory")


# --- sheets ----------------------------------------------------------------


def write_sheet(path: Path, text: str, encoding: str = "utf-8", newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


def sheet_error(reader, path: Path, *hints: str) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(sheets.SheetError) as caught:
        reader(path)
    message = str(caught.value)
    for hint in hints:
        assert hint in message, message
    return message


@pytest.mark.parametrize(
    ("encoding", "newline"),
    [("utf-8", "\r\n"), ("utf-8-sig", "\r\n"), ("utf-8-sig", "\r"), ("utf-16", "\r\n")],
    ids=["crlf", "bom-crlf", "bom-cr", "utf16-excel"],
)
def test_windows_sheets_with_stray_whitespace_parse(
    tmp_path: Path, encoding: str, newline: str
) -> None:
    images = write_sheet(
        tmp_path / "images.tsv",
        "# image sheet\n"
        " image_id \tpath\t prompt\t\n"
        "\n"
        "cat\t resources/cat.png \t cat \n"
        "dog\tresources/dog.png\tdog\t\t\n"
        "   \n",
        encoding,
        newline,
    )
    assert sheets.read_images(images) == [
        sheets.ImageSpec("cat", "resources/cat.png", "cat"),
        sheets.ImageSpec("dog", "resources/dog.png", "dog"),
    ]
    prompts = write_sheet(
        tmp_path / "prompts.tsv",
        "prompt_id\tkind\temphasis\ttext\n"
        "good \t Positive\t 1 \t best quality \n"
        "bad\tnegative\t1\tlow quality\t\n",
        encoding,
        newline,
    )
    assert sheets.read_prompts(prompts) == [
        sheets.PromptSpec("good", "positive", 1, "best quality"),
        sheets.PromptSpec("bad", "negative", 1, "low quality"),
    ]


def test_non_ascii_prompts_parse_and_are_nfc(tmp_path: Path) -> None:
    decomposed = "cafe\u0301"  # e + combining acute: the same word as "café"
    prompts = write_sheet(
        tmp_path / "prompts.tsv",
        "prompt_id\tkind\temphasis\ttext\n"
        f"fr\tpositive\t1\t{decomposed} crème brûlée\n"
        "ja\tpositive\t2\t高品質、細部まで\n"
        "emoji\tnegative\t1\tblurry 🙈, line\u2028separator\n"
        "broken\tnegative\tstrong\tbad\n",
    )
    # The U+2028 inside a prompt is not a line break: the error is on line 5.
    sheet_error(sheets.read_prompts, prompts, f"{prompts}:5:", "whole number")
    prompts.write_text("\n".join(prompts.read_text().split("\n")[:4]) + "\n")
    texts = [prompt.text for prompt in sheets.read_prompts(prompts)]
    assert texts == ["café crème brûlée", "高品質、細部まで", "blurry 🙈, line\u2028separator"]
    images = write_sheet(
        tmp_path / "images.tsv", "image_id\tpath\tprompt\nkatze\tBilder/Kätzchen.png\tKätzchen\n"
    )
    assert sheets.read_images(images) == [sheets.ImageSpec("katze", "Bilder/Kätzchen.png", "Kätzchen")]


def test_sheet_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    images = write_sheet(
        tmp_path / "images.tsv", "image_id\tpath\tprompt\ncafe\tcafe.png\tcafé\n", "latin-1"
    )
    sheet_error(sheets.read_images, images, f"{images}:2:", "save the sheet as UTF-8")


@pytest.mark.parametrize("bad_id", ["a/b", "..", "../cat", "x y", "cat.png"])
def test_id_that_is_not_a_file_name_is_rejected(tmp_path: Path, bad_id: str) -> None:
    images = write_sheet(
        tmp_path / "images.tsv", f"image_id\tpath\tprompt\ncat\tcat.png\tcat\n{bad_id}\tdog.png\tdog\n"
    )
    sheet_error(sheets.read_images, images, f"{images}:3:", repr(bad_id), "use only letters, digits")
    prompts = write_sheet(
        tmp_path / "prompts.tsv", f"prompt_id\tkind\temphasis\ttext\n{bad_id}\tpositive\t1\tgood\n"
    )
    sheet_error(sheets.read_prompts, prompts, f"{prompts}:2:", repr(bad_id), "use only letters")


@pytest.mark.parametrize("second", ["cat", "Cat"])
def test_duplicate_ids_are_rejected(tmp_path: Path, second: str) -> None:
    images = write_sheet(
        tmp_path / "images.tsv",
        f"image_id\tpath\tprompt\ncat\tcat.png\tcat\ndog\tdog.png\tdog\n{second}\tc2.png\tcat\n",
    )
    sheet_error(
        sheets.read_images, images, f"{images}:4:", "duplicate image_id", "line 2", "its own id"
    )
    prompts = write_sheet(
        tmp_path / "prompts.tsv",
        f"prompt_id\tkind\temphasis\ttext\ncat\tpositive\t1\tgood\n{second}\tnegative\t1\tbad\n",
    )
    sheet_error(sheets.read_prompts, prompts, f"{prompts}:3:", "duplicate prompt_id", "line 2")


@pytest.mark.parametrize("reserved", ["baseline", "Baseline"])
def test_reserved_prompt_id_is_rejected(tmp_path: Path, reserved: str) -> None:
    prompts = write_sheet(
        tmp_path / "prompts.tsv", f"prompt_id\tkind\temphasis\ttext\n{reserved}\tpositive\t1\tgood\n"
    )
    sheet_error(sheets.read_prompts, prompts, f"{prompts}:2:", "reserved", "rename it")


def test_unknown_prompt_kind_is_rejected(tmp_path: Path) -> None:
    prompts = write_sheet(
        tmp_path / "prompts.tsv",
        "prompt_id\tkind\temphasis\ttext\ngood\tpositive\t1\tgood\nodd\tneutral\t1\tplain\n",
    )
    sheet_error(sheets.read_prompts, prompts, f"{prompts}:3:", "'neutral'", "'positive'", "'negative'")


@pytest.mark.parametrize("blank", ["", "   ", "\u3000"])
def test_empty_prompts_are_rejected(tmp_path: Path, blank: str) -> None:
    images = write_sheet(tmp_path / "images.tsv", f"image_id\tpath\tprompt\ncat\tcat.png\t{blank}\n")
    sheet_error(sheets.read_images, images, f"{images}:2:", "empty prompt", "write the word")
    prompts = write_sheet(
        tmp_path / "prompts.tsv", f"prompt_id\tkind\temphasis\ttext\ngood\tpositive\t1\t{blank}\n"
    )
    sheet_error(sheets.read_prompts, prompts, f"{prompts}:2:", "empty text", "remove the row")


def test_spaces_instead_of_tabs_are_rejected(tmp_path: Path) -> None:
    images = write_sheet(tmp_path / "images.tsv", "image_id\tpath\tprompt\ncat  cat.png  cat\n")
    sheet_error(sheets.read_images, images, f"{images}:2:", "spaces instead of tabs")


# --- config ----------------------------------------------------------------


@pytest.fixture
def config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def set_key(config: dict, dotted: str, value: object) -> None:
    *parents, key = dotted.split(".")
    for parent in parents:
        config = config[parent]
    config[key] = value


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("colour", "red", "'colour' was unexpected"),  # unknown key
        ("generation.stepz", 20, "'stepz' was unexpected"),  # unknown (misspelt) key
        ("generation.steps", "twenty", "['generation']['steps']"),  # wrong type
        ("seeds", "0, 1", "['seeds']"),  # wrong type
        ("runtime.cpu_offload", "yes", "['runtime']['cpu_offload']"),  # wrong type
        ("seeds", [0, -1], "['seeds'][1]"),  # negative seed
        ("generation.resolution", 500, "['generation']['resolution']"),  # not x64
    ],
)
def test_bad_config_names_the_key(config: dict, key: str, value: object, named: str) -> None:
    validate(copy.deepcopy(config), schema=str(SCHEMA))  # the default config is valid
    set_key(config, key, value)
    with pytest.raises(WorkflowError) as caught:
        validate(config, schema=str(SCHEMA))
    assert named in str(caught.value)


@pytest.mark.workflow
def test_bad_config_stops_the_run_before_any_job(study) -> None:  # type: ignore[no-untyped-def]
    config = study.root / "config" / "config.yaml"
    config.write_text(config.read_text().replace("  steps: 2\n", "  steps: 2\n  stepz: 3\n"))
    result = study.snakemake("--dry-run", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "'stepz' was unexpected" in output
    assert "Job stats" not in output and not (study.root / "results").exists()


# --- an unreadable image in a run ---------------------------------------------


@pytest.mark.workflow
def test_unreadable_image_fails_only_its_own_jobs(study) -> None:  # type: ignore[no-untyped-def]
    (study.root / "resources" / "broken.png").write_text("not a picture\n")
    sheet = study.root / "config" / "images.tsv"
    sheet.write_text(sheet.read_text() + "broken\tresources/broken.png\tthing\n")
    targets = [f"results/pair_metrics/{image}/good.tsv" for image in ("square", "blocks", "broken")]
    result = study.snakemake("--keep-going", *targets, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "resources/broken.png: not an image format" in output
    results = study.root / "results"
    for image in ("square", "blocks"):
        assert (results / "pair_metrics" / image / "good.tsv").is_file(), output[-3000:]
        assert (results / "generated" / image / "baseline" / "seed0.png").is_file()
    assert not (results / "edges" / "broken.png").exists()
    assert not (results / "generated" / "broken").exists()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_results_get_the_permissions_of_any_new_file(tmp_path: Path, umask: int) -> None:
    """Written atomically, yet readable as the umask allows (a lab's shared
    results, a web server's gallery), with no temporary file left behind."""
    previous = os.umask(umask)
    try:
        files.write_json(tmp_path / "record.json", {"a": 1})
        files.write_png(tmp_path / "image.png", np.zeros((4, 4, 3), np.uint8))
        files.write_table(tmp_path / "table.csv", pd.DataFrame({"a": [1]}))
        files.write_text(tmp_path / "notes.txt", "text")
    finally:
        os.umask(previous)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["record.json", "image.png", "table.csv", "notes.txt"], 0o666 & ~umask)
