"""The files ``clinibox infer PATH…`` analyses: files, folders (recursive) and DICOMDIRs.

* A **file** named on the command line is analysed whatever it holds: the
  analysis says when it is not an image. A file named ``DICOMDIR`` is read as one.
* A **folder** is walked recursively in a stable order (names sorted with their
  numbers as numbers, so ``IM2`` comes before ``IM10``), hidden files and folders
  (``.name``) left out. A file in it is taken when its content says it is DICOM
  Part 10 (``DICM`` after the 128-byte preamble) or a PNG/JPEG picture; anything
  else (notes, thumbnails, exports) is skipped and counted, not reported as a
  failure: the decision is by content because image files on media often have
  no extension (``IM000001``), and the box's decoder reads Part-10 files only.
* A **DICOMDIR** (PS3.10 media) is read with pydicom (``dcmread``; its directory
  records' Referenced File IDs, relative to its folder). Its image records come
  first, in record order; its other records (SR, key objects, presentation
  states…) are not images and are skipped. A File ID that does not match the
  folder's case (a CD mounted lower-case) is matched case-insensitively. Files
  in its folder that it does not list are still found by the walk.

Every file is taken once (by resolved path). A path that does not exist, that
cannot be read (with the operating system's reason), a folder with nothing to
analyse and a DICOMDIR that cannot be read are :class:`PathProblem` entries, in
command-line order with the files.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from clinibox_common.i18n import gettext
from engine.imaging.wrap import is_picture

_ = gettext

#: the name PS3.10 gives a media's directory file
DICOMDIR = "DICOMDIR"
#: the bytes that mark a DICOM Part-10 file, after its 128-byte preamble
DICM_MARK, DICM_OFFSET = b"DICM", 128
#: DICOMDIR record types whose files are images the model may analyse
IMAGE_RECORDS = frozenset({"IMAGE", "STEREOMETRIC", "SURFACE", "SURFACE SCAN"})
#: problem kinds: what a person is told about a path
NOT_FOUND, NOT_READABLE, NO_FILES, BAD_DICOMDIR = (
    "not_found", "not_readable", "no_files", "bad_dicomdir")


@dataclass(frozen=True)
class PathProblem:
    """A path that gave nothing to analyse: ``kind`` (one of the kinds above) and why."""

    path: str
    kind: str
    reason: str = ""
    #: files skipped in the folder (``no_files``: none of them DICOM or a picture)
    skipped: int = 0


@dataclass(frozen=True)
class FileToAnalyse:
    """A file to analyse, as the person named it or as found under what they named."""

    path: Path


@dataclass
class Expansion:
    """What the command line named, expanded: files and problems in order, and the files
    skipped in folders (not DICOM, not a picture) or DICOMDIRs (not an image record)."""

    entries: list[FileToAnalyse | PathProblem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """The files to analyse, in order."""
        return [e.path for e in self.entries if isinstance(e, FileToAnalyse)]

    @property
    def problems(self) -> list[PathProblem]:
        """The paths that gave nothing to analyse."""
        return [e for e in self.entries if isinstance(e, PathProblem)]


def read_head(path: Path, size: int = DICM_OFFSET + 4) -> bytes:
    """The first ``size`` bytes of ``path`` (OSError when it cannot be read)."""
    with open(path, "rb") as handle:
        return handle.read(size)


def looks_analysable(head: bytes) -> bool:
    """True when the first bytes are a DICOM Part-10 file's or a PNG/JPEG picture's."""
    return head[DICM_OFFSET:DICM_OFFSET + 4] == DICM_MARK or is_picture(head)


def natural_key(name: str) -> list[tuple[int, int | str]]:
    """Sort key that orders the numbers in a name by value (``IM2`` before ``IM10``)."""
    return [(0, int(part)) if part.isdigit() else (1, part.lower())
            for part in re.split(r"(\d+)", name) if part]


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class _Expander:
    """One expansion: remembers the files already taken."""

    def __init__(self) -> None:
        self.result = Expansion()
        self._seen: set[Path] = set()

    def _take(self, path: Path) -> None:
        resolved = path.resolve()
        if resolved not in self._seen:
            self._seen.add(resolved)
            self.result.entries.append(FileToAnalyse(path))

    def _problem(self, path: Path | str, kind: str, reason: str = "", skipped: int = 0
                 ) -> None:
        self.result.entries.append(PathProblem(str(path), kind, reason, skipped))

    def named(self, name: str) -> None:
        """A path from the command line."""
        path = Path(name)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            self._problem(name, NOT_FOUND)
            return
        except OSError as exc:
            self._problem(name, NOT_READABLE, _reason(exc))
            return
        if stat.S_ISDIR(mode):
            entries, skipped = len(self.result.entries), len(self.result.skipped)
            self.folder(path)
            if len(self.result.entries) == entries:
                self._problem(name, NO_FILES, skipped=len(self.result.skipped) - skipped)
        elif path.name.upper() == DICOMDIR:
            self.dicomdir(path)
        elif not stat.S_ISREG(mode):
            self._problem(name, NOT_READABLE, _("not a regular file"))
        else:
            try:
                read_head(path, 1)
            except OSError as exc:
                self._problem(name, NOT_READABLE, _reason(exc))
                return
            self._take(path)

    def folder(self, root: Path) -> None:
        """Every analysable file under ``root``, DICOMDIRs first in each folder."""
        for folder, files in _walk(root, self._problem):
            listing = [f for f in files if f.upper() == DICOMDIR]
            for name in listing:
                self.dicomdir(folder / name)
            for name in files:
                path = folder / name
                if name in listing or path.resolve() in self._seen:
                    continue
                try:
                    regular = stat.S_ISREG(path.stat().st_mode)  # never open a pipe or device
                    head = read_head(path) if regular else b""
                except FileNotFoundError as exc:  # a link to nothing
                    self._problem(path, NOT_FOUND, _reason(exc))
                    continue
                except OSError as exc:
                    self._problem(path, NOT_READABLE, _reason(exc))
                    continue
                if looks_analysable(head):
                    self._take(path)
                else:
                    self.result.skipped.append(str(path))

    def dicomdir(self, path: Path) -> None:
        """The files a DICOMDIR lists: its image records', in record order."""
        try:
            records = list(dcmread(path).DirectoryRecordSequence)
        except OSError as exc:
            self._problem(path, NOT_READABLE, _reason(exc))
            return
        except (InvalidDicomError, AttributeError, ValueError, KeyError, TypeError,
                NotImplementedError) as exc:  # what a damaged medium makes pydicom raise
            self._problem(path, BAD_DICOMDIR, str(exc) or type(exc).__name__)
            return
        listings: dict[Path, dict[str, str]] = {}
        for record in records:
            try:
                self._record(path, record, listings)
            except (OSError, ValueError, TypeError, KeyError, NotImplementedError) as exc:
                # one damaged record (a NUL in its file ID …): said, the others go on
                self._problem(path, BAD_DICOMDIR, str(exc) or type(exc).__name__)

    def _record(self, path: Path, record: Any, listings: dict[Path, dict[str, str]]) -> None:
        """One directory record of the DICOMDIR at ``path``: its file taken, skipped or a
        problem."""
        file_id = record.get("ReferencedFileID")
        if not file_id:
            return
        parts = [str(p) for p in ([file_id] if isinstance(file_id, str) else file_id)]
        target = _case_insensitive(path.parent, parts, listings)
        if not target.resolve().is_relative_to(path.parent.resolve()):
            self._problem(target, NOT_FOUND,
                          _("outside the folder of %(dicomdir)s", dicomdir=str(path)))
        elif str(record.get("DirectoryRecordType", "")).upper() not in IMAGE_RECORDS:
            self._seen.add(target.resolve())
            self.result.skipped.append(str(target))
        elif not target.is_file():
            self._problem(target, NOT_FOUND, _("listed in %(dicomdir)s", dicomdir=str(path)))
        else:
            self._take(target)


def _walk(root: Path, problem: Callable[[str, str, str], None]
          ) -> Iterator[tuple[Path, list[str]]]:
    """(folder, its visible file names sorted) under ``root``, folders in sorted order."""
    def unreadable(exc: OSError) -> None:
        problem(str(exc.filename or root), NOT_READABLE, _reason(exc))

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = sorted((d for d in dirs if not d.startswith(".")), key=natural_key)
        yield Path(folder), sorted((f for f in files if not f.startswith(".")), key=natural_key)


def _case_insensitive(base: Path, parts: list[str],
                      listings: dict[Path, dict[str, str]]) -> Path:
    """``base`` joined with ``parts``, each part matched case-insensitively when the exact
    name is absent (media mounted lower-case); ``listings`` keeps each folder's names by
    their upper case, read once (a medium of 40,000 records lists each folder once)."""
    path = base
    for part in parts:
        exact = path / part
        if not exact.exists() and path.is_dir():
            if path not in listings:
                listings[path] = {entry.upper(): entry for entry in os.listdir(path)}
            found = listings[path].get(part.upper())
            exact = path / found if found else exact
        path = exact
    return path


def expand_paths(names: Iterable[str]) -> Expansion:
    """The command line's paths expanded into files to analyse and problems, in order."""
    expander = _Expander()
    for name in names:
        expander.named(name)
    return expander.result
