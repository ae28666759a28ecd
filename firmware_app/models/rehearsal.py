"""``clinibox model trial-package``: a package to rehearse signing, rollout and rollback with.

A technician or the hospital's IT needs a package to practise on before a real model comes:
the demo package is signed with the DEMO-ONLY key, which ``clinibox model sign`` and a
provisioned box rightly refuse, and making a model (``clinibox convert``, ``make demo-model``)
takes a trained network or an hour. This makes one in seconds: the demo package's files
(the same weights, golden cases and model card) under a new version, marked as a trial
package everywhere a person or program looks, and signed with a "maker" key of one's own
(``clinibox keys generate --kind signing``):

* ``provenance.rehearsal``: the package it was made from, and that it is for rehearsals;
* ``intended_use`` unchanged: "DEMONSTRATION ONLY — trained on procedurally generated
  phantoms; not for clinical use" (the box shows it, in Chinese too, on every result);
* ``MODEL_CARD.md``: a banner on top saying the same.

Only a package signed with the DEMO-ONLY key may be the source: this is no way to relabel a
clinical model. The result goes on as a maker's package would: ``clinibox model sign`` by the
hospital, then a rollout (or ``clinibox model install`` on a box that trusts the maker key).
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

from clinibox_common.bundled import BUNDLED_MODELS_DIR, DEMO_KEY_ID, DEMO_PUBLIC_KEY
from clinibox_common.contracts import signing
from clinibox_common.contracts.manifest import ModelPackage, PackageError, check_files, check_schema
from clinibox_common.contracts.package_archive import PackedArchive, pack
from clinibox_common.fs import fsync_dir
from engine.model_package import find_package, load_package, version_key
from firmware_app.models.resign import load_signing_key

#: the package a trial package is made from unless told otherwise
DEMO_PACKAGE = "clinibox-demo-lesion"
#: what ``provenance.rehearsal.purpose`` says
PURPOSE = ("trial package for rehearsing signing, rollout, canary, hold and rollback; "
           "the demo's weights, trained on phantoms; not for clinical use")
CARD_BANNER = ("> **TRIAL PACKAGE FOR REHEARSALS — NOT FOR CLINICAL USE.** Version {version} "
               "was made by `clinibox model trial-package` from {source} (the same weights, "
               "trained on phantoms) and signed with key {key}, to practise signing, rollout "
               "and rollback. It has never seen a patient image.\n\n")


@dataclass(frozen=True)
class TrialPackage:
    """What ``make_trial_package`` wrote: the signed package and its archive (if asked)."""

    package: ModelPackage
    source: str
    archive: PackedArchive | None


def demo_source() -> Path:
    """The newest bundled demo package."""
    return find_package(BUNDLED_MODELS_DIR, DEMO_PACKAGE, "")


def trial_manifest(manifest: dict[str, Any], version: str, now: float) -> dict[str, Any]:
    """``manifest`` (unsigned) under ``version``, marked as a trial package."""
    body = copy.deepcopy({k: v for k, v in manifest.items() if k != "signature"})
    source = f"{manifest['name']}@{manifest['version']}"
    body["version"] = version
    provenance = body.setdefault("provenance", {})
    provenance.pop("signatures", None)  # the demo key's signatures do not cover this one
    provenance["rehearsal"] = {"made_from": source, "purpose": PURPOSE,
                               "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                        time.gmtime(now))}
    check_schema(body)
    return body


def make_trial_package(key: Path, version: str, out: Path, *, source: Path | None = None,
                       archive: Path | None = None, now: float | None = None) -> TrialPackage:
    """Copy the demo package at ``source`` (default: the bundled one) to ``out`` as
    ``version``, marked as a trial package, signed with the private ``key``; PackageError if
    refused (nothing is written then)."""
    now = time.time() if now is None else now
    private_key = load_signing_key(key)  # the DEMO-ONLY key is refused
    root = Path(source) if source is not None else demo_source()
    refusal = (f"{root} is not the demo package: only a package signed with the DEMO-ONLY "
               "key may become a trial package")
    try:
        package = load_package(root, [DEMO_PUBLIC_KEY])
    except PackageError as exc:
        if exc.code == "signature":
            raise PackageError(refusal, "signature") from exc
        raise
    if package.signer != DEMO_KEY_ID:
        raise PackageError(refusal, "signature")
    body = trial_manifest(package.manifest, version, now)  # PackageError: not dotted numbers
    if version_key(version) <= version_key(package.version):
        raise PackageError(f"version {version} is not newer than {package.version}; "
                           "a rollout needs a newer one")
    signed = signing.sign_document(body, private_key)
    out = Path(out)
    if out.exists():
        raise PackageError(f"{out} already exists; remove it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    key_id = signing.key_id(private_key.public_key())
    try:
        shutil.copytree(root, partial, symlinks=False)
        (partial / "manifest.json").write_text(
            json.dumps(signed, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        card = partial / "MODEL_CARD.md"
        banner = CARD_BANNER.format(version=version, source=package.model_id, key=key_id)
        card.write_text(banner + (card.read_text(encoding="utf-8") if card.exists() else ""),
                        encoding="utf-8")
        check_files(partial, signed)
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    fsync_dir(out.parent)
    made = ModelPackage(root=out, manifest=signed, signer=key_id)
    packed = pack(out, Path(archive)) if archive else None
    return TrialPackage(made, package.model_id, packed)
