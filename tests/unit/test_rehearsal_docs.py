"""The technician's rehearsal runs as written: the ``sh`` blocks of "Rehearse with a trial
package" (``docs/technician/model.md``), read by Sybil, run in order in one bash — make a maker
key, make two trial packages from the demo, verify, sign them as the hospital, install both on
a scratch box, roll back — and what they make is a trial package in every place it says so."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from sybil import Document
from sybil.parsers.markdown import CodeBlockParser

from firmware_app.contracts import signing
from firmware_app.contracts.manifest import PackageError
from firmware_app.models.rehearsal import make_trial_package

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "technician" / "model.md"
SECTION = "## Rehearse with a trial package"


def section_blocks() -> list[str]:
    """The page's ``sh`` blocks inside the rehearsal section, in order (Sybil's parser)."""
    text = PAGE.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    document = Document.parse(str(PAGE), CodeBlockParser(language="sh"))
    return [str(example.parsed) for example in document if start <= example.start < end]


def test_the_rehearsal_runs_as_written(tmp_path):
    blocks = section_blocks()
    assert len(blocks) == 3, blocks
    home, box, bin_dir = tmp_path / "home", tmp_path / "box", tmp_path / "bin"
    for folder in (home / "rehearsal", box, bin_dir):
        folder.mkdir(parents=True)
    # the hospital's model-signing key, made before as the model-signing page says
    signing.generate_key_pair(home / "rehearsal" / "models-2026.pem",
                              home / "rehearsal" / "models-2026.pub")
    # a scratch box that trusts the hospital's key, not the demo key
    config = box / "clinibox.toml"
    config.write_text(f'[storage]\nstate_dir = "{box / "state"}"\n[dicom]\nenabled = false\n'
                      '[runtime]\nbackend = "onnxruntime"\nprecision = "fp32"\n'
                      f'[models]\ntrusted_keys = ["{home / "rehearsal" / "models-2026.pub"}"]\n'
                      "trust_demo_key = false\n")
    # the test runs as the user it is: runuser -u clinibox -- COMMAND runs COMMAND
    runuser = bin_dir / "runuser"
    runuser.write_text('#!/bin/sh\n[ "$1" = -u ] && shift 2\n[ "$1" = -- ] && shift\n'
                       'exec "$@"\n')
    runuser.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{REPO / '.venv' / 'bin'}:/usr/bin:/bin", "HOME": str(home),
           "LANG": "C.UTF-8", "CLINIBOX_CONFIG": str(config),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    script = "set -euo pipefail\n" + "\n".join(blocks)
    run = subprocess.run(["bash", "-c", script], env=env, cwd=home, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "made the TRIAL package clinibox-demo-lesion@1.0.1 from clinibox-demo-lesion@1.0.0" \
        in out
    assert ("TRIAL PACKAGE for rehearsals, made from clinibox-demo-lesion@1.0.0 (same weights): "
            "not for clinical use") in out
    assert "signed clinibox-demo-lesion@1.0.2 with key" in out
    assert "rolled back from clinibox-demo-lesion@1.0.2 to clinibox-demo-lesion@1.0.1" in out
    statuses = [line for line in out.splitlines() if line.startswith("running:")]
    assert [s.split()[1] for s in statuses] == ["clinibox-demo-lesion@1.0.2",
                                                "clinibox-demo-lesion@1.0.1"]
    folder = home / "rehearsal" / "trial-1.0.1"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["provenance"]["rehearsal"]["made_from"] == "clinibox-demo-lesion@1.0.0"
    assert manifest["intended_use"].endswith("trained on procedurally generated phantoms; "
                                             "not for clinical use")
    card = (folder / "MODEL_CARD.md").read_text()
    assert card.startswith("> **TRIAL PACKAGE FOR REHEARSALS — NOT FOR CLINICAL USE.**")
    assert "trained on phantoms" in card.splitlines()[0]


def test_only_the_demo_package_becomes_a_trial_package(tmp_path):
    from firmware_app.settings.box import BUNDLED_MODELS_DIR

    key = tmp_path / "maker"
    signing.generate_key_pair(key.with_suffix(".pem"), key.with_suffix(".pub"))
    made = make_trial_package(key.with_suffix(".pem"), "1.0.1", tmp_path / "trial")
    with pytest.raises(PackageError, match="not the demo package"):  # a maker's package
        make_trial_package(key.with_suffix(".pem"), "1.0.2", tmp_path / "again",
                           source=made.package.root)
    with pytest.raises(PackageError, match="not newer"):
        make_trial_package(key.with_suffix(".pem"), "1.0.0", tmp_path / "old")
    with pytest.raises(PackageError, match="dotted numbers"):
        make_trial_package(key.with_suffix(".pem"), "1.0.1-trial", tmp_path / "named")
    with pytest.raises(PackageError, match="DEMO-ONLY key"):
        make_trial_package(BUNDLED_MODELS_DIR.parent / "models" / "keys"
                           / "DEMO-ONLY-model-signing.pem", "1.0.3", tmp_path / "demo")
    assert not (tmp_path / "again").exists() and not (tmp_path / "old").exists()
