"""Durable files: folder fsync, and replacing a small file so that a power cut leaves the old
file or the new one, never a mix; reading a small file someone else wrote, bounded; a
password file only its owner may read; private temporary folders that a killed owner does
not leave behind for ever."""

from __future__ import annotations

import base64
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

from clinibox_common.errors import CliniboxError

#: the most a password file may hold (bytes)
MAX_SECRET_FILE = 4096


def fsync_dir(path: Path) -> None:
    """fsync a folder so a rename or create inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_regular(path: str | Path, limit: int, *, follow_links: bool = False) -> bytes:
    """A regular file's bytes, at most ``limit + 1`` of them (so a caller tells a file over
    its limit without reading it whole); never through a link unless ``follow_links``, and a
    FIFO or device never blocks or is read. OSError otherwise."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_links else os.O_NOFOLLOW)
    with os.fdopen(os.open(path, flags), "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return handle.read(limit + 1)


class SecretFileUnsafe(CliniboxError):
    """A password file the box refuses, its password never used; ``reason`` says why as a
    code: ``link``, ``not_regular``, ``readable_by_others``, ``not_utf8``, ``empty``."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_secret(path: str | Path) -> str:
    """The password in a password file (its first line, without a UTF-8 byte order mark):
    OSError where it cannot be read, SecretFileUnsafe where it is a symbolic link (never
    followed), no small regular file, readable by others than its owner (the fix is said:
    ``chmod 600``), not UTF-8, or holds no password."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SecretFileUnsafe(f"{path} is a symbolic link (write the password in the "
                                   f"file itself)", "link") from exc
        raise OSError(exc.errno, f"{path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as held:
        info = os.fstat(held.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SECRET_FILE:
            raise SecretFileUnsafe(f"{path} is not a small regular file", "not_regular")
        if info.st_mode & 0o077:
            raise SecretFileUnsafe(f"{path} may be read by others (mode "
                                   f"{info.st_mode & 0o777:o}; chmod 600 it)",
                                   "readable_by_others")
        data = held.read(MAX_SECRET_FILE)
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise SecretFileUnsafe(f"{path} is not UTF-8 text", "not_utf8") from exc
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise SecretFileUnsafe(f"{path} holds no password on its first line", "empty")
    return lines[0]


def secret_reason(exc: OSError | SecretFileUnsafe) -> str:
    """Why a password file cannot be used, as a code: ``missing``, ``unreadable``, or the
    reason of :class:`SecretFileUnsafe` (``link``, ``not_regular``, ``readable_by_others``,
    ``not_utf8``, ``empty``)."""
    if isinstance(exc, SecretFileUnsafe):
        return exc.reason
    return "missing" if exc.errno == errno.ENOENT else "unreadable"


def basic_authorization(username: str, password_file: str | Path) -> str | None:
    """The HTTP Basic ``Authorization`` value of ``username`` with its password read from
    ``password_file`` now (None without a user); OSError or SecretFileUnsafe as
    :func:`read_secret`."""
    if not username:
        return None
    pair = f"{username}:{read_secret(password_file)}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def write_atomically(path: Path, text: str, mode: int | None = None,
                     owner: tuple[int, int] | None = None) -> None:
    """Write ``text`` (UTF-8) as :func:`write_bytes_atomically` does."""
    write_bytes_atomically(path, text.encode("utf-8"), mode, owner)


def write_bytes_atomically(path: Path, data: bytes, mode: int | None = None,
                           owner: tuple[int, int] | None = None) -> None:
    """Write ``data`` to a temporary file beside ``path`` (with ``mode``, and ``owner``'s
    (uid, gid), -1 keeping one as made), fsync, rename, fsync the folder: the file never
    shows another mode or owner than its own."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if owner is not None:
            os.fchown(handle, *owner)
        if mode is not None:
            os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def owned_temp_folder(prefix: str) -> Path:
    """A new private (0700) folder in the temp folder, named ``<prefix><ns>_<pid>-<random>``:
    the pid of its owner and the PID namespace (``/proc/self/ns/pid``) that pid is counted
    in. The ``prefix`` folders that owners killed by SIGKILL (or a power cut) left behind are
    removed first; a folder whose owner still runs is kept, and so is one whose owner is
    counted in another PID namespace (a container or sandbox sharing this temp folder: its
    pid says nothing here, and a live box's sockets must not be taken away)."""
    _remove_folders_of_dead_owners(prefix)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{_pid_namespace()}_{os.getpid()}-"))
    os.chmod(folder, 0o700)
    return folder


def _pid_namespace() -> str:
    """This process's PID namespace (the inode of ``/proc/self/ns/pid``), ``0`` unknown."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def _owner_pid(name: str, prefix: str) -> int | None:
    """The pid that owns the folder ``name`` when it is counted in this PID namespace (a
    folder of an earlier release names the pid alone); None when it cannot be judged here."""
    owner = name.removeprefix(prefix).split("-", 1)[0]
    namespace, _, pid = owner.rpartition("_")
    if namespace and namespace != _pid_namespace():
        return None
    return int(pid) if pid.isdigit() else None


def _remove_folders_of_dead_owners(prefix: str) -> None:
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = _owner_pid(folder.name, prefix)
        if pid is None or not folder.is_dir() or folder.stat().st_uid != os.getuid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass
