"""A clinic-feedback ``case.json``, read bounded, total, and without following links.

``--extra-validation FOLDER`` reads files a box exported onto a USB stick;
:func:`read_case` treats them as untrusted. It refuses, with a
:class:`~converters.data.DataError` naming the file and what is wrong (the
converter's exit status 2, bad data):

* a case folder that lies outside FOLDER once its links are resolved, and a
  ``case.json`` that is a symbolic link (opened with ``O_NOFOLLOW``) or not a
  regular file (a FIFO, a device);
* a file over :data:`MAX_CASE_BYTES`, or nested deeper than :data:`MAX_DEPTH`
  (counted over the text before it is parsed, so a 5,000-level file costs a
  scan, not Python's recursion limit);
* text that is not UTF-8 JSON, and values of the wrong type: the case an
  object of ``format`` ``clinibox-disagreement/1``, ``images`` a list of
  objects whose ``file`` is a string, ``assessment`` and ``verdict`` strings
  (or null) and ``finding`` a boolean (or null).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from converters.data import DataError

CASE_FORMAT = "clinibox-disagreement/1"
#: the largest case.json read (a case of a few hundred images is well under 1 MB)
MAX_CASE_BYTES = 4 * 2**20
#: the deepest nesting of objects and lists accepted (the format uses 4)
MAX_DEPTH = 16

#: a JSON string, escapes included (its brackets do not nest)
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
#: the fields of an image entry the converter reads, and the types each may have
_IMAGE_FIELDS: dict[str, tuple[type, ...]] = {
    "file": (str,), "assessment": (str, type(None)), "verdict": (str, type(None)),
    "finding": (bool, type(None))}


def read_case(path: Path, folder: Path) -> dict[str, Any]:
    """The case in ``path`` (a ``case.json`` in a case folder under ``folder``), checked as
    the module docstring says; DataError when it is refused."""
    path = Path(path)
    inside(path.parent, folder, path)
    text = _read_text(path)
    if nesting_depth(text) > MAX_DEPTH:
        raise DataError(f"{path}: objects and lists nested more than {MAX_DEPTH} levels deep")
    try:
        case = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{path}: not a readable case.json ({exc})") from exc
    check_case(case, path)
    return case


def inside(entry: Path, folder: Path, named: Path) -> None:
    """Refuse ``entry`` when, its links resolved, it is not ``folder`` or below it
    (``named``: the file the message names)."""
    root = Path(folder).resolve()
    resolved = Path(entry).resolve()
    if resolved != root and root not in resolved.parents:
        raise DataError(f"{named}: outside the extra validation folder {root} (a link?)")


def _read_text(path: Path) -> str:
    """The file's text: no link followed, a regular file, at most MAX_CASE_BYTES, UTF-8."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataError(f"{path}: a symbolic link; a case.json must be a file") from None
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"{path}: not a regular file")
        if info.st_size > MAX_CASE_BYTES:
            raise DataError(f"{path}: {info.st_size} bytes (at most {MAX_CASE_BYTES})")
        data = handle.read(MAX_CASE_BYTES + 1)
    if len(data) > MAX_CASE_BYTES:
        raise DataError(f"{path}: over {MAX_CASE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def nesting_depth(text: str) -> int:
    """How deeply the objects and lists of the JSON ``text`` nest (brackets inside strings
    do not count); stops counting once past MAX_DEPTH."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                break
    return deepest


def check_case(case: object, path: Path) -> None:
    """DataError naming the first value of ``case`` that has the wrong type."""
    if not isinstance(case, dict) or case.get("format") != CASE_FORMAT:
        raise DataError(f"{path}: not a clinibox disagreement case ({CASE_FORMAT})")
    images = case.get("images", [])
    if not isinstance(images, list):
        raise DataError(f"{path}: images is {_kind(images)}, not a list")
    for n, image in enumerate(images):
        if not isinstance(image, dict):
            raise DataError(f"{path}: images[{n}] is {_kind(image)}, not an object")
        for key, types in _IMAGE_FIELDS.items():
            value = image.get(key)
            if key == "file" and value is None:
                continue  # checked where the image is needed: an unlabelled one needs none
            if not isinstance(value, types):
                raise DataError(f"{path}: images[{n}].{key} is {_kind(value)}, not "
                                + " or ".join(_kind_name(t) for t in types))


def _kind(value: object) -> str:
    return _kind_name(type(value))


def _kind_name(kind: type) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(kind, kind.__name__)
