"""Signed model packages made from the bundled demo package, for the model-lifecycle tests.

``make_package`` copies the demo package under a new version and signs it
again, with the demo key (trusted by a default box), another key (not
trusted) or none; it can also tamper with an artifact after signing or move a
golden case's expected value so the case fails on any backend.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from firmware_app import signing
from firmware_app.config import BUNDLED_MODELS_DIR

DEMO = BUNDLED_MODELS_DIR / "clinibox-demo-lesion" / "1.0.0"
DEMO_PRIVATE_KEY = BUNDLED_MODELS_DIR / "keys" / "DEMO-ONLY-model-signing.pem"
#: the demo package's artifacts a test package keeps (small, and the default runtime runs them)
KEPT_ARTIFACTS = ("model.fp32.onnx", "model.int8.onnx")


def make_package(folder: Path, version: str, *, key: Path | None = DEMO_PRIVATE_KEY,
                 tamper: bool = False, failing_golden: bool = False,
                 name: str = "clinibox-demo-lesion") -> Path:
    """A copy of the demo package as ``name@version`` in ``folder/<name>/<version>``."""
    root = folder / name / version
    root.mkdir(parents=True)
    manifest = json.loads((DEMO / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["path"] in KEPT_ARTIFACTS]
    for relative in [*KEPT_ARTIFACTS, *(c["input"] for c in manifest["golden_cases"])]:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(DEMO / relative, root / relative)
    manifest["name"], manifest["version"] = name, version
    if failing_golden:
        case = manifest["golden_cases"][0]
        case["expected"] = {"probability": round(1.0 - case["expected"]["probability"], 5)}
    manifest.pop("signature", None)
    if key is not None:
        manifest = signing.sign_document(manifest, signing.load_private_key(key))
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if tamper:
        artifact = root / KEPT_ARTIFACTS[1]
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 0xFF
        artifact.write_bytes(bytes(data))
    return root
