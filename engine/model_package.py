"""Model packages on the box: find, load and verify ``models/<name>/<version>/``.

What a manifest holds and the checks on its files are in
``clinibox_common/contracts/manifest.py`` (shared with the converter). Loading
checks the schema, every file's sha256 and the signature, and refuses the
package with a message a technician can act on when any check fails.
"""

from __future__ import annotations

import json
from pathlib import Path

from clinibox_common.contracts import signing
from clinibox_common.contracts.manifest import (
    _VERSION,
    ModelPackage,
    PackageError,
    check_files,
    check_schema,
)


def load_package(root: Path, trusted_keys: list[Path]) -> ModelPackage:
    """Load and fully verify the package in ``root``; raise PackageError if refused."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PackageError(f"no manifest.json in {root}") from exc
    except (OSError, ValueError) as exc:
        raise PackageError(f"{manifest_path} is not readable JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise PackageError(f"{manifest_path} is not a JSON object")
    check_schema(manifest)
    keys = []
    for key_path in trusted_keys:
        try:
            keys.append(signing.load_public_key(key_path))
        except (OSError, ValueError) as exc:
            raise PackageError(f"trusted key {key_path} cannot be read: {exc}") from exc
    try:
        signer = signing.verify_document(manifest, keys)
    except signing.SignatureError as exc:
        if _signed_with_demo_key(manifest) and not _trusts_demo_key(keys):
            raise PackageError(
                f"{manifest.get('name')}@{manifest.get('version')} is signed with the DEMO-ONLY "
                "key, which this box does not trust (its private half is public); install a "
                "package signed with your own key, or set [models] trust_demo_key = true on a "
                "demonstration box", "signature") from exc
        raise PackageError(str(exc), "signature") from exc
    check_files(root, manifest)
    return ModelPackage(root=root, manifest=manifest, signer=signer)


def _trusts_demo_key(keys: list) -> bool:
    """Whether the demo key is among the trusted ``keys``."""
    from clinibox_common.bundled import DEMO_KEY_ID

    return any(signing.key_id(k) == DEMO_KEY_ID for k in keys)


def _signed_with_demo_key(manifest: dict) -> bool:
    """Whether the manifest's signature names the demo key."""
    from clinibox_common.bundled import DEMO_KEY_ID

    return (manifest.get("signature") or {}).get("key_id") == DEMO_KEY_ID


def version_key(text: str) -> tuple[int, ...]:
    """A dotted version as a tuple that sorts numerically (``1.10`` after ``1.9``)."""
    return tuple(int(p) for p in text.split(".")) if _VERSION.match(text) else (-1,)


def list_packages(models_dir: Path) -> list[Path]:
    """Every ``<name>/<version>`` folder holding a manifest, sorted by name then version."""
    found = [p.parent for p in Path(models_dir).glob("*/*/manifest.json")]
    return sorted(found, key=lambda p: (p.parent.name, version_key(p.name)))


def find_package(models_dir: Path, name: str, version: str = "") -> Path:
    """The folder of package ``name`` at ``version`` (newest when empty)."""
    candidates = [p for p in list_packages(models_dir) if p.parent.name == name]
    if version:
        candidates = [p for p in candidates if p.name == version]
    if not candidates:
        wanted = f"{name} {version}".strip()
        raise PackageError(f"no model package {wanted!r} under {models_dir}")
    return candidates[-1]


def signature_history(manifest: dict) -> list[dict]:
    """The earlier signatures a package kept when it was signed again (``clinibox model
    sign``): ``provenance.signatures``, first signer first; empty when it never was."""
    provenance = manifest.get("provenance")
    entries = provenance.get("signatures") if isinstance(provenance, dict) else None
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("key_id"), str)]
