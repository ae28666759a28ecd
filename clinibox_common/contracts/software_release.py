"""A release of the box's own software: ``clinibox-<version>.release``.

A release is the part of an offline bundle (``make wheelhouse``) that changes from one
version of clinibox to the next when its dependencies do not: the ``clinibox`` wheel, the
``pip`` wheel that installs it, the units (``systemd/``) and the bundle's whole
``SHA256SUMS``, which names every dependency's wheel, the native receiver's source and the
shipped model packages and keys by hash. It is a package archive (``package_archive.py``: one
top folder, deterministic, no links) whose ``manifest.json`` is a release manifest, signed
by one of the hospital's model-signing keys: the keys every enrolled box already trusts for
the packages it may run (``[models] trusted_keys``).

The box applies a release only on top of a version built from the same dependencies
(:func:`dependency_change`): its new application tree is the running tree's venv and shipped
models copied, with the new wheel installed over it, so a release is a few megabytes over a
rural link where the bundle is a hundred. A release whose dependencies, receiver or shipped
models differ is refused
(:attr:`ReleaseRefusal.NEEDS_BUNDLE`): that version comes with its offline bundle.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from clinibox_common.contracts import signing
from clinibox_common.contracts.egress import SOFTWARE_VERSION
from clinibox_common.contracts.words import Word
from clinibox_common.errors import CliniboxError

#: the ``schema`` of a release manifest
RELEASE_SCHEMA = "clinibox-release/1"
#: the ``name`` every release carries (a model package never does)
RELEASE_NAME = "clinibox"
#: a release archive's name ends so
SUFFIX = ".release"
#: what a release carries besides its manifest: top-level names
CARRIED = ("SHA256SUMS", "wheels", "systemd")
_CHUNK = 1 << 20


class ReleaseRefusal(Word):
    """Why a box refuses a release (a code kept with the outcome; said in words by the
    device page and ``clinibox software status``)."""

    NOT_A_RELEASE = "not_a_release"
    """The file is no release archive, or its manifest is malformed."""
    SIGNATURE = "signature"
    """Not signed by a key this box trusts, or the signature does not match."""
    TAMPERED = "tampered"
    """A file's SHA-256 is not the one the signed manifest names, or a file is missing
    or extra."""
    NOT_NEWER = "not_newer"
    """The release is the version the box runs, or older."""
    NEEDS_BUNDLE = "needs_bundle"
    """Its dependencies, native receiver or shipped models differ from the running
    version's: it comes with the offline bundle."""
    DATABASE_CHANGE = "database_change"
    """It would change the box's database schema: it comes with the offline bundle, after
    a backup, so that going back never loses what the box received."""
    CONFIG_REFUSED = "config_refused"
    """The new version refuses the box's configuration."""
    NO_SPACE = "no_space"
    """Too little free space for the new application tree."""
    NOT_INSTALLED = "not_installed"
    """This box was not installed by ``install.sh`` (no ``/opt/clinibox/current``)."""
    BUILD_FAILED = "build_failed"
    """The new application tree could not be built (its installer failed)."""


class ReleaseError(CliniboxError):
    """A release refused, with its code."""

    def __init__(self, code: ReleaseRefusal, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Release:
    """A release's verified manifest and the folder its files lie in."""

    root: Path
    version: str
    created: str
    signer: str
    files: dict[str, str]

    @property
    def wheel(self) -> Path:
        """The ``clinibox`` wheel it installs."""
        return self.root / next(n for n in self.files if _is_app_wheel(n))

    @property
    def pip_wheel(self) -> Path:
        """The ``pip`` wheel that installs it."""
        return self.root / next(n for n in self.files
                                if n.startswith("wheels/pip-") and n.endswith(".whl"))


def is_release(name: str) -> bool:
    """Whether a package name offered in a rollout is the box's own software (a release)
    rather than a model package: the one name a model package never has."""
    return name == RELEASE_NAME


def file_name(version: str) -> str:
    """The file a release of ``version`` is kept as: ``clinibox-<version>.release``."""
    return f"{RELEASE_NAME}-{version}{SUFFIX}"


#: the reason a box gives the hospital for each refusal and return (``egress.EVENT_REASONS``)
EVENT_REASONS: dict[str, str] = {
    "not_a_release": "invalid", "signature": "signature", "tampered": "tampered",
    "not_newer": "older_version", "needs_bundle": "needs_bundle",
    "database_change": "database_change", "config_refused": "config_refused",
    "no_space": "no_space", "not_installed": "not_installed", "build_failed": "build_failed",
    "service_failed": "service_failed", "selftest_failed": "selftest_failed",
    "boot_interrupted": "boot_interrupted",
}


def _is_app_wheel(name: str) -> bool:
    return name.startswith("wheels/clinibox-") and name.endswith(".whl")


def version_key(version: str) -> tuple[int, ...]:
    """A release version as numbers to compare (``0.10.0`` after ``0.9.1``)."""
    return tuple(int(part) for part in re.findall(r"[0-9]+", version.split("+")[0])[:4])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _carried_files(root: Path) -> dict[str, str]:
    """Every file under ``root`` but the manifest, as relative path → SHA-256."""
    return {path.relative_to(root).as_posix(): _sha256(path)
            for path in sorted(root.rglob("*"))
            if path.is_file() and path != root / "manifest.json"}


def manifest_for(bundle: Path, version: str, created: str) -> dict[str, Any]:
    """The unsigned release manifest of the release folder ``bundle`` (files hashed)."""
    return {"schema": RELEASE_SCHEMA, "name": RELEASE_NAME, "version": version,
            "created": created, "files": _carried_files(bundle)}


def sign(manifest: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The manifest signed by ``key`` (one of the hospital's model-signing keys)."""
    return signing.sign_document(manifest, key)


def _checked_manifest(document: Any) -> dict[str, Any]:
    """The manifest's shape, or ReleaseError(NOT_A_RELEASE)."""
    if not isinstance(document, dict) or document.get("schema") != RELEASE_SCHEMA \
            or document.get("name") != RELEASE_NAME:
        raise ReleaseError(ReleaseRefusal.NOT_A_RELEASE,
                           f"its manifest is not a {RELEASE_SCHEMA} manifest")
    version, files = document.get("version"), document.get("files")
    # a version the box's status may carry
    if not isinstance(version, str) or not SOFTWARE_VERSION.fullmatch(version):
        raise ReleaseError(ReleaseRefusal.NOT_A_RELEASE, f"version {version!r} is not usable")
    if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)
            for k, v in files.items()):
        raise ReleaseError(ReleaseRefusal.NOT_A_RELEASE, "its file list is malformed")
    if sum(1 for name in files if _is_app_wheel(name)) != 1 or not any(
            name.startswith("wheels/pip-") for name in files) or "SHA256SUMS" not in files:
        raise ReleaseError(ReleaseRefusal.NOT_A_RELEASE,
                           "it lacks its clinibox wheel, its pip wheel or SHA256SUMS")
    if any(name.split("/")[0] not in CARRIED for name in files):
        raise ReleaseError(ReleaseRefusal.NOT_A_RELEASE, "it carries files it should not")
    return document


def verify(root: Path, trusted: list[Ed25519PublicKey]) -> Release:
    """The release unpacked at ``root``, verified: its manifest's shape, its signature by a
    trusted key, every file's SHA-256 and no file more or less (ReleaseError otherwise)."""
    try:
        document = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReleaseError(ReleaseRefusal.NOT_A_RELEASE, f"no readable manifest: {exc}") \
            from exc
    manifest = _checked_manifest(document)
    try:
        signer = signing.verify_document(manifest, trusted)
    except signing.SignatureError as exc:
        raise ReleaseError(ReleaseRefusal.SIGNATURE, str(exc)) from exc
    found = _carried_files(root)
    if found != manifest["files"]:
        wrong = sorted(set(found) ^ set(manifest["files"])
                       | {n for n in found if manifest["files"].get(n) not in (None, found[n])})
        raise ReleaseError(ReleaseRefusal.TAMPERED,
                           "files differ from the signed list: " + ", ".join(wrong[:5]))
    return Release(root, manifest["version"], str(manifest.get("created", "")), signer,
                   dict(manifest["files"]))


def read_sums(path: Path) -> dict[str, str]:
    """A ``SHA256SUMS`` file as relative path → SHA-256 (``*`` and ``./`` dropped)."""
    sums: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        if not name:
            digest, _, name = line.partition(" *")
        if name:
            sums[name.removeprefix("./")] = digest
    return sums


def _dependencies(sums: dict[str, str]) -> dict[str, str]:
    """What a new application tree takes from the running one: every wheel but clinibox's
    and pip's, the native receiver's source and the shipped models."""
    return {name: digest for name, digest in sums.items()
            if (name.startswith("wheels/") and not name.startswith(("wheels/clinibox-",
                                                                     "wheels/pip-")))
            or name.startswith(("native/", "models/"))}


def dependency_change(running: dict[str, str], release: dict[str, str]) -> list[str]:
    """The dependencies (wheels, native receiver, shipped models) that differ between the
    running version's bundle sums and the release's: empty when the release may be applied
    on top."""
    old, new = _dependencies(running), _dependencies(release)
    return sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
