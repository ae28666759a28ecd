"""A model package from a USB stick: the box's first model, or an update of its own, with no
terminal.

A stick may carry one model package archive (``*.tar.gz``, ``*.tgz`` or ``*.tar`` at its top, as
``clinibox model sign`` and the converter write it) beside the hospital's enrolment bundle. The
stick's root step (``clinibox usb-import --step provision``), after the bundle, so that a new box
already trusts the hospital's model-signing keys:

1. takes the one archive (a regular file, not a link, at most :data:`MAX_ARCHIVE_BYTES`): none,
   and nothing happens; two, and both are refused, as nobody can say which was meant;
2. verifies it as ``clinibox model install`` would (the signature by a key this box trusts,
   every file's hash) in a private folder of root's, before anything changes; a package
   signed with the DEMO-ONLY key (whose private half is public) is refused even on a box that
   still trusts it (one not yet provisioned): anyone could make one;
3. compares its name with the box's ``[models] name``. The same name: it is installed like any
   update (the version floor and golden cases still apply). Another name, on a box that has no
   installed package yet (a new box still on the demo's name): the box adopts it, the one
   change written to ``/etc/clinibox/clinibox.toml`` (root's), so the hospital's rollouts of
   that package reach it later. Another name on a box that runs a package of its own: refused,
   so a stick can never swap a clinic's model for another;
4. installs it with ``clinibox model install`` run as the service's user (the files in the
   state folder stay the service's), whose checks all apply, and
5. writes the outcome, a code, to ``/run/clinibox-usb-model.json`` for the console's banner.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clinibox_common.bundled import DEMO_KEY_ID
from clinibox_common.contracts.downlink import MAX_ARCHIVE_BYTES
from clinibox_common.contracts.manifest import PackageError
from clinibox_common.contracts.package_archive import unpack
from clinibox_common.contracts.words import Word
from clinibox_common.settings_loader import ConfigError
from engine.model_package import load_package
from firmware_app.models.store import ARCHIVE_SUFFIXES, store_for
from firmware_app.ops import stick_outcome
from firmware_app.ops.provision import ProvisionError, set_values, state_owner
from firmware_app.settings import box as config_module

log = logging.getLogger(__name__)

OUTCOME_PATH = Path("/run/clinibox-usb-model.json")
#: how long the install (its golden cases) may take
INSTALL_SECONDS = 1800


class ModelOutcome(Word):
    """What a stick's model package came to (the console's banner reads it)."""

    NONE = "none"
    """No model package on the stick."""
    INSTALLED = "installed"
    """Installed: the box runs it on trial."""
    ADOPTED = "adopted"
    """The box took the package's name (its first model) and installed it."""
    TWO_PACKAGES = "two_packages"
    """More than one package at the stick's top: none was taken."""
    NOT_VERIFIED = "not_verified"
    """Not signed by a key this box trusts, or damaged: nothing changed."""
    ANOTHER_MODEL = "another_model"
    """The box runs a package of another name: nothing changed."""
    REFUSED = "refused"
    """The install refused it (the version floor, its golden cases …): the box keeps its model."""


@dataclass(frozen=True)
class ModelResult:
    """The outcome, the archive's file name, the package (``name@version``) and why not."""

    outcome: ModelOutcome
    archive: str = ""
    model: str = ""
    reason: str = ""


def archives_on(folder: Path) -> list[Path]:
    """The regular files named like a package archive at the top of the medium (no link)."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.name.endswith(ARCHIVE_SUFFIXES):
            continue
        if entry.is_symlink() or not entry.is_file():
            continue
        found.append(entry)
    return found


def _copy_bounded(source: Path, target: Path) -> None:
    """Copy a file someone else wrote, at most MAX_ARCHIVE_BYTES, never through a link."""
    with open(source, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW | os.O_NONBLOCK)) \
            as src, open(target, "wb") as dst:
        copied = 0
        while chunk := src.read(1 << 20):
            copied += len(chunk)
            if copied > MAX_ARCHIVE_BYTES:
                raise PackageError(f"larger than {MAX_ARCHIVE_BYTES >> 20} MB", "too_large")
            dst.write(chunk)


def run_install(archive: Path, config_path: Path,
                owner: tuple[int, int] | None) -> tuple[bool, str]:
    """``clinibox model install ARCHIVE`` as ``owner`` (the service's user); (done, what it
    said last)."""
    command = [sys.executable, "-m", "clinibox", "model", "install", str(archive),
               "--config", str(config_path)]
    extra: dict = {} if owner is None else {"user": owner[0], "group": owner[1],
                                            "extra_groups": []}
    env = {**os.environ, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}  # the journal's: English
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              timeout=INSTALL_SECONDS, check=False, **extra)
    except subprocess.TimeoutExpired:
        return False, f"the install took longer than {INSTALL_SECONDS} s"
    if done.returncode == 0:
        said = done.stdout.strip().splitlines()
        return True, said[0] if said else "installed"
    # the refusal's line (``REFUSED (code): why``), not the log lines before it
    lines = done.stderr.strip().splitlines()
    refused = [line for line in lines if line.startswith("REFUSED")]
    return False, (refused or lines or [f"exit status {done.returncode}"])[-1]


def take_from(folder: Path, config_path: Path, *,
              install: Callable[[Path, Path, tuple[int, int] | None], tuple[bool, str]]
              = run_install) -> ModelResult:
    """Verify, adopt and install the model package at the top of ``folder`` (the module's
    steps); the outcome."""
    archives = archives_on(folder)
    if not archives:
        return ModelResult(ModelOutcome.NONE)
    if len(archives) > 1:
        return ModelResult(ModelOutcome.TWO_PACKAGES, ", ".join(p.name for p in archives),
                           reason="more than one model package at the stick's top")
    source = archives[0]
    try:
        config = config_module.load(str(config_path))
    except ConfigError as exc:
        return ModelResult(ModelOutcome.NOT_VERIFIED, source.name, reason=str(exc))
    work = Path(tempfile.mkdtemp(prefix="clinibox-usb-model-"))
    try:
        archive = work / source.name
        try:
            _copy_bounded(source, archive)
            package = load_package(unpack(archive, work / "package"), config.trusted_key_paths)
        except (PackageError, OSError, ValueError) as exc:
            return ModelResult(ModelOutcome.NOT_VERIFIED, source.name, reason=str(exc))
        if package.signer == DEMO_KEY_ID:  # its private half is public: anyone signs with it
            return ModelResult(ModelOutcome.NOT_VERIFIED, source.name, package.model_id,
                               "signed with the DEMO-ONLY key, whose private half is public: "
                               "a stick takes only a package the hospital signed")
        result = _install_or_adopt(config, config_path, archive, package.name,
                                   package.model_id, install)
        return ModelResult(result[0], source.name, package.model_id, result[1])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _install_or_adopt(config: config_module.Config, config_path: Path, archive: Path,
                      name: str, model_id: str,
                      install: Callable[[Path, Path, tuple[int, int] | None], tuple[bool, str]]
                      ) -> tuple[ModelOutcome, str]:
    """Take the package's name when the box has none of its own, then install; the outcome and
    what was said."""
    adopted = False
    if name != config.models.name:
        if store_for(config).read().active:
            return ModelOutcome.ANOTHER_MODEL, (
                f"the box runs {config.models.name}; the stick's package is {name}")
        try:
            set_values(config_path, {"models": {"name": name}},
                       f"the model package {model_id} on a USB stick")
        except ProvisionError as exc:
            return ModelOutcome.REFUSED, str(exc)
        adopted = True
    owner = state_owner(config)
    os.chmod(archive.parent, 0o755)  # the service's user reads the copy, nothing else of root's
    os.chmod(archive, 0o644)
    done, said = install(archive, config_path, owner)
    if not done:
        if adopted:  # the box's name goes back with it: nothing changed
            set_values(config_path, {"models": {"name": config.models.name}},
                       f"the model package {model_id} refused; the name restored")
        return ModelOutcome.REFUSED, said
    return (ModelOutcome.ADOPTED if adopted else ModelOutcome.INSTALLED), said


def banner_line(result: ModelResult | None) -> str | None:
    """The appliance screen's line about the last stick's model package (English: the Linux
    console has no Chinese font), or None."""
    if result is None or result.outcome is ModelOutcome.NONE:
        return None
    if result.outcome is ModelOutcome.ADOPTED:
        return (f"model {result.model} from the USB stick installed, on trial; it is this "
                "box's model from now on")
    if result.outcome is ModelOutcome.INSTALLED:
        return f"model {result.model} from the USB stick installed, on trial"
    return f"model package on the USB stick refused ({result.archive}): {result.reason}"


def record(result: ModelResult, path: Path | None = None) -> None:
    """Keep the outcome where the console's banner reads it (root's, readable by all)."""
    stick_outcome.record(result, path or OUTCOME_PATH)


def read_outcome(path: Path | None = None) -> ModelResult | None:
    """The last stick's model outcome, or None when no stick carried a package since the boot."""
    return stick_outcome.read(path or OUTCOME_PATH, ModelResult, ModelOutcome)
