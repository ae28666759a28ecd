"""Trial packages (``clinibox model trial-package``): only the demo package becomes one, under
a newer version, never signed with the DEMO-ONLY key. The rehearsal of
``docs/technician/model.md`` runs as written on an installed box in
``tests/integration/test_docs_run_technician.py``, which checks what it makes."""

from __future__ import annotations

import pytest

from clinibox_common.contracts import signing
from clinibox_common.contracts.manifest import PackageError
from firmware_app.models.rehearsal import make_trial_package


def test_only_the_demo_package_becomes_a_trial_package(tmp_path):
    from clinibox_common.bundled import BUNDLED_MODELS_DIR

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
