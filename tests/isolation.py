"""Checks that code stays on this machine: which files it opens, and no
network connection.

Opens are seen through Python's audit events, so only Python-level opens: a
C or Rust library that opens a file itself (libsvm's model reader,
safetensors' memory map) is not seen.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# An audit hook cannot be removed, so one hook serves every recording.
_recordings: list[list[Path]] = []


def _record_open(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _recordings and isinstance(args[0], (str, bytes)):
        _recordings[-1].append(Path(args[0].decode() if isinstance(args[0], bytes) else args[0]))


sys.addaudithook(_record_open)


@contextmanager
def opened_files() -> Iterator[list[Path]]:
    """The paths opened inside the ``with`` block, in order."""
    opened: list[Path] = []
    _recordings.append(opened)
    try:
        yield opened
    finally:
        _recordings.pop()


def refuse_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a connection fail the test, until the
    monkeypatch is undone."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
