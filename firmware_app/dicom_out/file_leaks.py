"""The leak search of ``leaks.py`` over a written file, in bounded memory.

:func:`leaked_in_file` reads the file in chunks and asks
:func:`~firmware_app.dicom_out.leaks.leaked` about each. Every chunk after the
first begins with the last bytes of the one before: as many as the longest
value searched for, and one more for the byte that stands before it (a short
numeric value counts only where a value starts). A value anywhere in the file
therefore lies whole, with the byte before it, inside some chunk: none is
missed, and memory holds one chunk whatever the size of the file.

A chunk after the first is given one byte of ``0123456789.`` in front that no
searched value starts with: it can complete no value, and a short numeric
value at the very start of the carried-over bytes then reads as standing
inside a run of digits. That place was searched, with its real byte before it,
in the chunk before. (When every such byte starts some value, the chunks go
without it: a value at a chunk's start may then count where the whole file
would not, which costs a file, never a leak.)
"""

from __future__ import annotations

from pathlib import Path

from firmware_app.dicom_out.leaks import leaked

#: bytes read at a time
CHUNK_BYTES = 8 * 2**20
#: bytes that make a following numeric value part of a run of digits (leaks.py's _DIGITS)
_RUN_BYTES = b"0123456789."


def leaked_in_file(path: Path, values: dict[bytes, str],
                   chunk_bytes: int = CHUNK_BYTES) -> list[str]:
    """The keywords of ``values`` found in the file ``path``, as ``leaked`` finds them in
    the file's bytes, read ``chunk_bytes`` at a time (sorted; empty: nothing survived)."""
    if not values:
        return []
    overlap = max(len(value) for value in values) + 1
    chunk_bytes = max(chunk_bytes, overlap + 1)
    starts = {value[:1] for value in values}
    guard = next((bytes([b]) for b in _RUN_BYTES if bytes([b]) not in starts), b"")
    found: set[str] = set()
    carried, carried_from = b"", 0  # the last bytes read, and where they begin in the file
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            lead = guard if carried and carried_from > 0 else b""
            found.update(leaked(lead + carried + block, values))
            window_end = carried_from + len(carried) + len(block)
            carried = (carried + block[-overlap:])[-overlap:]
            carried_from = window_end - len(carried)
            del block
    return sorted(found)
