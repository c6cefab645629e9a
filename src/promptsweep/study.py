"""The study design: the image and prompt sheets, and the generation settings.

A *condition* is what one generation job varies: ``baseline`` (the image's own
one-word prompt alone) or the id of an additional prompt; how each kind of
prompt reaches the pipeline is declared in :mod:`promptsweep.conditions`.
"""

from __future__ import annotations

import codecs
import csv
import re
import unicodedata
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from promptsweep.conditions import BASELINE, KIND_BY_NAME, SHEET_KINDS, GenerationInput, generation_input

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")

MODEL_SOURCE_CAVEATS: dict[str, str | None] = {
    "tiny": "tiny random model: these numbers test the workflow and mean nothing",
    "toy": "toy model trained on a toy world of coloured shapes, whose answers are known: not a real model",
    "pretrained": None,
}
"""Each ``model.source``, and what every table and plot of its study must say about it."""

IMAGE_COLUMNS = ("image_id", "path", "prompt")
PROMPT_COLUMNS = ("prompt_id", "kind", "emphasis", "text")


class SheetError(ValueError):
    """A row or column of a study sheet that the user must fix."""


@dataclass(frozen=True)
class ImageSpec:
    image_id: str
    path: str
    prompt: str


@dataclass(frozen=True)
class PromptSpec:
    prompt_id: str
    kind: str
    """One of :data:`promptsweep.conditions.SHEET_KINDS`."""
    emphasis: int
    text: str


@dataclass(frozen=True)
class GenerationSettings:
    """The ``generation:`` settings an image depends on, besides its texts and
    seed (resolution and Canny thresholds act through the edge map)."""

    steps: int
    guidance_scale: float
    controlnet_scale: float
    scheduler: str
    eta: float = 0.0
    guess_mode: bool = False
    true_cfg_scale: float = 1.0
    """FLUX's "true" classifier-free guidance: a second forward pass with the
    negative prompt, on when > 1. Other families guide with guidance_scale."""


MODEL_DEFAULT_KEYS = ("resolution", "steps", "guidance_scale", "controlnet_scale", "scheduler")
"""The ``generation:`` keys whose default is the model's own."""


def generation_defaults(model: dict[str, Any]) -> dict[str, Any]:
    """The ``generation:`` defaults of the config's ``model:``: the toy
    model's own, or its family's (:attr:`promptsweep.families.Family.defaults`)."""
    from promptsweep import families, toy

    if model["source"] == "toy":
        return dict(toy.GENERATION_DEFAULTS)
    return {key: families.get(model["family"]).defaults[key] for key in MODEL_DEFAULT_KEYS}


def with_generation_defaults(generation: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """``generation`` with every :data:`MODEL_DEFAULT_KEYS` it does not set
    taken from :func:`generation_defaults`."""
    return {**generation_defaults(model), **generation}


def study_caveat(model: dict[str, Any], generation: dict[str, Any], prompts: list[PromptSpec]) -> str | None:
    """What every table and plot of the study must say about its model: the
    source's caveat (:data:`MODEL_SOURCE_CAVEATS`), and that the negative
    prompts were ignored where the family does not read them under these
    settings (FLUX.1 without true guidance); None when nothing needs saying."""
    from promptsweep import families

    notes = [MODEL_SOURCE_CAVEATS[model["source"]]]
    family = families.get(model["family"])
    settings = GenerationSettings(**generation_settings(generation))
    if any(prompt.kind == "negative" for prompt in prompts) and not family.uses_negative_prompt(settings):
        notes.append(
            f"the {family.name} family ignored every negative prompt under these generation settings (docs/models.md)"
        )
    return "; ".join(note for note in notes if note) or None


def generation_settings(generation: dict[str, Any]) -> dict[str, Any]:
    """The :class:`GenerationSettings` keys of the config's ``generation:`` section."""
    return {field.name: generation[field.name] for field in fields(GenerationSettings)}


def _clean(value: str) -> str:
    # NFC so that the same text typed on two systems is the same prompt.
    return unicodedata.normalize("NFC", value.strip())


def _decode(path: Path) -> str:
    """The sheet's text: UTF-8 (with or without a byte-order mark), or UTF-16
    with a byte-order mark, which is what spreadsheets save as "Unicode text"."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SheetError(f"{path}: file not found; set its path in the config") from None
    except OSError as error:
        raise SheetError(f"{path}: cannot be read ({error.strerror}); fix its path in the config") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as error:
            raise SheetError(f"{path}: broken UTF-16 text ({error.reason}); save it as UTF-8") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise SheetError(
            f"{path}:{line}: not UTF-8 text (byte {data[error.start]:#04x}); save the "
            "sheet as UTF-8"
        ) from None


def _split_lines(text: str) -> list[str]:
    # Only \n, \r\n and \r end a line, as in an editor: str.splitlines would
    # also split at characters such as U+2028 or U+0085 inside a prompt and
    # shift every line number reported after it.
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _fields(line: str) -> list[str]:
    """The cleaned tab-separated values of one line, without trailing empty
    ones (stray tabs at the end of a line)."""
    values = [_clean(value) for value in next(csv.reader([line], delimiter="\t"))]
    while values and not values[-1]:
        values.pop()
    return values


def _read_rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a tab-separated sheet as (line number, {column: value}).

    Tolerates Windows line endings, a byte-order mark, stray whitespace around
    values, trailing tabs, blank lines and ``#`` comment lines; requires the
    header to name exactly ``columns`` (in any order).
    """
    lines = [
        (number, line)
        for number, line in enumerate(_split_lines(_decode(path)), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise SheetError(f"{path}: empty; expected a tab-separated header {list(columns)}")
    header_number, header_line = lines[0]
    header = _fields(header_line)
    if sorted(header) != sorted(columns):
        raise SheetError(
            f"{path}:{header_number}: header is {header}; expected the tab-separated "
            f"columns {list(columns)}"
        )
    rows = []
    for number, line in lines[1:]:
        values = _fields(line)
        # Trailing empty values were dropped: pad them back so that an empty
        # last column is reported as such, not as a missing column.
        if len(values) < len(header) and line.count("\t") >= len(header) - 1:
            values += [""] * (len(header) - len(values))
        if len(values) != len(header):
            raise SheetError(
                f"{path}:{number}: {len(values)} tab-separated values, expected "
                f"{len(header)} ({', '.join(header)}); check for spaces instead of tabs"
            )
        rows.append((number, dict(zip(header, values))))
    return rows


def _check_id(
    path: Path, number: int, column: str, value: str, seen: dict[str, int]
) -> None:
    """An id becomes a directory or file name: letters, digits, _ and - only,
    unique even where the file system ignores case (macOS, Windows)."""
    if not ID_PATTERN.fullmatch(value):
        raise SheetError(
            f"{path}:{number}: {column} {value!r} is not a valid id; use only letters, "
            "digits, _ and - (it becomes part of file paths, so no /, . or spaces)"
        )
    key = value.casefold()
    if key in seen:
        raise SheetError(
            f"{path}:{number}: duplicate {column} {value!r} (also on line {seen[key]}, "
            "ignoring case); give each row its own id"
        )
    seen[key] = number


def read_images(path: Path) -> list[ImageSpec]:
    """Read the image sheet: ``image_id``, ``path`` (relative to the sheet's
    working directory or absolute) and the image's one-word ``prompt``."""
    images: list[ImageSpec] = []
    seen: dict[str, int] = {}
    for number, row in _read_rows(path, IMAGE_COLUMNS):
        _check_id(path, number, "image_id", row["image_id"], seen)
        if not row["path"]:
            raise SheetError(
                f"{path}:{number}: empty path for image {row['image_id']!r}; give the "
                "image file's path"
            )
        if not row["prompt"]:
            raise SheetError(
                f"{path}:{number}: empty prompt for image {row['image_id']!r}; write the "
                "word that names what the image shows"
            )
        images.append(ImageSpec(row["image_id"], row["path"], row["prompt"]))
    if not images:
        raise SheetError(f"{path}: no images; add at least one row")
    return images


def read_prompts(path: Path) -> list[PromptSpec]:
    """Read the additional-prompt sheet: ``prompt_id``, ``kind``
    (positive|negative), ``emphasis`` (rank 1..n within its kind) and ``text``."""
    prompts: list[PromptSpec] = []
    seen: dict[str, int] = {}
    for number, row in _read_rows(path, PROMPT_COLUMNS):
        prompt_id = row["prompt_id"]
        if prompt_id.casefold() == BASELINE:
            raise SheetError(
                f"{path}:{number}: prompt_id {BASELINE!r} is reserved for the "
                "generation without an additional prompt; rename it"
            )
        _check_id(path, number, "prompt_id", prompt_id, seen)
        kind = row["kind"].lower()
        if kind not in SHEET_KINDS:
            choices = " or ".join(f"{name!r} ({KIND_BY_NAME[name].description})" for name in SHEET_KINDS)
            raise SheetError(
                f"{path}:{number}: kind {row['kind']!r} of {prompt_id!r} is unknown; write {choices}"
            )
        try:
            emphasis = int(row["emphasis"])
        except ValueError:
            emphasis = 0
        if emphasis < 1:
            raise SheetError(
                f"{path}:{number}: emphasis {row['emphasis']!r} of {prompt_id!r} must "
                "be a whole number >= 1 (1 = weakest)"
            )
        if not row["text"]:
            raise SheetError(
                f"{path}:{number}: empty text for prompt {prompt_id!r}; write the "
                "additional prompt or remove the row"
            )
        prompts.append(PromptSpec(prompt_id, kind, emphasis, row["text"]))
    return prompts


def condition_input(image: ImageSpec, prompt: PromptSpec | None) -> GenerationInput:
    """What the pipeline receives for one (image, condition); ``prompt=None``
    is the baseline."""
    if prompt is None:
        return generation_input(BASELINE, image.prompt)
    return generation_input(prompt.kind, image.prompt, prompt.text)
