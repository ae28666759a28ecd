"""The box installs only the bundle clinibox ships: pyproject.toml and Flower's manifest,
naming the box's own ClientApp. A bundle with code, another ClientApp, or that is not a
bundle is refused with a code before a file of it is written."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import zipfile

import pytest
from flwr.cli.build import build_fab_from_disk

from clinibox_common.bundled import REPO_ROOT
from firmware_app.learning.bundle_check import (
    BundleRefused,
    check_bundle,
    install_wrapper,
    supernode_environment,
)

SHIPPED = REPO_ROOT / "central" / "federated" / "flower_app"


def _bundle(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as bundle:
        for name, text in files.items():
            bundle.writestr(name, text)
    return out.getvalue()


def _project(clientapp: str) -> str:
    return ("[tool.flwr.app.components]\nserverapp = \"central.federated.server_app:app\"\n"
            f"clientapp = \"{clientapp}\"\n")


def test_the_shipped_bundle_is_accepted():
    check_bundle(build_fab_from_disk(SHIPPED))


@pytest.mark.parametrize(("files", "code"), [
    ({"pyproject.toml": _project("firmware_app.learning.client_app:app"),
      "sitecustomize.py": "import os", ".info/CONTENT": ""}, "bundle_carries_files"),
    ({"pyproject.toml": _project("firmware_app.learning.client_app:app"),
      "firmware_app/__init__.py": ""}, "bundle_carries_files"),
    ({"pyproject.toml": _project("tests.federated_hostile.server_app:app")},
     "bundle_names_another_clientapp"),
    ({"pyproject.toml": "[tool.flwr.app]\n"}, "bundle_names_another_clientapp"),
    ({".info/CONTENT": ""}, "bundle_carries_files"),
    ({"pyproject.toml": "not = [toml"}, "bundle_unreadable"),
])
def test_a_bundle_with_code_or_another_clientapp_is_refused(files, code):
    with pytest.raises(BundleRefused) as refused:
        check_bundle(_bundle(files))
    assert str(refused.value) == code


def test_what_is_not_a_bundle_is_refused():
    for content in (b"not a zip", b"PK" + b"\0" * 30, b"\0" * (2 << 20)):
        with pytest.raises(BundleRefused):
            check_bundle(content)


def test_the_supernode_finds_the_checking_clientapp_first(tmp_path):
    env = supernode_environment(tmp_path / "bin", {"PATH": "/usr/bin"})
    first = env["PATH"].split(os.pathsep)[0]
    wrapper = tmp_path / "bin" / "flwr-clientapp"
    assert first == str(tmp_path / "bin") and wrapper.stat().st_mode & stat.S_IXUSR
    assert install_wrapper(tmp_path / "bin") == tmp_path / "bin"  # written again: the same
    done = subprocess.run(["flwr-clientapp", "--help"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--runtime-api-address" in done.stdout + done.stderr
