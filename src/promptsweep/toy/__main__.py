"""The toy model's commands.

``python -m promptsweep.toy train --output DIR`` trains the toy model;
``python -m promptsweep.toy scenes --output DIR --sheet FILE`` draws a
study's pictures of the toy world and writes their image sheet.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from PIL import Image

from promptsweep.toy import train, world


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m promptsweep.toy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    training = commands.add_parser("train", help="build the toy world's data and train every part of the model")
    training.add_argument("--output", type=Path, required=True, help="directory to write base/ and controlnet/ to")
    for setting in dataclasses.fields(train.TrainingSettings):
        training.add_argument(f"--{setting.name.replace('_', '-')}", type=type(setting.default), default=setting.default)
    scenes = commands.add_parser("scenes", help="draw a study's pictures of the toy world")
    scenes.add_argument("--output", type=Path, required=True, help="directory to write the PNG pictures to")
    scenes.add_argument("--sheet", type=Path, required=True, help="image sheet (TSV) to write")
    scenes.add_argument("--count", type=int, default=10)
    arguments = parser.parse_args(argv)
    if arguments.command == "scenes":
        write_scenes(arguments.output, arguments.sheet, arguments.count)
        return
    settings = train.TrainingSettings(
        **{setting.name: getattr(arguments, setting.name) for setting in dataclasses.fields(train.TrainingSettings)}
    )
    arguments.output.mkdir(parents=True, exist_ok=True)
    # On the package's logger, not the root's: the log must be written
    # whatever logging the caller (a test runner, a notebook) set up.
    logger = logging.getLogger("promptsweep.toy")
    logger.setLevel(logging.INFO)
    handlers = [logging.StreamHandler(), logging.FileHandler(arguments.output / "training.log", mode="w")]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
    try:
        train.train(arguments.output, settings)
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


def write_scenes(output: Path, sheet: Path, count: int) -> None:
    """The pictures as PNG files, and an image sheet naming them relative to the working directory."""
    output.mkdir(parents=True, exist_ok=True)
    rows = ["image_id\tpath\tprompt"]
    for image_id, picture, prompt in world.study_scenes(count):
        path = output / f"{image_id}.png"
        Image.fromarray(picture).save(path)
        rows.append(f"{image_id}\t{path.as_posix()}\t{prompt}")
    sheet.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
