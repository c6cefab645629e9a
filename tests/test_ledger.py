"""A job that reads generated images keeps outputs made from unchanged inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import killed_while_writing
from promptsweep.jobs import Ledger


def make(ledger: Ledger, output: Path, text: str) -> None:
    with ledger.recording():
        output.write_text(text)


def test_outputs_are_current_while_inputs_and_parameters_are_the_same(tmp_path: Path) -> None:
    source, output = tmp_path / "input.txt", tmp_path / "output.txt"
    source.write_text("one")
    ledger = Ledger([str(output)], [str(source)], {"text": "!"})
    assert not ledger.current()  # nothing made yet
    make(ledger, output, "one!")
    source.touch()  # newer, same content: as the generate job leaves a kept image
    assert Ledger([str(output)], [str(source)], {"text": "!"}).current()


def test_a_changed_input_parameter_or_missing_output_is_not_current(tmp_path: Path) -> None:
    source, output = tmp_path / "input.txt", tmp_path / "output.txt"
    source.write_text("one")
    make(Ledger([str(output)], [str(source)], {"text": "!"}), output, "one!")
    assert not Ledger([str(output)], [str(source)], {"text": "?"}).current()
    source.write_text("two")
    assert not Ledger([str(output)], [str(source)], {"text": "!"}).current()
    source.write_text("one")
    assert Ledger([str(output)], [str(source)], {"text": "!"}).current()
    output.unlink()
    assert not Ledger([str(output)], [str(source)], {"text": "!"}).current()


def test_a_failed_job_leaves_no_ledger(tmp_path: Path) -> None:
    source, output = tmp_path / "input.txt", tmp_path / "output.txt"
    source.write_text("one")
    ledger = Ledger([str(output)], [str(source)], {})
    make(ledger, output, "one")
    with pytest.raises(RuntimeError), ledger.recording():
        raise RuntimeError("the job failed after it had begun writing")
    assert not Ledger([str(output)], [str(source)], {}).current()


def test_recording_removes_what_a_killed_write_of_an_output_left(tmp_path: Path) -> None:
    """The outputs are update() outputs, which Snakemake keeps after a kill."""
    source, output = tmp_path / "input.txt", tmp_path / "output.txt"
    source.write_text("one")
    killed_while_writing(output)
    assert len(list(tmp_path.glob(".output.txt.*"))) == 1
    kept = {".notes.0123456789ab", ".output.txt.0123456789ab.json"}
    for name in kept:
        (tmp_path / name).write_text("not the job's")
    make(Ledger([str(output)], [str(source)], {"text": "!"}), output, "one!")
    assert {path.name for path in tmp_path.glob(".*")} == kept | {".output.txt.inputs"}
