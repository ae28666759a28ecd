"""The box's model store: installed packages, which one runs, the version floor, the trial.

Layout under ``[models] store_dir`` (default ``<state_dir>/models``)::

    <name>/<version>/manifest.json, …   installed packages: the active one and the previous one
    <name>/state.json                   {active, previous, floor, trial, history}
    <name>/.lock                        serialises `clinibox model …` and the running service
    .staging-*/                         a package being checked (removed when done)

``state.json`` is the one truth about which package runs. It is replaced
atomically (write, fsync, rename, fsync the folder), so a power cut leaves
the old state or the new one, never a mix. The floor is the highest version
ever installed: it only rises, so a validly signed but older package (a
downgrade to a known-bad model) is refused, while a rollback to the kept
previous package, which a technician or the box itself asks for, stays
possible. A newly installed package runs on trial (``trial``) until it has
completed ``[models] trial_jobs`` analyses or run ``trial_hours`` without a
crash; see ``model_trial.py``.

Until anything is installed, the box runs the newest package under
``[models] dir`` (the bundled demo package on a development checkout).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from clinibox_common.contracts.manifest import PackageError
from clinibox_common.contracts.package_archive import unpack
from clinibox_common.fs import fsync_dir, write_atomically
from engine.model_package import find_package
from firmware_app.settings.box import Config

STATE_SCHEMA = "clinibox.model-store/1"
HISTORY_KEPT = 50
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")

T = TypeVar("T")


@dataclass
class Trial:
    """A newly installed package on probation."""

    version: str
    since: float
    #: analyses completed with it
    jobs: int = 0
    #: a service is running it now: set at start, cleared at a clean stop
    running: bool = False
    #: the hospital's rollout that brought it (0: a technician installed it)
    rollout: int = 0


@dataclass
class StoreState:
    """What ``state.json`` says about one package name."""

    active: str = ""
    previous: str = ""
    floor: str = ""
    trial: Trial | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def note(self, action: str, **details: Any) -> None:
        """Append to the history (newest last, the last ``HISTORY_KEPT`` kept)."""
        self.history.append({"at": round(time.time(), 3), "action": action, **details})
        del self.history[:-HISTORY_KEPT]


def _state_from(data: dict[str, Any]) -> StoreState:
    trial = data.get("trial")
    return StoreState(
        active=str(data.get("active", "")),
        previous=str(data.get("previous", "")),
        floor=str(data.get("floor", "")),
        trial=Trial(**trial) if isinstance(trial, dict) else None,
        history=list(data.get("history", [])),
    )


class ModelStore:
    """The installed packages of one name and their state file."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = Path(root)
        self.name = name
        self.folder = self.root / name
        self.state_path = self.folder / "state.json"

    # -- state -------------------------------------------------------------
    def read(self) -> StoreState:
        """The current state (empty when nothing was ever installed)."""
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return StoreState()
        except (OSError, ValueError) as exc:
            raise PackageError(f"model store state {self.state_path} is unreadable: {exc}") from exc
        if data.get("schema") != STATE_SCHEMA:
            raise PackageError(f"model store state {self.state_path} has an unknown schema")
        return _state_from(data)

    def write(self, state: StoreState) -> None:
        """Replace the state file atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        body = {"schema": STATE_SCHEMA, **asdict(state)}
        write_atomically(self.state_path, json.dumps(body, indent=2) + "\n")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock (the CLI and the service never change the state at once)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def update(self, change: Callable[[StoreState], T]) -> T:
        """Read, change and write the state under the lock; return what ``change`` returns."""
        with self.locked():
            state = self.read()
            result = change(state)
            self.write(state)
            return result

    def state_stamp(self) -> int:
        """Changes whenever the state file is replaced (cheap to poll)."""
        try:
            return self.state_path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    # -- packages ----------------------------------------------------------
    def package_root(self, version: str) -> Path:
        """Where ``version`` is (or would be) installed."""
        return self.folder / version

    def active_root(self) -> Path | None:
        """The folder of the active installed package, or None when nothing is installed."""
        active = self.read().active
        return self.package_root(active) if active else None

    def stage(self, source: Path) -> tuple[Path, Path]:
        """Copy a package folder or archive into a fresh staging folder.

        Returns (staging folder to remove afterwards, the package folder in it).
        Links are refused (a package is plain files); archives are checked and unpacked by
        ``contracts.package_archive.unpack`` (no links, absolute paths, ``..`` or devices).
        """
        source = Path(source)
        if not source.exists():
            raise PackageError(f"{source} does not exist")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            if source.is_dir():
                shutil.copytree(source, staging / "package", symlinks=True)
            elif source.name.endswith(ARCHIVE_SUFFIXES):
                unpack(source, staging / "package")
            else:
                raise PackageError(f"{source} is neither a package folder nor a .tar.gz of one")
            links = [p for p in staging.rglob("*") if p.is_symlink()]
            if links:
                raise PackageError(f"the package contains links ({links[0].name}); refused")
            manifests = sorted(staging.rglob("manifest.json"))
            if len(manifests) != 1:
                raise PackageError(f"{source} holds {len(manifests)} manifest.json files; "
                                   "a package has exactly one")
            return staging, manifests[0].parent
        except (OSError, tarfile.TarError, PackageError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, PackageError):
                raise
            raise PackageError(f"{source} cannot be read as a package: {exc}") from exc

    def place(self, staged: Path, version: str) -> Path:
        """Move a checked package into ``<name>/<version>`` (replacing a leftover copy)."""
        target = self.package_root(version)
        self.folder.mkdir(parents=True, exist_ok=True)
        if target.exists():
            aside = self.folder / f".replaced-{version}-{os.getpid()}"
            os.replace(target, aside)
            shutil.rmtree(aside, ignore_errors=True)
        os.replace(staged, target)
        fsync_dir(self.folder)
        return target

    def adopt(self, package_root: Path, version: str) -> None:
        """Copy a package from outside the store (e.g. the bundled one) in, to keep it."""
        target = self.package_root(version)
        if target.exists():
            return
        temporary = Path(tempfile.mkdtemp(prefix=".adopt-", dir=self.folder))
        shutil.copytree(package_root, temporary / "package")
        os.replace(temporary / "package", target)
        shutil.rmtree(temporary, ignore_errors=True)
        fsync_dir(self.folder)

    def clean_leftovers(self, older_than_s: float = 600.0) -> list[str]:
        """Remove what an install cut short left (a power cut, a kill): ``.staging-*`` under
        the store, ``.adopt-*`` and ``.replaced-*`` in the package's folder, untouched for
        ``older_than_s`` (an install running now is younger); return their names."""
        removed = []
        limit = time.time() - older_than_s
        for folder, patterns in ((self.root, (".staging-*",)),
                                 (self.folder, (".adopt-*", ".replaced-*"))):
            for pattern in patterns:
                for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
                    try:
                        if path.is_dir() and path.stat().st_mtime < limit:
                            shutil.rmtree(path, ignore_errors=True)
                            removed.append(path.name)
                    except OSError:
                        continue
        return removed

    def prune(self, keep: set[str]) -> list[str]:
        """Remove installed versions not in ``keep``; return which."""
        removed = []
        for child in sorted(self.folder.iterdir()) if self.folder.is_dir() else []:
            if child.is_dir() and not child.name.startswith(".") and child.name not in keep:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child.name)
        return removed


def package_config(config: Config, name: str) -> Config:
    """``config`` as seen by the package ``name``: its own store, trial, floor and rollback
    (``[models] version`` pins only the box's own package)."""
    if name == config.models.name:
        return config
    return dataclasses.replace(config, models=dataclasses.replace(config.models, name=name,
                                                                  version=""))


def runtime_timings_path(config: Config, name: str) -> Path:
    """Where the service keeps the runtime timings of package ``name`` (its ``auto`` choice,
    ``runtime/timings_cache.py``); the self-test writes them too, so a box's first start
    after it loads the winner at once."""
    return config.state_dir / f"runtime-timings-{name}.json"


def routed_names(config: Config) -> list[str]:
    """The packages the box runs: its own ([models] name) and every one a routing rule
    names, in order, each once."""
    names = [config.models.name, *(rule.model for rule in config.routing.rules)]
    return list(dict.fromkeys(names))


def store_for(config: Config) -> ModelStore:
    """The model store of the configured package name."""
    return ModelStore(config.model_store_dir, config.models.name)


def resolve_package_root(config: Config) -> Path:
    """The folder of the package the box runs.

    A version pinned in ``[models] version`` wins; else the store's active
    package; else the newest under ``[models] dir``.
    """
    if config.models.version:
        return find_package(config.models_dir, config.models.name, config.models.version)
    active = store_for(config).active_root()
    if active is not None:
        if not (active / "manifest.json").is_file():
            raise PackageError(f"the active model package {active} is missing from the store")
        return active
    return find_package(config.models_dir, config.models.name, "")


def manifest_model_id(root: Path) -> str:
    """``name@version`` from a package's manifest, unverified (for messages only)."""
    try:
        manifest = json.loads((Path(root) / "manifest.json").read_text(encoding="utf-8"))
        return f"{manifest['name']}@{manifest['version']}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
