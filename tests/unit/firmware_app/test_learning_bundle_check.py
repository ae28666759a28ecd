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


def _clinibox_project(version: str = "1.0.0", name: str = "clinibox-federated",
                      publisher: str = "clinibox", padding: int = 0) -> str:
    return (f'[project]\nname = "{name}"\nversion = "{version}"\n'
            f'[tool.flwr.app]\npublisher = "{publisher}"\n'
            + _project("firmware_app.learning.client_app:app") + "#" + "A" * padding + "\n")


def _manifest(*listed: str) -> str:
    return "".join(f"{name},{'0' * 64},10\n" for name in listed)


def test_a_bundle_like_clinibox_own_is_accepted():
    check_bundle(_bundle({"pyproject.toml": _clinibox_project(),
                          ".info/CONTENT": _manifest("pyproject.toml")}))


@pytest.mark.parametrize(("files", "code"), [
    # Flower names its install folder publisher.name.version.hash: a version with "/" and
    # ".." would write the bundle's files, or load an app planted there, outside its folder
    ({"pyproject.toml": _clinibox_project("1.0.0/../../../../tmp/planted")},
     "bundle_version_unsafe"),
    ({"pyproject.toml": _clinibox_project("1.0")}, "bundle_version_unsafe"),
    ({"pyproject.toml": _clinibox_project(name="../clinibox")}, "bundle_is_another_project"),
    ({"pyproject.toml": _clinibox_project(publisher="someone")}, "bundle_is_another_project"),
    # a few hundred bytes sent, a hundred megabytes written: refused before unpacking
    ({"pyproject.toml": _clinibox_project(padding=1 << 20)}, "bundle_too_large"),
    ({"pyproject.toml": _clinibox_project(),
      ".info/CONTENT": _manifest("pyproject.toml", "evil.py")}, "bundle_carries_files"),
])
def test_a_bundle_that_would_install_elsewhere_or_unpack_large_is_refused(files, code):
    with pytest.raises(BundleRefused) as refused:
        check_bundle(_bundle_deflated(files))
    assert str(refused.value) == code


def _bundle_deflated(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bundle:
        for name, text in files.items():
            bundle.writestr(name, text)
    content = out.getvalue()
    assert len(content) < 64 << 10  # sent small, whatever it unpacks to
    return content


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


def test_a_link_in_the_wrappers_place_is_replaced_not_followed(tmp_path):
    target = tmp_path / "someone-elses"
    target.write_text("#!/bin/sh\n")
    target.chmod(0o600)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "flwr-clientapp").symlink_to(target)
    install_wrapper(tmp_path / "bin")
    wrapper = tmp_path / "bin" / "flwr-clientapp"
    assert not wrapper.is_symlink() and "firmware_app.learning.bundle_check" in wrapper.read_text()
    assert target.read_text() == "#!/bin/sh\n" and stat.S_IMODE(target.stat().st_mode) == 0o600


LOADERS = ("flwr.supernode.runtime.run_clientapp", "flwr.clientapp.utils")


@pytest.mark.parametrize(("fab_id", "version", "code"), [
    ("clinibox/clinibox-federated", "1.0.0/../../../../tmp/planted", "bundle_version_unsafe"),
    ("clinibox/../../../tmp/planted", "1.0.0", "bundle_is_another_project"),
    ("someone/clinibox-federated", "1.0.0", "bundle_is_another_project"),
])
def test_the_box_loads_its_clientapp_only_from_clinibox_projects_folder(
        monkeypatch, tmp_path, fab_id, version, code):
    """Flower names the folder it loads the ClientApp from with the run's project and
    version as the SuperLink reports them, not as the checked bundle says: a SuperLink
    changed to report ``../`` would load an app from a folder of its choosing."""
    import importlib

    from clinibox_common.contracts import flower_bundle

    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    modules = [importlib.import_module(name) for name in LOADERS]
    for module in modules:  # put back after the test, whatever the check replaced
        monkeypatch.setattr(module, "get_project_dir", module.get_project_dir)
    flower_bundle.check_before_loading(*LOADERS)
    for module in modules:
        folder = module.get_project_dir("clinibox/clinibox-federated", "1.0.0", "ab" * 32)
        assert folder.resolve().is_relative_to(tmp_path)
        with pytest.raises(BundleRefused) as refused:
            module.get_project_dir(fab_id, version, "ab" * 32)
        assert str(refused.value) == code
