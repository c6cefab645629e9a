"""A static HTML gallery of a study's pairs: where each prompt changed the image.

:func:`write_gallery` writes one folder that opens from disk (``file://``) on
any machine with a browser, with no network and no framework:

- ``index.html``, ``gallery.css``, ``gallery.js``: the page;
- ``data.js``: the pairs as a JavaScript global (browsers refuse ``fetch()`` of
  a ``file://`` URL, but load a ``<script>`` from one);
- ``thumbs/{role}/{name}.webp`` and ``full/{role}/{name}.webp``: every edge
  map, baseline, variant and SSIM map as a thumbnail and at full size. A
  picture shared by several pairs (an image's edge map, a seed's baseline) is
  written once.

Full-size pictures are WebP, lossy at quality 85 for photographs and SSIM maps
(PNG copies would make the default study's gallery over 20 MB), and
lossless for edge maps (thin binary lines compress well losslessly and blur
when compressed lossily). The lossless originals stay where the workflow wrote them.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from promptsweep import files, plots
from promptsweep.threads import map_measure

IDENTITY_COLUMNS = ("image_id", "prompt_id", "kind", "seed")
PATH_COLUMNS = ("edge_path", "baseline_path", "variant_path", "ssim_map_path")
REQUIRED_COLUMNS = (*IDENTITY_COLUMNS, *PATH_COLUMNS)
DOSE_COLUMN = "dose"
# The pairs table's reason a pair was left out of the statistics, shown with it.
NOTE_COLUMN = "excluded"
# Roles of a pair's pictures, in the order the page shows them.
ROLES = ("edge", "baseline", "variant", "ssim")

THUMBNAIL_SIDE = 128
THUMBNAIL_QUALITY = 80
FULL_QUALITY = 70
INDEX_FILE = "index.html"
# The page's files that are copied as they are; index.html gets the title.
STATIC_FILES = ("gallery.css", "gallery.js")
DATA_FILE = "data.js"
# Stops of the SSIM maps' colormap, for the page's colorbar.
COLORBAR_STOPS = 9
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._@-]+")


@dataclass(frozen=True)
class Picture:
    """One picture of the gallery: what it shows and where its two sizes go.

    ``sources`` holds the one file it is made from (for an SSIM map, the
    picture the pair-metric job saved).
    """

    role: str
    sources: tuple[Path, ...]
    name: str

    @property
    def thumbnail(self) -> str:
        return f"thumbs/{self.role}/{self.name}.webp"

    @property
    def full(self) -> str:
        return f"full/{self.role}/{self.name}.webp"


def check_pairs(pairs: pd.DataFrame) -> None:
    """Raise ValueError naming the required columns that ``pairs`` lacks."""
    missing = [column for column in REQUIRED_COLUMNS if column not in pairs.columns]
    if missing:
        raise ValueError(f"the pairs table lacks the column(s) {', '.join(missing)}")


def metric_columns(pairs: pd.DataFrame) -> list[str]:
    """The numeric columns shown as a pair's metrics, in table order: all but
    the seed, the dose and the emphasis rank (which identify the pair) and
    true/false flags."""
    return [
        column
        for column in pairs.columns
        if column not in (*IDENTITY_COLUMNS, DOSE_COLUMN, "emphasis")
        and pd.api.types.is_numeric_dtype(pairs[column])
        and not pd.api.types.is_bool_dtype(pairs[column])
    ]


def _safe_name(text: str) -> str:
    """``text`` with the characters that are unsafe in file names and URLs replaced."""
    return _UNSAFE_NAME_CHARACTERS.sub("_", text)


def plan_pictures(pairs: pd.DataFrame) -> list[dict[str, Picture]]:
    """Per row of ``pairs``, its four pictures by role; rows that share a
    source file (and so a picture) get the same :class:`Picture`.

    Names say what a picture shows (``cat_seed0``, ``cat_pos5@0.5_seed0``);
    should two different sources get one name, the later gets a numbered suffix.
    """
    by_sources: dict[tuple[str, tuple[Path, ...]], Picture] = {}
    names_taken: set[tuple[str, str]] = set()

    def picture(role: str, sources: tuple[Path, ...], wanted_name: str) -> Picture:
        key = (role, sources)
        if key not in by_sources:
            name, suffix = _safe_name(wanted_name), 1
            while (role, name) in names_taken:
                suffix += 1
                name = f"{_safe_name(wanted_name)}-{suffix}"
            names_taken.add((role, name))
            by_sources[key] = Picture(role, sources, name)
        return by_sources[key]

    planned = []
    for row in pairs.to_dict("records"):
        image, prompt, seed = str(row["image_id"]), str(row["prompt_id"]), int(row["seed"])
        baseline, variant = Path(row["baseline_path"]), Path(row["variant_path"])
        planned.append({
            "edge": picture("edge", (Path(row["edge_path"]),), image),
            "baseline": picture("baseline", (baseline,), f"{image}_seed{seed}"),
            "variant": picture("variant", (variant,), f"{image}_{prompt}_seed{seed}"),
            "ssim": picture("ssim", (Path(row["ssim_map_path"]),), f"{image}_{prompt}_seed{seed}"),
        })
    return planned


def unique_pictures(planned: list[dict[str, Picture]]) -> list[Picture]:
    """Every picture of :func:`plan_pictures` once, in the order first used."""
    return list(dict.fromkeys(picture for row in planned for picture in row.values()))


def _json_value(value: Any) -> Any:
    """A table cell as a JSON value: numpy scalars as Python ones, NaN as null
    (missing); infinities stay (a PSNR of identical images is infinite) and are
    written as JavaScript's ``Infinity``."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def pair_records(
    pairs: pd.DataFrame, planned: list[dict[str, Picture]], metrics_shown: list[str]
) -> list[dict[str, Any]]:
    """One JSON-ready record per row of ``pairs``: its identity, dose (null
    without one), note, metric values and picture paths relative to the gallery."""
    has_dose = DOSE_COLUMN in pairs.columns
    has_note = NOTE_COLUMN in pairs.columns
    records = []
    for row, pictures in zip(pairs.to_dict("records"), planned):
        note = row[NOTE_COLUMN] if has_note else ""
        records.append({
            "image_id": str(row["image_id"]),
            "prompt_id": str(row["prompt_id"]),
            "kind": str(row["kind"]),
            "seed": int(row["seed"]),
            "dose": _json_value(row[DOSE_COLUMN]) if has_dose else None,
            "note": note if isinstance(note, str) else "",
            "values": {metric: _json_value(row[metric]) for metric in metrics_shown},
            "pictures": {role: [pictures[role].thumbnail, pictures[role].full] for role in ROLES},
        })
    return records


def colorbar_stops(count: int = COLORBAR_STOPS) -> list[str]:
    """CSS colours of the SSIM maps' colormap from the low to the high end of its range."""
    low, high = plots.SSIM_MAP_RANGE
    colours = plots.ssim_map_picture(np.linspace(low, high, count)[np.newaxis, :])[0]
    return ["#{:02x}{:02x}{:02x}".format(*colour) for colour in colours]


def data_script(data: Mapping[str, Any]) -> str:
    """``data.js``: ``data`` assigned to the global ``GALLERY_DATA``."""
    return f"window.GALLERY_DATA = {json.dumps(data, separators=(',', ':'))};\n"


def thumbnail_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The size of a thumbnail whose longer side is ``side`` (never enlarged)."""
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _write_utf8(path: Path, text: str) -> None:
    # The page declares UTF-8, whatever this machine's default encoding is.
    with files.atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _save_webp(picture: Image.Image, path: Path, lossless: bool, quality: int) -> None:
    with files.atomic_path(path) as temporary:
        picture.save(temporary, format="WEBP", lossless=lossless, quality=quality)


def write_picture(picture: Picture, output_dir: Path, thumbnail_side: int) -> None:
    """Write ``picture``'s thumbnail and full-size file under ``output_dir``."""
    full = Image.fromarray(files.read_png(picture.sources[0])).convert("RGB")
    # Thin binary edge lines survive only lossless compression.
    lossless = picture.role == "edge"
    _save_webp(full, output_dir / picture.full, lossless, FULL_QUALITY)
    thumbnail = full.resize(thumbnail_size(*full.size, thumbnail_side), Image.Resampling.LANCZOS)
    _save_webp(thumbnail, output_dir / picture.thumbnail, False, THUMBNAIL_QUALITY)


def _page_file(name: str) -> str:
    """A file of the page, shipped as package data in ``promptsweep/gallery_page``."""
    return resources.files("promptsweep").joinpath("gallery_page", name).read_text(encoding="utf-8")


def index_html(title: str) -> str:
    return _page_file(INDEX_FILE).replace("{{title}}", html.escape(title))


def write_gallery(
    pairs: pd.DataFrame,
    output_dir: str | Path,
    title: str,
    thumbnail_side: int = THUMBNAIL_SIDE,
) -> Path:
    """Write the gallery of ``pairs`` into ``output_dir`` and return its ``index.html``.

    ``pairs`` has one row per pair with the columns ``image_id``, ``prompt_id``,
    ``kind``, ``seed``, ``edge_path``, ``baseline_path`` and ``variant_path``
    (PNG files; relative paths are read from the working directory), an
    optional ``dose`` and an optional ``excluded`` note; every other numeric
    column is a metric shown with the pair (see :func:`metric_columns`). Rows
    keep their order; the page shows them in it until sorted otherwise.
    ``ssim_map_path`` is the pair's SSIM map as a picture
    (:func:`promptsweep.plots.ssim_map_picture`), as the pair metric jobs save it.

    Files of an earlier gallery in ``output_dir`` are overwritten, not removed.
    Raises ValueError if a required column is missing.
    """
    check_pairs(pairs)
    output_dir = Path(output_dir)
    planned = plan_pictures(pairs)
    # In metric processes, when the run has them: encoding the pictures was the
    # longest job after the last generation (36 s for 676 pictures at 512 px).
    map_measure(partial(write_picture, output_dir=output_dir, thumbnail_side=thumbnail_side), unique_pictures(planned))
    metrics_shown = metric_columns(pairs)
    data = {
        "title": title,
        "metrics": metrics_shown,
        "thumbnail_side": thumbnail_side,
        "colorbar": {"stops": colorbar_stops(), "range": list(plots.SSIM_MAP_RANGE), "label": plots.SSIM_MAP_LABEL},
        "pairs": pair_records(pairs, planned, metrics_shown),
    }
    _write_utf8(output_dir / DATA_FILE, data_script(data))
    for name in STATIC_FILES:
        _write_utf8(output_dir / name, _page_file(name))
    # index.html last: a folder with an index.html is a finished gallery.
    index = output_dir / INDEX_FILE
    _write_utf8(index, index_html(title))
    return index


def write_models_page(
    models: pd.DataFrame, plot: str | Path, galleries: Mapping[str, str | Path], output: str | Path, title: str
) -> None:
    """The front page of a study of several models, ``output``: the effect of
    each prompt per model (``plot``), the table of every model's answers
    (``models.csv``) and a link to each model's own gallery (``galleries``, by
    name), all linked relative to the page."""
    output = Path(output)

    def link(path: str | Path) -> str:
        return html.escape(Path(os.path.relpath(path, output.parent)).as_posix())

    links = "\n".join(
        f'<li><a href="{link(gallery)}/index.html">{html.escape(name)}</a></li>' for name, gallery in galleries.items()
    )
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>Each model's gallery, with every pair of its study:</p>
<ul>
{links}
</ul>
<img src="{link(plot)}" alt="the effect of each additional prompt in every model" style="max-width:100%">
{models.fillna("").to_html(index=False, float_format=lambda value: f"{value:.3f}", border=0)}
</body>
</html>
"""
    _write_utf8(output, page)
