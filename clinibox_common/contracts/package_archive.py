"""The one archive format of a model package: ``<name>-<version>.tar.gz``.

Made by ``clinibox model sign --archive`` and handed to the hospital's rollouts;
read by ``clinibox model install`` (``models/store.py`` unpacks it with tarfile's
``data`` filter and looks for its one ``manifest.json``). The archive holds one top
folder ``<name>-<version>/`` with the package's files, and is deterministic: the same
folder packs to the same bytes (entries sorted, every time stamp 0, owner 0/0 with no
names, mode 0644 for files and 0755 for folders, gzip header time 0). Links are refused,
when packing and when reading.

:func:`describe` reads an archive's facts (hash, size, unpacked size, name and version)
and refuses a hostile one; it does not verify the signature: the caller does, with
``models/package.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from clinibox_common.contracts.manifest import PackageError
from clinibox_common.fs import fsync_dir

#: the most an archive may unpack to (all its members' sizes together)
MAX_UNPACKED = 8 << 30
#: the most members an archive may hold
MAX_MEMBERS = 20_000
#: the largest manifest.json read from an archive
MAX_MANIFEST = 16 << 20
_FILE_MODE, _DIR_MODE = 0o644, 0o755
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PackedArchive:
    """A package archive: where it is, its sha256 and size, and the package inside it."""

    path: Path
    sha256: str
    size: int
    unpacked_bytes: int
    name: str
    version: str


def _manifest_identity(manifest: object, where: str) -> tuple[str, str]:
    """``(name, version)`` of a parsed manifest (unverified), or PackageError."""
    if not isinstance(manifest, dict) or not all(
            isinstance(manifest.get(k), str) and manifest.get(k) for k in ("name", "version")):
        raise PackageError(f"{where}: manifest.json names no package name and version")
    name, version = manifest["name"], manifest["version"]
    if "/" in name or "/" in version or name.startswith(".") or version.startswith("."):
        raise PackageError(f"{where}: manifest.json names an unusable package {name!r}")
    return name, version


def _entries(root: Path) -> list[tuple[str, Path]]:
    """Every folder and file under ``root`` as (relative posix path, path), sorted; links
    and special files refused."""
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root).as_posix()
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise PackageError(f"the package contains a link ({relative}); refused")
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise PackageError(f"the package contains a special file ({relative}); refused")
        found.append((relative, path))
    return sorted(found)


def _info(name: str, size: int, is_dir: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = _DIR_MODE if is_dir else _FILE_MODE
    info.size = 0 if is_dir else size
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_tar(raw: BinaryIO, top: str, entries: list[tuple[str, Path]]) -> int:
    """Write ``entries`` under the folder ``top`` as a gzipped tar to ``raw``; return the
    files' total size."""
    unpacked = 0
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_info(top, 0, True))
        for relative, path in entries:
            if path.is_dir():
                tar.addfile(_info(f"{top}/{relative}", 0, True))
                continue
            with open(path, "rb") as member:
                size = os.fstat(member.fileno()).st_size
                tar.addfile(_info(f"{top}/{relative}", size, False), member)
            unpacked += size
    return unpacked


def pack(package_root: Path, out: Path) -> PackedArchive:
    """Write the package folder ``package_root`` as a deterministic ``.tar.gz`` at ``out``
    (atomically: a temporary file beside it, renamed); return its facts."""
    package_root, out = Path(package_root), Path(out)
    try:
        manifest = json.loads((package_root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PackageError(f"{package_root} holds no readable manifest.json: {exc}") from exc
    name, version = _manifest_identity(manifest, str(package_root))
    top = f"{name}-{version}"
    entries = _entries(package_root)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(handle, "wb") as raw:
            unpacked = _write_tar(raw, top, entries)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(temporary, _FILE_MODE)
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_dir(out.parent)
    return PackedArchive(out, _hash_file(out), out.stat().st_size, unpacked, name, version)


def _check_member(member: tarfile.TarInfo, where: Path) -> None:
    """Refuse a link, a special file, an absolute path or one that climbs out."""
    path = PurePosixPath(member.name)
    if member.issym() or member.islnk():
        raise PackageError(f"{where} contains a link ({member.name}); refused")
    if not (member.isfile() or member.isdir()):
        raise PackageError(f"{where} contains a device or special file ({member.name}); "
                           "refused")
    if path.is_absolute() or member.name.startswith(("/", "\\")):
        raise PackageError(f"{where} contains an absolute path ({member.name}); refused")
    if ".." in path.parts:
        raise PackageError(f"{where} contains a path that climbs out ({member.name}); refused")


def describe(archive: Path, max_unpacked: int = MAX_UNPACKED) -> PackedArchive:
    """The facts of the package archive at ``archive``, refusing a hostile or malformed one
    (PackageError). The signature is not checked here."""
    archive = Path(archive)
    unpacked, members, manifests = 0, 0, []
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                members += 1
                if members > MAX_MEMBERS:
                    raise PackageError(f"{archive} holds more than {MAX_MEMBERS} files; refused")
                _check_member(member, archive)
                unpacked += member.size if member.isfile() else 0
                if unpacked > max_unpacked:
                    raise PackageError(f"{archive} unpacks to more than {max_unpacked} bytes; "
                                       "refused")
                if member.isfile() and PurePosixPath(member.name).name == "manifest.json":
                    manifests.append(member)
            if len(manifests) != 1:
                raise PackageError(f"{archive} holds {len(manifests)} manifest.json files; a "
                                   "package has exactly one")
            if manifests[0].size > MAX_MANIFEST:
                raise PackageError(f"{archive}: its manifest.json is too large; refused")
            handle = tar.extractfile(manifests[0])
            text = handle.read() if handle is not None else b""
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise PackageError(f"{archive} cannot be read as a package archive: {exc}") from exc
    try:
        manifest = json.loads(text.decode("utf-8"))
    except ValueError as exc:
        raise PackageError(f"{archive}: its manifest.json is not readable JSON") from exc
    name, version = _manifest_identity(manifest, str(archive))
    return PackedArchive(archive, _hash_file(archive), archive.stat().st_size, unpacked,
                         name, version)


def unpack(archive: Path, into: Path, max_unpacked: int = MAX_UNPACKED) -> Path:
    """Unpack the package archive at ``archive`` into the folder ``into``; the folder holding
    its manifest (PackageError for a hostile or malformed archive).

    Every member is checked first (:func:`describe`: no links, devices, absolute paths or
    ``..``, one manifest, a bounded size), then only regular files and folders are written,
    each under ``into``, with modes 0644/0755: the same on every Python the box may run
    (tarfile's ``filter="data"`` is missing from Debian 12's Python 3.11.2).
    """
    describe(archive, max_unpacked)
    into = Path(into)
    base = into.resolve()
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                _check_member(member, archive)
                target = (into / member.name).resolve()
                if base != target and base not in target.parents:
                    raise PackageError(f"{archive} writes outside its folder ({member.name})")
                if member.isdir():
                    target.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    raise PackageError(f"{archive}: {member.name} cannot be read")
                with source, open(target, "xb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
                target.chmod(_FILE_MODE)
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise PackageError(f"{archive} cannot be unpacked: {exc}") from exc
    return next(p for p in into.rglob("manifest.json") if p.is_file()).parent

