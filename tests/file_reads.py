"""Which files a piece of code opens, from Python's audit events.

Python-level opens only: a C library that opens a file itself (libsvm's model
reader, safetensors' memory map) is not seen.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
