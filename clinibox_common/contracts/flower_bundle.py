"""What a Flower App Bundle (FAB) of clinibox's federated fine-tuning may hold (decision 0056).

Flower installs the bundle a run sends, puts its folder on the import path and loads the
ServerApp (at the hospital) or ClientApp (on a box) its ``pyproject.toml`` names. clinibox's
bundle carries no code: it names the apps installed with clinibox. So both sides accept a
bundle only when it holds nothing but ``pyproject.toml`` and Flower's manifest
(``.info/CONTENT``, listing that file alone), unpacks to a few kilobytes, is clinibox's
project by its publisher, name and a plain ``N.N.N`` version (Flower makes its install folder
of those three: a version with ``/`` or ``..`` in it would put the bundle's files, or load
an app, outside Flower's folder) and names their own app; anything else is refused with a
fixed code before a file of it is written (``firmware_app/learning/bundle_check.py`` on the
box, ``central/federated/serverapp_check.py`` at the hospital).
"""

from __future__ import annotations

import importlib
import io
import os
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from clinibox_common.errors import CliniboxError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: the only ClientApp a box runs: the one installed with clinibox
CLIENT_APP = "firmware_app.learning.client_app:app"
#: the only ServerApp the hospital's SuperLink runs: the one installed with clinibox
SERVER_APP = "central.federated.server_app:app"
#: the only files a bundle may hold
BUNDLE_FILES = frozenset({"pyproject.toml", ".info/CONTENT"})
#: the largest bundle read (clinibox's is about 2 KB)
MAX_BUNDLE_BYTES = 1 << 20
#: the most its files may unpack to (clinibox's: about 2 KB)
MAX_UNPACKED_BYTES = 64 << 10
#: clinibox's Flower App: its publisher and project name (central/federated/flower_app)
PUBLISHER, PROJECT = "clinibox", "clinibox-federated"
#: the only form of version accepted: Flower writes it into the install folder's name
VERSION = re.compile(r"[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}")


class BundleRefused(CliniboxError, ValueError):
    """A run's bundle that is not installed; the message is the code alone."""


def check_bundle(content: bytes, component: str, expected: str) -> None:
    """Refuse (:class:`BundleRefused`) a bundle that carries code, or whose ``component``
    (``clientapp`` or ``serverapp``) is not ``expected``."""
    if len(content) > MAX_BUNDLE_BYTES:
        raise BundleRefused("bundle_too_large")
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as bundle:
            names = set(bundle.namelist())
            if not names <= BUNDLE_FILES or "pyproject.toml" not in names:
                raise BundleRefused("bundle_carries_files")
            if sum(entry.file_size for entry in bundle.infolist()) > MAX_UNPACKED_BYTES:
                raise BundleRefused("bundle_too_large")
            if _listed(bundle) - {"pyproject.toml"}:
                raise BundleRefused("bundle_carries_files")
            project = tomllib.loads(bundle.read("pyproject.toml").decode("utf-8"))
    except (zipfile.BadZipFile, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BundleRefused("bundle_unreadable") from exc
    flwr = _table(_table(project.get("tool")).get("flwr")).get("app")
    components = _table(flwr).get("components")
    if not isinstance(components, dict) or components.get(component) != expected:
        raise BundleRefused(f"bundle_names_another_{component}")
    about = _table(project.get("project"))
    version = about.get("version")
    check_project_folder(f"{_table(flwr).get('publisher')}/{about.get('name')}",
                         version if isinstance(version, str) else "")


def _table(value: object) -> dict:
    """``value`` if it is a TOML table, else an empty one."""
    return value if isinstance(value, dict) else {}


def _listed(bundle: zipfile.ZipFile) -> set[str]:
    """The files Flower's manifest (``.info/CONTENT``: one ``path,sha256,size`` a line) lists."""
    if ".info/CONTENT" not in bundle.namelist():
        return set()
    text = bundle.read(".info/CONTENT").decode("utf-8")
    return {line.split(",", 1)[0] for line in text.splitlines() if line.strip()}


def write_wrapper(folder: Path, command: str, module: str) -> Path:
    """Write ``folder``/``command``, which runs ``python -m module`` on this Python with the
    same arguments, and return ``folder``: put it first on the ``PATH`` of the Flower process
    that starts ``command`` by name, so the check runs before Flower's own process."""
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / command
    text = f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n'
    # a link put in its place is replaced, never followed (nor its target made executable)
    if wrapper.is_symlink() or not wrapper.is_file() or wrapper.read_text() != text:
        written = folder / f".{command}.new"
        written.unlink(missing_ok=True)
        written.write_text(text)
        written.chmod(0o755)
        os.replace(written, wrapper)
    else:
        wrapper.chmod(0o755)
    return folder


def check_project_folder(fab_id: str, fab_version: str) -> None:
    """Refuse (:class:`BundleRefused`) a run that names another project, or a version not of
    the form ``N.N.N``, for the folder Flower loads its app from."""
    if fab_id != f"{PUBLISHER}/{PROJECT}":
        raise BundleRefused("bundle_is_another_project")
    if not VERSION.fullmatch(fab_version):
        raise BundleRefused("bundle_version_unsafe")


def check_before_loading(*modules: str) -> None:
    """Put :func:`check_project_folder` in front of Flower's ``get_project_dir`` in each of
    ``modules`` (each imports it by name). Flower names the folder it loads an app from with
    the run's project and version as the SuperLink reports them, not as the checked bundle
    says: a changed SuperLink could point it at a folder of its choosing."""
    for name in modules:
        module = importlib.import_module(name)
        folder_of = module.get_project_dir

        def checked(fab_id: str, fab_version: str, *args: object,
                    _folder_of: Callable[..., Path] = folder_of, **kwargs: object) -> Path:
            check_project_folder(fab_id, fab_version)
            return _folder_of(fab_id, fab_version, *args, **kwargs)

        module.get_project_dir = checked


def check_before_install(runtime_module: str, check: Callable[[bytes], None]) -> None:
    """Put ``check`` in front of the bundle installation of Flower's ``runtime_module`` (the
    module, imported by its dotted name: its package exports a function of the same name),
    so a refused bundle raises before a file of it is written."""
    runtime = importlib.import_module(runtime_module)
    install = runtime.install_from_fab

    def checked_install(fab_file: bytes | Path, *args: object, **kwargs: object) -> Path:
        check(fab_file if isinstance(fab_file, bytes) else Path(fab_file).read_bytes())
        return install(fab_file, *args, **kwargs)

    runtime.install_from_fab = checked_install
