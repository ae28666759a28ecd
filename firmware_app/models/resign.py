"""``clinibox model sign``: the hospital signs a maker's package with its own key.

A box provisioned for a hospital trusts only the hospital's model-signing keys. The
hospital receives a package signed by its maker, verifies it fully (schema, every
file's sha256, the maker's signature), reviews it, and signs it again here:

* the maker's signature moves, verbatim, into ``provenance.signatures`` (a list,
  first signer first: ``key_id``, ``signature``, ``signed_at`` when known, ``role``
  ``maker`` or ``hospital``, and ``replaced_at``, when it was signed over);
* the new ``signature`` covers the whole manifest, the list included.

Every earlier signature stays checkable: the manifest it was made over is this one
without ``signature``, with the list cut back to the entries before it
(:func:`verify_provenance`).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from clinibox_common.bundled import DEMO_KEY_ID
from clinibox_common.contracts import signing
from clinibox_common.contracts.manifest import ModelPackage, PackageError, check_files
from clinibox_common.contracts.package_archive import PackedArchive, pack, unpack
from clinibox_common.fs import fsync_dir, owned_temp_folder
from engine.model_package import load_package, signature_history

ROLE_MAKER, ROLE_HOSPITAL = "maker", "hospital"
_ARCHIVES = (".tar.gz", ".tgz", ".tar")


@dataclass(frozen=True)
class SignResult:
    """What ``sign_package`` made: the signed package, its folder, and its archive."""

    package: ModelPackage
    earlier: list[dict[str, Any]]
    archive: PackedArchive | None


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def earlier_document(manifest: dict[str, Any], index: int) -> dict[str, Any]:
    """The manifest as it was when the ``index``-th kept signature was made over it."""
    entries = signature_history(manifest)
    document = copy.deepcopy({k: v for k, v in manifest.items() if k != "signature"})
    provenance = document["provenance"]
    if index:
        provenance["signatures"] = copy.deepcopy(entries[:index])
    else:
        del provenance["signatures"]
        if not provenance:  # made by the first re-signing
            del document["provenance"]
    document["signature"] = copy.deepcopy(entries[index].get("signature"))
    return document


def verify_provenance(manifest: dict[str, Any], keys: list[Ed25519PublicKey]) -> list[str]:
    """The key ids of the kept earlier signatures that verify with ``keys``, first signer
    first (one that does not, or whose key is not among ``keys``, is left out)."""
    verified = []
    for index, _entry in enumerate(signature_history(manifest)):
        try:
            verified.append(signing.verify_document(earlier_document(manifest, index), keys))
        except signing.SignatureError:
            continue
    return verified


def resign_manifest(manifest: dict[str, Any], private_key: Ed25519PrivateKey,
                    now: float | None = None) -> dict[str, Any]:
    """``manifest`` signed with ``private_key``, its current signature kept in
    ``provenance.signatures``."""
    provenance = manifest.get("provenance", {})
    if not isinstance(provenance, dict):
        raise PackageError("the manifest's provenance is not an object; it cannot keep the "
                           "earlier signature")
    signature = manifest.get("signature")
    if not isinstance(signature, dict) or not isinstance(signature.get("key_id"), str):
        raise PackageError("the package is not signed (no signature in its manifest)",
                           "signature")
    entries = copy.deepcopy(signature_history(manifest))
    if len(entries) != len(provenance.get("signatures", [])):
        raise PackageError("the manifest's provenance.signatures is malformed")
    signed_at = entries[-1].get("replaced_at") if entries else provenance.get("created")
    entry: dict[str, Any] = {"key_id": signature["key_id"],
                             "signature": copy.deepcopy(signature),
                             "role": ROLE_HOSPITAL if entries else ROLE_MAKER,
                             "replaced_at": _utc(time.time() if now is None else now)}
    if isinstance(signed_at, str):
        entry["signed_at"] = signed_at
    body = copy.deepcopy({k: v for k, v in manifest.items() if k != "signature"})
    body["provenance"] = {**body.get("provenance", {}), "signatures": [*entries, entry]}
    return signing.sign_document(body, private_key)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The hospital's model-signing private key at ``path``; the DEMO-ONLY key is refused."""
    try:
        private_key = signing.load_private_key(Path(path))
    except (OSError, ValueError) as exc:
        raise PackageError(f"the signing key {path} cannot be read: {exc}") from exc
    if signing.key_id(private_key.public_key()) == DEMO_KEY_ID:
        raise PackageError(
            f"{path} is the DEMO-ONLY key: its private half is public, so a package it signs "
            "proves nothing; sign with the hospital's own model-signing key (clinibox keys "
            "generate --kind signing)", "signature")
    return private_key


def default_out(source: Path, name: str, version: str) -> Path:
    """``<name>-<version>-signed/`` beside the package folder or archive."""
    return Path(source).resolve().parent / f"{name}-{version}-signed"


def _write_folder(root: Path, manifest: dict[str, Any], out: Path) -> None:
    """Copy the package in ``root`` to ``out`` with ``manifest``; ``out`` appears whole."""
    if out.exists():
        raise PackageError(f"{out} already exists; remove it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        shutil.copytree(root, partial, symlinks=True)
        text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        (partial / "manifest.json").write_text(text, encoding="utf-8")
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    fsync_dir(out.parent)


def sign_package(source: Path, key: Path, trusted: list[Path], *, out: Path | None = None,
                 archive: Path | None = None, now: float | None = None) -> SignResult:
    """Verify the package at ``source`` (folder or archive) with ``trusted``, sign it with
    the private ``key`` into ``out`` (and pack it to ``archive``); PackageError if refused
    (nothing is written then)."""
    source = Path(source)
    private_key = load_signing_key(key)
    new_id = signing.key_id(private_key.public_key())
    work = owned_temp_folder("clinibox-sign-")
    try:
        if source.is_dir():
            root = source
        elif source.is_file() and source.name.endswith(_ARCHIVES):
            root = unpack(source, work / "package")
        else:
            raise PackageError(f"{source} is neither a package folder nor a .tar.gz of one")
        links = [p for p in root.rglob("*") if p.is_symlink()]
        if links:
            raise PackageError(f"the package contains links ({links[0].name}); refused")
        package = load_package(root, trusted)
        if package.signer == DEMO_KEY_ID:
            raise PackageError(
                f"{package.model_id} is signed with the DEMO-ONLY key, whose private half is "
                "public: its signature proves nothing about who made it; ask the maker for a "
                "package signed with its own key", "signature")
        if package.signer == new_id:
            raise PackageError(f"{package.model_id} is already signed by key {new_id}")
        signed = resign_manifest(package.manifest, private_key, now)
        earlier_keys = [signing.load_public_key(p) for p in trusted]
        if package.signer not in verify_provenance(signed, earlier_keys):
            raise PackageError("the earlier signature could not be kept verifiable")
        target = Path(out) if out else default_out(source, package.name, package.version)
        if root.resolve() in [target.resolve(), *target.resolve().parents]:
            raise PackageError(f"{target} lies inside the package {root}; choose another --out")
        _write_folder(root, signed, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    signing.verify_document(signed, [private_key.public_key()])
    check_files(target, signed)
    result = ModelPackage(root=target, manifest=signed, signer=new_id)
    packed = pack(target, Path(archive)) if archive else None
    return SignResult(result, signature_history(signed), packed)
