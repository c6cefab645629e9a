"""The toy world: pictures of coloured shapes and textures, drawn by code, with
captions that name what they show and how good they look.

Every picture is drawn clean first; its control is the clean picture's Canny
edges. Most pictures are then made ordinary, faded a little
(:data:`ORDINARY`), and some are given a strong defect
(:data:`DEGRADATIONS`), captioned most of the time with the word real
captions use for it. Only clean pictures are captioned with quality words
(:data:`QUALITY_WORDS`), nearly always. A model trained on these pairs learns
what the words mean: a prompt that names no quality gets an ordinary picture,
quality words a clean one, so the effect of a quality word in a prompt is
known in advance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

SIZE = 128
"""Side of every picture, in pixels."""

GROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "yellow": (240, 220, 40),
    "pink": (245, 160, 200),
    "cyan": (90, 220, 230),
    "orange": (245, 160, 60),
}
"""Light colours, one of which fills each picture's ground."""
SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 30),
    "green": (30, 120, 45),
    "blue": (35, 60, 200),
    "purple": (110, 40, 150),
    "brown": (110, 65, 30),
    "black": (20, 20, 20),
}
"""Dark colours, which fill the shapes.

Grounds are light and shapes dark, so that a shape's outline in the control
tells light from dark even where the prompt names no colour: with any colour
on any ground, a model that had not yet learned colour words drew the mean
colour, a grey in which Canny found few edges."""
COLOURS = GROUND_COLOURS | SHAPE_COLOURS
SHAPES = ("circle", "square", "triangle", "ellipse", "stripes")

QUALITY_WORDS = ("sharp", "detailed", "best quality", "high quality")
"""Words a clean picture's caption may carry."""
LOW_QUALITY_WORDS = ("low quality", "worst quality")
"""Words any degraded picture's caption may carry, on top of its own."""


def _blur(image: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigmaX=0.6 + 2.4 * level)


def _lowres(image: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    factor = 4 if level < 0.7 else 8
    small = cv2.resize(image, (SIZE // factor, SIZE // factor), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)


def _noise(image: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    return image + rng.normal(0.0, 0.03 + 0.09 * level, image.shape).astype(np.float32)


def _low_contrast(image: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    mean = image.mean()
    return mean + (image - mean) * 0.7 * 0.25**level


def _washed_out(image: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    gray = image.mean(axis=2, keepdims=True)
    faded = gray + (image - gray) * (0.5 - 0.3 * level)
    return 1.0 - (1.0 - faded) * (0.6 - 0.25 * level)


@dataclass(frozen=True)
class Degradation:
    """A way a picture is made worse, and the caption word for it.

    ``apply(picture, level, rng)`` degrades a float RGB picture by ``level``,
    from 0 (the mildest, still visible) to 1; ``rng`` draws its noise."""

    name: str
    word: str
    apply: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


DEGRADATIONS: tuple[Degradation, ...] = (
    Degradation("blur", "blurry", _blur),
    Degradation("lowres", "lowres", _lowres),
    Degradation("noise", "noisy", _noise),
    Degradation("low_contrast", "low contrast", _low_contrast),
    Degradation("washed_out", "washed out", _washed_out),
)
ORDINARY: tuple[str, ...] = ("washed_out",)
"""The degradations of an ordinary picture, at a mild level: faded, as most
pictures are beside a clean one. A caption that names no quality is then, as
in real captions, mostly of an ordinary picture, and quality words in a
prompt make a change every picture shares.

Fading, not blur: a model trained for the hour learns the words for changes
of the whole picture's colour and hardly those for fine detail. Trained on a
world with no ordinary pictures, `washed out` in a positive prompt lowered
RMS contrast by 1.78 paired standard deviations, `blurry` raised sharpness
by 0.11; with blur and low contrast as the ordinary degradations, quality
words moved no metric at q < 0.05 (docs/models.md)."""
MILD_LEVELS = (0.0, 0.25)
"""The range of an ordinary picture's levels (its colour kept 50% to 42%,
its distance from white 60% to 54%)."""
STRONG_LEVELS = (0.4, 1.0)
"""The range of a defect's level, one its caption names most of the time."""
ORDINARY_SHARE = 0.65
"""The share of pictures that are ordinary; the rest are drawn clean."""
DEFECT_SHARE = 0.3
"""The share of pictures, ordinary or clean, given a strong defect on top:
one degradation at a strong level, replacing its mild level where it has one."""
TWICE_DEFECTIVE_SHARE = 0.25
"""The share of defective pictures given two defects, and captioned with both
words, so that a negative prompt naming several degradations is a text the
model has read."""
QUALITY_SHARE = 0.9
"""How often a clean picture's caption holds quality words."""
STRONG_NAMED_SHARE = 0.8
"""How often a caption names a defect the picture has."""
MILD_NAMED_SHARE = 0.15
"""How often a caption names a mild degradation, so that a word means its
degradation at any level."""
DEFECT_LOW_QUALITY_SHARE = 0.5
"""How often a defective picture's caption holds a low-quality word."""
ORDINARY_LOW_QUALITY_SHARE = 0.3
"""How often an ordinary picture's caption holds one, as real captions call
mediocre pictures low quality too."""
QUALITY_ONLY_SHARE = 0.15
"""The share of captions with quality words that hold nothing else."""
UNSEEN_SHARE = 0.5
"""The share of captions with one or two words the world never uses."""
UNSEEN_ONLY_SHARE = 0.05
"""The share of captions that hold nothing but words the world never uses."""


@dataclass(frozen=True)
class Applied:
    """A degradation as applied to one picture, at its level."""

    degradation: Degradation
    level: float

    @property
    def strong(self) -> bool:
        return self.level >= STRONG_LEVELS[0]


def plural(shape: str) -> str:
    return shape if shape.endswith("s") else f"{shape}s"


def vocabulary() -> list[str]:
    """Every word a training caption can hold."""
    words = set(COLOURS) | {plural(shape) for shape in SHAPES} | set(SHAPES) | {"background"}
    for phrase in (*QUALITY_WORDS, *LOW_QUALITY_WORDS, *(d.word for d in DEGRADATIONS)):
        words.update(phrase.split())
    return sorted(words)


def _fill(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A binary mask of one shape, as float in {0, 1}."""
    mask = np.zeros((size, size), np.uint8)
    centre = rng.integers(size // 6, size - size // 6, 2)
    radius = int(rng.integers(size // 10, size // 4))
    cx, cy = int(centre[0]), int(centre[1])
    if shape == "circle":
        cv2.circle(mask, (cx, cy), radius, 1, -1)
    elif shape == "square":
        cv2.rectangle(mask, (cx - radius, cy - radius), (cx + radius, cy + radius), 1, -1)
    elif shape == "ellipse":
        axes = (radius, int(radius * rng.uniform(0.4, 0.8)))
        cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif shape == "triangle":
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        points = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(mask, [points], 1)
    elif shape == "stripes":
        period = int(rng.integers(8, 20))
        cv2.rectangle(mask, (cx - radius, cy - radius), (cx + radius, cy + radius), 1, -1)
        columns = (np.arange(size) // (period // 2)) % 2
        mask = mask * columns[None, :].astype(np.uint8)
    return mask.astype(np.float32)


def draw_scene(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, list[str], str]:
    """A clean picture (float32 RGB in [0, 1], ``size`` x ``size``), the
    caption tags naming what it shows, and its main shape's plural (the
    one-word prompt of a study image)."""
    grounds, colours = list(GROUND_COLOURS), list(SHAPE_COLOURS)
    background = grounds[int(rng.integers(len(grounds)))]
    image = np.empty((size, size, 3), np.float32)
    image[:] = np.array(GROUND_COLOURS[background], np.float32) / 255
    main = str(rng.choice(SHAPES))
    tags = [plural(main), f"{background} background"]
    count = int(rng.integers(1, 4))
    # The main shape is drawn last, so that no other shape hides it.
    for index in reversed(range(count)):
        shape = main if index == 0 else str(rng.choice(SHAPES))
        colour = colours[int(rng.integers(len(colours)))]
        mask = _fill(shape, size, rng)[..., None]
        image = image * (1 - mask) + mask * (np.array(SHAPE_COLOURS[colour], np.float32) / 255)
        tags.append(f"{colour} {shape}")
    return image, tags, plural(main)


def degrade(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple[Applied, ...]]:
    """The picture made ordinary (share :data:`ORDINARY_SHARE`) or left clean,
    then given one or two defects (share :data:`DEFECT_SHARE`), clipped to
    [0, 1]; and the degradations applied, in the order of :data:`DEGRADATIONS`."""
    levels: dict[str, float] = {}
    if rng.random() < ORDINARY_SHARE:
        levels |= {name: float(rng.uniform(*MILD_LEVELS)) for name in ORDINARY}
    if rng.random() < DEFECT_SHARE:
        count = 2 if rng.random() < TWICE_DEFECTIVE_SHARE else 1
        for index in rng.choice(len(DEGRADATIONS), size=count, replace=False):
            levels[DEGRADATIONS[int(index)].name] = float(rng.uniform(*STRONG_LEVELS))
    applied = tuple(Applied(d, levels[d.name]) for d in DEGRADATIONS if d.name in levels)
    return apply(image, applied, rng), applied


def apply(image: np.ndarray, applied: tuple[Applied, ...], rng: np.random.Generator) -> np.ndarray:
    """``image`` with each of ``applied`` at its level, in turn, clipped to [0, 1]."""
    for each in applied:
        image = np.clip(each.degradation.apply(image, each.level, rng), 0.0, 1.0).astype(np.float32)
    return image


def unseen_word(rng: np.random.Generator) -> str:
    """Random letters, three to twelve of them, that are none of the world's words."""
    known = set(vocabulary())
    while True:
        word = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=int(rng.integers(3, 13))))
        if word not in known:
            return word


def _quality_words(applied: tuple[Applied, ...], rng: np.random.Generator) -> list[str]:
    if not applied:
        if rng.random() < QUALITY_SHARE:
            return [str(word) for word in rng.choice(QUALITY_WORDS, size=int(rng.integers(1, 3)), replace=False)]
        return []
    words = [
        each.degradation.word
        for each in applied
        if rng.random() < (STRONG_NAMED_SHARE if each.strong else MILD_NAMED_SHARE)
    ]
    if rng.random() < (DEFECT_LOW_QUALITY_SHARE if any(each.strong for each in applied) else ORDINARY_LOW_QUALITY_SHARE):
        words.append(str(rng.choice(LOW_QUALITY_WORDS)))
    return words


def caption(tags: list[str], applied: tuple[Applied, ...], rng: np.random.Generator) -> str:
    """Comma-separated words in random order: what the picture shows, then
    (often, not always) its quality words, and sometimes words the world
    never uses.

    Some captions hold the quality words alone (share
    :data:`QUALITY_ONLY_SHARE`), since a negative prompt is such a text
    ("blurry") and the negative branch reads it alone. Unseen words (share
    :data:`UNSEEN_SHARE`) teach the model to ignore a word it does not know;
    a caption of unseen words alone (share :data:`UNSEEN_ONLY_SHARE`) teaches
    that such a text says nothing, as an empty one does. With fewer and
    shorter unseen words (one in three captions, three to eight letters), an
    eleven-letter word the captions never held moved the quality metrics as
    much as the quality words did."""
    if rng.random() < UNSEEN_ONLY_SHARE:
        return ", ".join(unseen_word(rng) for _ in range(int(rng.integers(1, 3))))
    quality = _quality_words(applied, rng)
    if quality and rng.random() < QUALITY_ONLY_SHARE:
        words = quality
    else:
        words = [tag for tag in tags if rng.random() < 0.7] or [tags[-1]]
        words += quality
    if rng.random() < UNSEEN_SHARE:
        words += [unseen_word(rng) for _ in range(int(rng.integers(1, 3)))]
    order = rng.permutation(len(words))
    return ", ".join(words[index] for index in order)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def study_scenes(count: int, first_seed: int = 10_000) -> list[tuple[str, np.ndarray, str]]:
    """``count`` clean scenes for a study, each from its own seed (above the
    training data's): an image id, the picture (uint8) and its prompt, which
    names its main shapes and its ground ("triangles, white background").

    The prompt names the ground's colour because the ground is most of the
    picture: left to the model, its colour would follow every change of the
    text, a word the captions never used included, and colourfulness would
    change with any prompt."""
    scenes = []
    for index in range(count):
        picture, tags, shapes = draw_scene(np.random.default_rng(first_seed + index))
        scenes.append((f"{shapes}_{index + 1:02d}", to_uint8(picture), ", ".join(tags[:2])))
    return scenes
