"""The box's own software updated from a signed release, tried, and taken back by itself.

``clinibox software apply RELEASE`` (root; the USB stick's unit and the update unit run it)
works on an installed box (``install.sh``'s layout: ``/opt/clinibox/<version>/`` trees and the
``/opt/clinibox/current`` link):

1. the release is copied into root's own folder (``/var/lib/clinibox-software``), unpacked and
   verified (``contracts/software_release.py``: a trusted signature, every file's SHA-256);
2. refused, with a code, when it is not newer than the running version, when its
   dependencies or native receiver differ (it comes with its offline bundle), when it would
   change the database's schema (going back must never lose what the box received), or
   when the disk lacks room;
3. the self-test of the running version is taken as the baseline;
4. the new tree is built beside the running one: its venv copied, the new wheel installed
   over it with the release's pip, offline; the new version checks the box's config;
5. a **trial** is noted (``trial.json``), the units of the new tree installed, ``current``
   switched (one rename) and the services restarted;
6. the services must come up and the new version's self-test must fail nothing that passed
   before; then the trial is **kept**. Otherwise the box **reverts by itself**: ``current``
   back, the old units, the services restarted.

The root holds two trees: before a new one is built, every tree but the running one is
removed, so after an update the box keeps the version it came from to go back to.

``clinibox software assess`` runs at every boot before the services
(``clinibox-software-assess.service``): a trial still noted means the box went down during it
(a power cut, or the new version hung the machine), and it reverts before the new version runs
again. Each end is kept in ``outcome.json`` (a code, the versions, the reason), which the
device page and ``clinibox software status`` read.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from clinibox_common.contracts import signing
from clinibox_common.contracts.manifest import PackageError
from clinibox_common.contracts.package_archive import unpack
from clinibox_common.contracts.software_release import (
    SUFFIX,
    Release,
    ReleaseError,
    ReleaseRefusal,
    dependency_change,
    read_sums,
    verify,
    version_key,
)
from clinibox_common.contracts.words import Word
from clinibox_common.fs import fsync_dir, write_atomically, write_bytes_atomically
from firmware_app.settings.box import Config
from firmware_app.settings.models import is_demo_key
from firmware_app.words import software_words

log = logging.getLogger(__name__)

#: the services a new version must bring up, restarted at a switch
SERVICES = ("clinibox.service", "clinibox-web.service")
#: seconds the services have to come up after a switch (a box measures its runtimes first)
START_SECONDS = 300.0
#: seconds the self-test may take
SELFTEST_SECONDS = 180.0
#: seconds one build step (copy, pip, byte code, config check) may take: four of them, the
#: services' start and two self-tests stay within the unit's TimeoutStartSec (45 min)
STEP_SECONDS = 400
#: the largest release a stick may bring (one is a few megabytes)
MAX_RELEASE_BYTES = 64 << 20
#: the most a release's tar stream may hold, counted while it is decompressed before tarfile
#: reads a header: it is unpacked before its signature can be checked, onto the root
#: partition, and tarfile keeps a long name's or PAX header's body in memory
MAX_RELEASE_UNPACKED = 64 << 20
#: the most releases a stick or the service hands over at once
MAX_RELEASES_TAKEN = 3
#: the most of the self-test's output read
SELFTEST_OUTPUT_BYTES = 1 << 20
#: a release's file name: ``clinibox-<version>.release`` (names printed on the screen)
RELEASE_FILE = re.compile(r"clinibox-[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}\.release")
#: room a new tree needs beyond the running venv's size
SPARE_BYTES = 64 << 20
_MIGRATION = re.compile(r"firmware_app/storage/migrations/v([0-9]+)_[a-z0-9_]+\.py")


class Outcome(Word):
    """How an update ended (``outcome.json``'s ``outcome``)."""

    KEPT = "kept"
    """The new version runs and passed its self-test."""
    REVERTED = "reverted"
    """The new version failed and the box went back to the version before."""
    REFUSED = "refused"
    """The release was refused before anything switched."""


class RevertReason(Word):
    """Why a trial went back."""

    SERVICE_FAILED = "service_failed"
    """A service of the new version did not come up."""
    SELFTEST_FAILED = "selftest_failed"
    """The new version's self-test failed a check that passed before."""
    BOOT_INTERRUPTED = "boot_interrupted"
    """The box went down during the trial; it reverted at the next boot."""


class Host(Protocol):
    """What the update asks of the machine's service manager."""

    def reload(self) -> None:
        """Read the units again."""

    def restart(self, units: tuple[str, ...]) -> None:
        """Restart the units (an error is seen by :meth:`active`)."""

    def active(self, units: tuple[str, ...], seconds: float) -> bool:
        """Whether every unit is active within ``seconds`` (and stays so a moment)."""

    def selftest(self, seconds: float) -> dict[str, str] | None:
        """The running version's self-test, check name → status; None if it did not run."""

    def database_schema(self, database: Path) -> int | None:
        """The schema of the box's database (None: it has none yet), read as the service
        user: root never opens a file in the service user's folder as a database."""


class SystemdHost:
    """The real machine: systemctl, and the self-test run as the service user."""

    def __init__(self, command: str = "/usr/local/bin/clinibox", user: str = "clinibox"):
        self.command, self.user = command, user

    def reload(self) -> None:
        subprocess.run(["systemctl", "daemon-reload"], check=False, timeout=120)

    def restart(self, units: tuple[str, ...]) -> None:
        subprocess.run(["systemctl", "reset-failed", *units], check=False, timeout=60,
                       capture_output=True)
        subprocess.run(["systemctl", "restart", "--no-block", *units], check=False,
                       timeout=120)

    def active(self, units: tuple[str, ...], seconds: float) -> bool:
        deadline, steady_since = time.monotonic() + seconds, None
        while time.monotonic() < deadline:
            states = subprocess.run(["systemctl", "is-active", *units], capture_output=True,
                                    text=True, timeout=60).stdout.split()
            if states == ["active"] * len(units):
                steady_since = steady_since or time.monotonic()
                if time.monotonic() - steady_since >= 5.0:
                    return True
            else:
                steady_since = None
                if "failed" in states:
                    return False
            time.sleep(1.0)
        return False

    def selftest(self, seconds: float) -> dict[str, str] | None:
        try:
            done = subprocess.run(["runuser", "-u", self.user, "--", self.command,
                                   "selftest", "--json"], capture_output=True, text=True,
                                  timeout=seconds)
            checks = json.loads(done.stdout[:SELFTEST_OUTPUT_BYTES])["checks"]
            return {str(c["name"]): str(c["status"]) for c in checks}
        except Exception as exc:  # whatever the self-test printed: it did not pass
            log.warning("the self-test did not run: %s", exc)
            return None

    def database_schema(self, database: Path) -> int | None:
        reader = ("import sqlite3, sys\n"
                  "c = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True, timeout=30)\n"
                  "print(c.execute('PRAGMA user_version').fetchone()[0])")
        done = subprocess.run(["runuser", "-u", self.user, "--", "/usr/bin/python3", "-I",
                               "-c", reader, str(database)], capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise ReleaseError(ReleaseRefusal.BUILD_FAILED,
                               f"the database's schema could not be read: "
                               f"{done.stderr.strip()[-300:]}")
        return int(done.stdout.strip())


@dataclass(frozen=True)
class Layout:
    """Where an installed box keeps its trees, units, config and this updater's state."""

    root: Path = Path("/")

    @property
    def prefix(self) -> Path:
        return self.root / "opt" / "clinibox"

    @property
    def current(self) -> Path:
        return self.prefix / "current"

    @property
    def unit_dir(self) -> Path:
        return self.root / "usr" / "local" / "lib" / "systemd" / "system"

    @property
    def config(self) -> Path:
        return self.root / "etc" / "clinibox" / "clinibox.toml"

    @property
    def state(self) -> Path:
        """Root's own folder: never under the service user's state folder, which that user
        could rearrange."""
        return self.root / software_words.STATE_DIR.relative_to("/")

    @property
    def trial(self) -> Path:
        return self.state / "trial.json"

    @property
    def trial_from(self) -> Path:
        """The version a trial started from, alone: the boot's unit reads it with a shell, so
        that going back never runs the version under trial."""
        return self.state / "trial.from"

    @property
    def incoming(self) -> Path:
        """Releases waiting to be applied (root's: a USB stick's are copied here);
        ``clinibox-software-update.path`` starts the update when one lies here."""
        return self.state / "incoming"

    @property
    def outcome(self) -> Path:
        return self.state / "outcome.json"

    def running_version(self) -> str:
        """The version ``current`` points at."""
        try:
            return (self.current / "VERSION").read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ReleaseError(ReleaseRefusal.NOT_INSTALLED,
                               f"{self.current} is no installed version: {exc}") from exc


def _write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` at ``path`` durably, readable by all."""
    write_atomically(path, json.dumps(document, indent=2), 0o644)


def _record(layout: Layout, outcome: Outcome, *, running: str, release: str, file: str,
            reason: str = "", detail: str = "") -> dict[str, Any]:
    """Keep how an update ended; ``file``: the release's file name, which the service that
    handed it over looks for."""
    document = {"outcome": str(outcome), "running": running, "release": release,
                "file": file, "reason": reason, "detail": detail[:2000], "at": time.time()}
    _write_json(layout.outcome, document)
    log.info("software update %s: %s (running %s) %s %s", outcome, release, running, reason,
             detail)
    return document


def switch_current(layout: Layout, version: str) -> None:
    """Point ``current`` at ``version`` with one rename, as install.sh does."""
    link = layout.prefix / ".current.new"
    link.unlink(missing_ok=True)
    link.symlink_to(version)
    os.replace(link, layout.current)
    fsync_dir(layout.prefix)


def install_units(layout: Layout, tree: Path) -> None:
    """The tree's units in place (every unit file at the top of its ``systemd/``, each written
    aside, synced and renamed), and the clinibox units another tree brought and this one lacks
    removed (a unit of a version taken back does not stay behind)."""
    layout.unit_dir.mkdir(parents=True, exist_ok=True)
    wanted = {unit.name: unit for unit in sorted((tree / "systemd").glob("*"))
              if unit.is_file() and unit.suffix in (".service", ".timer", ".path")}
    for name, unit in wanted.items():
        write_bytes_atomically(layout.unit_dir / name, unit.read_bytes(), 0o644)
    for stale in layout.unit_dir.glob("clinibox*"):
        if stale.is_file() and stale.suffix in (".service", ".timer", ".path") \
                and stale.name not in wanted:
            stale.unlink()
    fsync_dir(layout.unit_dir)


def _schema_of_wheel(wheel: Path) -> int:
    """The database schema the wheel's version would migrate to (its newest migration)."""
    with zipfile.ZipFile(wheel) as archive:
        numbers = [int(m.group(1)) for name in archive.namelist()
                   if (m := _MIGRATION.fullmatch(name))]
    return max(numbers, default=0)


def _trusted(config: Config) -> list[Any]:
    """The keys a release may be signed with: the hospital's model-signing keys, never the
    DEMO-ONLY key (whose private half is public), even on a demonstration box."""
    keys = []
    for path in (p for p in config.trusted_key_paths if not is_demo_key(p)):
        try:
            keys.append(signing.load_public_key(path))
        except (OSError, ValueError, signing.SignatureError) as exc:
            log.warning("trusted key %s not usable: %s", path, exc)
    return keys


def check_release(config: Config, layout: Layout, unpacked: Path, host: Host) -> Release:
    """The unpacked release verified and fit for this box, or ReleaseError."""
    release = verify(unpacked, _trusted(config))
    running = layout.running_version()
    if version_key(release.version) <= version_key(running):
        raise ReleaseError(ReleaseRefusal.NOT_NEWER,
                           f"{release.version} is not newer than the running {running}")
    try:
        running_sums = read_sums(layout.current / "BUNDLE-SHA256SUMS")
    except OSError as exc:
        raise ReleaseError(ReleaseRefusal.NEEDS_BUNDLE,
                           f"the running version lists no bundle sums: {exc}") from exc
    changed = dependency_change(running_sums, read_sums(release.root / "SHA256SUMS"))
    if changed:
        raise ReleaseError(ReleaseRefusal.NEEDS_BUNDLE,
                           f"{len(changed)} dependencies differ, first {changed[0]}")
    schema = _schema_of_wheel(release.wheel)
    database = host.database_schema(config.database_path) \
        if config.database_path.exists() else None
    if database is not None and schema != database:
        raise ReleaseError(ReleaseRefusal.DATABASE_CHANGE,
                           f"database schema {database} would become {schema}")
    return release


def check_space(layout: Layout) -> None:
    """Room for another copy of the running venv, or ReleaseError(NO_SPACE)."""
    needed = sum(p.lstat().st_size for name in ("venv", "models")
                 for p in (layout.current / name).rglob("*") if p.is_file()) + SPARE_BYTES
    if shutil.disk_usage(layout.prefix).free < needed:
        raise ReleaseError(ReleaseRefusal.NO_SPACE, f"{needed >> 20} MB needed")


def _rewrite_paths(venv: Path, renames: list[tuple[str, str]]) -> None:
    """The venv's scripts and pyvenv.cfg name the new tree where they named another."""
    for path in [*sorted((venv / "bin").iterdir()), venv / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:4096]:
            continue
        changed = data
        for old, new in renames:
            changed = changed.replace(old.encode(), new.encode())
        if changed != data:
            path.write_bytes(changed)


def build_tree(layout: Layout, release: Release, run: Callable[..., Any]) -> Path:
    """The new version's tree, built aside from the running one and moved into place."""
    running = layout.current.resolve()
    final = layout.prefix / release.version
    stage = layout.prefix / f".staging-{release.version}.{os.getpid()}"

    def seen_by_the_box(path: Path) -> str:  # the path with the root the box boots from
        return "/" + path.relative_to(layout.root.resolve()).as_posix()

    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(mode=0o755)
    try:
        run(["cp", "-a", "--reflink=auto", str(running / "venv"), str(stage / "venv")])
        python = str(stage / "venv" / "bin" / "python")
        run([python, str(release.pip_wheel / "pip"), "install", "--isolated", "--no-index",
             "--no-deps", "--force-reinstall", "--no-compile", "--no-cache-dir",
             "--disable-pip-version-check", "--quiet", str(release.wheel)],
            env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
        _rewrite_paths(stage / "venv", [(f"{stage}/", f"{seen_by_the_box(final)}/"),
                                        (f"{seen_by_the_box(running)}/",
                                         f"{seen_by_the_box(final)}/")])
        run([python, "-m", "compileall", "-q", "-j", "0", "-s", str(stage),
             "-p", seen_by_the_box(final), str(stage / "venv" / "lib")])
        shutil.copytree(release.root / "systemd", stage / "systemd")
        shutil.copytree(running / "models", stage / "models")  # the same, by their sums
        shutil.copyfile(release.root / "SHA256SUMS", stage / "BUNDLE-SHA256SUMS")
        (stage / "VERSION").write_text(release.version + "\n", encoding="utf-8")
        if layout.config.exists():
            run([python, str(stage / "venv" / "bin" / "clinibox"), "config", "--check",
                 str(layout.config)], refusal=ReleaseRefusal.CONFIG_REFUSED)
        if final.exists():  # a tree of this version left by an earlier attempt
            shutil.rmtree(final)
        os.replace(stage, final)
        fsync_dir(layout.prefix)
        return final
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _run(command: list[str], *, env: dict[str, str] | None = None,
         refusal: ReleaseRefusal = ReleaseRefusal.BUILD_FAILED) -> None:
    """Run one build step (no ``PYTHON*`` variable of the caller reaches the new tree's
    Python); ReleaseError with its output when it fails."""
    env = {k: v for k, v in (env or os.environ).items() if not k.startswith("PYTHON")}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              timeout=STEP_SECONDS)
    except subprocess.TimeoutExpired as exc:
        raise ReleaseError(refusal, f"{command[0]} took over {STEP_SECONDS} s") from exc
    if done.returncode != 0:
        raise ReleaseError(refusal, (done.stderr or done.stdout).strip()[-1500:])


def _newly_failed(before: dict[str, str] | None, after: dict[str, str] | None) -> list[str]:
    """The checks the new version fails that did not fail before (all, if it did not run)."""
    if after is None:
        return ["selftest"]
    before = before or {}
    return sorted(name for name, status in after.items()
                  if status == "FAIL" and before.get(name) != "FAIL")


def prune(layout: Layout, keep: set[str]) -> list[str]:
    """Remove the application trees whose versions are not in ``keep`` (``current``'s never):
    the root holds two trees, the running one and the one to go back to."""
    keep = {*keep, layout.current.resolve().name}
    removed = []
    for leftover in layout.prefix.glob(".staging-*"):  # a build killed half-way
        shutil.rmtree(leftover, ignore_errors=True)
    for tree in sorted(layout.prefix.iterdir()):
        if tree.is_dir() and not tree.is_symlink() and not tree.name.startswith(".") \
                and (tree / "VERSION").exists() and tree.name not in keep:
            shutil.rmtree(tree)
            removed.append(tree.name)
    return removed


def revert(layout: Layout, host: Host, reason: RevertReason, detail: str = "", *,
           restart: bool = True) -> dict[str, Any]:
    """Back to the version the trial started from: its units, ``current``, and (unless at
    boot, before they start) the services."""
    trial = json.loads(layout.trial.read_text(encoding="utf-8"))
    previous, tried = str(trial["from"]), str(trial["to"])
    install_units(layout, layout.prefix / previous)
    switch_current(layout, previous)
    host.reload()
    if restart:
        host.restart(SERVICES)
    layout.trial.unlink()
    layout.trial_from.unlink(missing_ok=True)
    fsync_dir(layout.state)
    return _record(layout, Outcome.REVERTED, running=previous, release=tried,
                   file=str(trial.get("file", "")),
                   reason=str(reason), detail=detail)


def _locked(layout: Layout) -> int:
    """An exclusive lock on the updater's state (one apply or assess at a time)."""
    layout.state.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(layout.state, 0o755)
    handle = os.open(layout.state / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def _bounded_stream(archive: Path) -> None:
    """ReleaseError unless the archive is gzip whose stream holds at most
    :data:`MAX_RELEASE_UNPACKED` bytes (counted before tarfile reads a header)."""
    total = 0
    try:
        with gzip.open(archive, "rb") as stream:
            while block := stream.read(1 << 20):
                total += len(block)
                if total > MAX_RELEASE_UNPACKED:
                    raise ReleaseError(ReleaseRefusal.NOT_A_RELEASE,
                                       f"it unpacks to over {MAX_RELEASE_UNPACKED >> 20} MB")
    except (OSError, EOFError, zlib.error) as exc:
        raise ReleaseError(ReleaseRefusal.NOT_A_RELEASE, f"not a gzip archive: {exc}") from exc


def apply(config: Config, archive: Path, *, layout: Layout | None = None,
          host: Host | None = None, run: Callable[..., Any] = _run) -> dict[str, Any]:
    """Apply the release ``archive``: refused, kept or reverted (the outcome, also kept)."""
    layout, host = layout or Layout(), host or SystemdHost()
    lock = _locked(layout)
    try:
        return _apply(config, archive, layout, host, run)
    finally:
        os.close(lock)


def _apply(config: Config, archive: Path, layout: Layout, host: Host,
           run: Callable[..., Any]) -> dict[str, Any]:
    if layout.trial.exists():  # an earlier trial not ended: end it first
        revert(layout, host, RevertReason.BOOT_INTERRUPTED, "a trial was still open")
    work = Path(tempfile.mkdtemp(prefix="release-", dir=layout.state))
    name = archive.name
    try:
        try:
            copy = work / "release.tar.gz"
            with open(archive, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as src, \
                    open(copy, "xb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            _bounded_stream(copy)
            unpacked = unpack(copy, work / "unpacked", MAX_RELEASE_UNPACKED)
        except (OSError, PackageError) as exc:
            raise ReleaseError(ReleaseRefusal.NOT_A_RELEASE, str(exc)) from exc
        running = layout.running_version()
        release = check_release(config, layout, unpacked, host)
        prune(layout, keep={running})  # room for the new tree beside the running one
        check_space(layout)
        before = host.selftest(SELFTEST_SECONDS)
        tree = build_tree(layout, release, run)
    except ReleaseError as exc:
        return _record(layout, Outcome.REFUSED, running=_running_or_blank(layout),
                       release=name, file=name, reason=str(exc.code), detail=exc.detail)
    except Exception as exc:  # a failure of the machine's, before anything switched
        log.exception("software update %s failed before the switch", name)
        return _record(layout, Outcome.REFUSED, running=_running_or_blank(layout),
                       release=name, file=name, reason=str(ReleaseRefusal.BUILD_FAILED),
                       detail=f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_atomically(layout.trial_from, running + "\n", 0o644)  # first: the boot's unit reads it
    _write_json(layout.trial, {"from": running, "to": release.version, "file": name,
                               "at": time.time()})
    try:
        install_units(layout, tree)
        switch_current(layout, release.version)
        host.reload()
        host.restart(SERVICES)
        if not host.active(SERVICES, START_SECONDS):
            return revert(layout, host, RevertReason.SERVICE_FAILED,
                          "the services of the new version did not come up")
        failed = _newly_failed(before, host.selftest(SELFTEST_SECONDS))
    except Exception as exc:  # whatever broke during the trial: back to the version before
        log.exception("software update %s failed during its trial", name)
        return revert(layout, host, RevertReason.SERVICE_FAILED,
                      f"the trial failed: {type(exc).__name__}: {exc}")
    if failed:
        return revert(layout, host, RevertReason.SELFTEST_FAILED, ", ".join(failed))
    layout.trial.unlink()
    layout.trial_from.unlink(missing_ok=True)
    fsync_dir(layout.state)
    return _record(layout, Outcome.KEPT, running=release.version, release=release.version,
                   file=name)


def _running_or_blank(layout: Layout) -> str:
    try:
        return layout.running_version()
    except ReleaseError:
        return ""


def assess_at_boot(layout: Layout | None = None, host: Host | None = None) \
        -> dict[str, Any] | None:
    """At boot, before the services: a trial still open is reverted (the outcome), else None."""
    layout, host = layout or Layout(), host or SystemdHost()
    if not layout.trial.exists():
        return None
    lock = _locked(layout)
    try:
        if not layout.trial.exists():
            return None
        return revert(layout, host, RevertReason.BOOT_INTERRUPTED,
                      "the box went down during the trial", restart=False)
    finally:
        os.close(lock)


def take_from(folder: Path, layout: Layout | None = None) -> list[str]:
    """Copy the releases at the top of ``folder`` (a USB stick, or the service's hand-over)
    into the incoming folder: regular files named ``clinibox-<version>.release``, never a link,
    of a bounded size, at most :data:`MAX_RELEASES_TAKEN`, while the disk has room; their
    names."""
    layout = layout or Layout()
    layout.incoming.mkdir(mode=0o700, parents=True, exist_ok=True)
    for leftover in layout.incoming.glob(".taking-*"):
        leftover.unlink(missing_ok=True)
    taken: list[str] = []
    for path in sorted(folder.glob("*" + SUFFIX)):
        if not RELEASE_FILE.fullmatch(path.name) or path.is_symlink() or not path.is_file() \
                or path.stat().st_size > MAX_RELEASE_BYTES or len(taken) >= MAX_RELEASES_TAKEN:
            log.warning("a file named like a release was left where it lies (not "
                        "clinibox-<version>.release, not a file of at most %d MB, or more "
                        "than %d)", MAX_RELEASE_BYTES >> 20, MAX_RELEASES_TAKEN)
            continue
        if shutil.disk_usage(layout.incoming).free < path.stat().st_size + SPARE_BYTES:
            log.warning("%s left where it lies: the disk lacks room", path.name)
            continue
        handle, temporary = tempfile.mkstemp(prefix=".taking-", dir=layout.incoming)
        try:
            with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as src, \
                    os.fdopen(handle, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(temporary, layout.incoming / path.name)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        taken.append(path.name)
    fsync_dir(layout.incoming)
    return taken


def apply_incoming(config: Config, layout: Layout | None = None, host: Host | None = None
                   ) -> Iterator[dict[str, Any]]:
    """Apply every release waiting in the incoming folder, oldest version first, yielding each
    outcome as it ends; each release is removed once applied or refused."""
    layout = layout or Layout()
    handed = config.software_incoming_dir
    if handed.is_dir() and not handed.is_symlink():  # the hospital's, fetched by the service
        for name in take_from(handed, layout):
            (handed / name).unlink(missing_ok=True)
    waiting = sorted(layout.incoming.glob("*" + SUFFIX),
                     key=lambda p: version_key(p.name.removesuffix(SUFFIX)))
    for path in waiting:
        log.info("applying %s", path.name)
        # out of the incoming folder first: a release that hangs or kills the machine is not
        # applied again at every boot
        applying = layout.state / "applying"
        applying.mkdir(mode=0o700, exist_ok=True)
        taken = applying / path.name
        os.replace(path, taken)
        try:
            yield apply(config, taken, layout=layout, host=host)
        finally:
            taken.unlink(missing_ok=True)
