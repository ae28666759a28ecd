"""`clinibox model install` / `rollback`: every refusal leaves the running model untouched.

Packages are real signed copies of the demo package (tests/model_packages.py);
the golden cases really run on ONNX Runtime; the store and the outbox are real
files and SQLite.
"""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path

import pytest

from clinibox.table import main
from clinibox_common.contracts import signing
from clinibox_common.contracts.manifest import PackageError
from firmware_app.models.install import UpdateRefused, install, rollback
from firmware_app.models.store import resolve_package_root, store_for
from firmware_app.settings.box import Config, from_dict
from tests.model_packages import DEMO, make_package


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return from_dict({"storage": {"state_dir": str(tmp_path / "state")},
                      "runtime": {"backend": "onnxruntime", "precision": "fp32"}})


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    return tmp_path / "packages"


def events(config: Config) -> list[dict]:
    conn = sqlite3.connect(config.database_path)
    try:
        rows = conn.execute("SELECT payload FROM outbox WHERE kind='event' ORDER BY seq")
        return [json.loads(r[0]) for r in rows]
    finally:
        conn.close()


def running(config: Config) -> Path:
    return resolve_package_root(config).resolve()


@pytest.mark.slow
def test_install_switches_keeps_the_previous_and_raises_the_floor(config, packages):
    assert running(config) == DEMO.resolve()  # nothing installed: the bundled package runs
    result = install(config, make_package(packages, "1.1.0"))
    store = store_for(config)
    state = store.read()
    assert (state.active, state.previous, state.floor) == ("1.1.0", "1.0.0", "1.1.0")
    assert running(config) == store.package_root("1.1.0").resolve()
    assert (store.package_root("1.0.0") / "manifest.json").is_file()  # the bundled one, kept
    assert result.golden.passed and result.golden.backend_label.startswith("onnxruntime:")
    assert state.trial is not None and state.trial.version == "1.1.0" and state.trial.jobs == 0
    assert [e["event"] for e in events(config)] == ["model_installed"]
    assert events(config)[0]["model"] == "clinibox-demo-lesion@1.1.0"

    install(config, make_package(packages, "1.2.0"))
    state = store.read()
    assert (state.active, state.previous, state.floor) == ("1.2.0", "1.1.0", "1.2.0")
    assert not store.package_root("1.0.0").exists()  # only the active and the previous are kept


@pytest.mark.slow
def test_the_viewer_names_the_package_the_service_runs_after_an_install(config, packages):
    """Regression: the device page and the reports' notice named the bundled package."""
    from firmware_app.storage.spool import make_spool
    from tests.web_client import ViewerClient
    from web.app import Viewer, create_app

    viewer = Viewer(config, make_spool(config))
    assert viewer.package_facts()["model_id"] == "clinibox-demo-lesion@1.0.0"
    install(config, make_package(packages, "1.1.0", intended_use="INSTALLED-1.1.0 use canary"))
    facts = viewer.package_facts()
    assert facts["model_id"] == "clinibox-demo-lesion@1.1.0"
    assert facts["intended_use"] == "INSTALLED-1.1.0 use canary"
    login_page = ViewerClient(create_app(config)).get("/login")
    assert "INSTALLED-1.1.0 use canary" in login_page.get_data(as_text=True)
    rollback(config)
    assert viewer.package_facts()["model_id"] == "clinibox-demo-lesion@1.0.0"


def _refused(config: Config, source: Path, code: str, words: str) -> None:
    before = store_for(config).read()
    root = running(config)
    with pytest.raises(PackageError) as caught:
        install(config, source)
    assert caught.value.code == code, caught.value
    assert words in str(caught.value)
    after = store_for(config).read()
    assert (after.active, after.previous, after.floor) == (before.active, before.previous,
                                                          before.floor)
    assert running(config) == root
    assert not list(config.model_store_dir.glob(".staging-*"))


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "code", "words"), [
    ("unsigned", "signature", "not signed"),
    ("wrong key", "signature", "does not trust"),
    ("tampered", "tampered", "corrupted or altered"),
    ("failing golden", "golden_cases_failed", "OUT OF TOLERANCE"),
])
def test_bad_packages_are_refused_and_reported(config, packages, tmp_path, kind, code, words):
    install(config, make_package(packages, "1.1.0"))
    other_key = tmp_path / "other.pem"
    signing.generate_key_pair(other_key, tmp_path / "other.pub")
    source = {
        "unsigned": lambda: make_package(packages, "2.0.0", key=None),
        "wrong key": lambda: make_package(packages, "2.0.0", key=other_key),
        "tampered": lambda: make_package(packages, "2.0.0", tamper=True),
        "failing golden": lambda: make_package(packages, "2.0.0", failing_golden=True),
    }[kind]()
    _refused(config, source, code, words)
    refused = events(config)[-1]
    assert (refused["event"], refused["reason"]) == ("model_refused", code)
    assert refused["model"] == "clinibox-demo-lesion@1.1.0"
    # an unverified package's own name never leaves the box; a verified one's may
    expected = "clinibox-demo-lesion@2.0.0" if code == "golden_cases_failed" else \
        "clinibox-demo-lesion@1.1.0"
    assert refused["subject_model"] == expected


@pytest.mark.slow
def test_an_older_version_is_refused_even_after_a_rollback(config, packages):
    install(config, make_package(packages, "1.1.0"))
    _refused(config, make_package(packages, "1.0.5"), "older_version", "version floor")
    rollback(config)
    assert store_for(config).read().active == "1.0.0"
    # the floor stays at 1.1.0: 1.0.5 is still refused, 1.1.0 itself may come back
    _refused(config, make_package(packages / "again", "1.0.5"), "older_version",
             "version floor")
    install(config, make_package(packages / "again", "1.1.0"))
    assert store_for(config).read().active == "1.1.0"


@pytest.mark.slow
def test_the_running_version_and_another_name_are_refused(config, packages):
    install(config, make_package(packages, "1.1.0"))
    _refused(config, make_package(packages / "same", "1.1.0"), "invalid", "already installed")
    _refused(config, make_package(packages, "3.0.0", name="another-model"), "invalid",
             "this box runs")


@pytest.mark.slow
def test_a_tar_gz_from_usb_installs_and_a_hostile_archive_does_not(config, packages, tmp_path):
    root = make_package(packages, "1.1.0")
    archive = tmp_path / "clinibox-demo-lesion-1.1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="clinibox-demo-lesion-1.1.0")
    install(config, archive)
    assert store_for(config).read().active == "1.1.0"

    hostile = tmp_path / "hostile.tar.gz"
    with tarfile.open(hostile, "w:gz") as tar:
        data = b"owned"
        member = tarfile.TarInfo("../../escaped.txt")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    _refused(config, hostile, "invalid", "a path that climbs out")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (config.model_store_dir.parent / "escaped.txt").exists()


def test_rollback_goes_back_once_and_is_reported(config, packages):
    with pytest.raises(UpdateRefused, match="no previous model package"):
        rollback(config)
    install(config, make_package(packages, "1.1.0"))
    assert rollback(config) == ("clinibox-demo-lesion@1.1.0", "clinibox-demo-lesion@1.0.0")
    assert running(config) == store_for(config).package_root("1.0.0").resolve()
    assert store_for(config).read().trial is None
    last = events(config)[-1]
    assert (last["event"], last["reason"], last["subject_model"]) == (
        "model_rolled_back", "technician", "clinibox-demo-lesion@1.1.0")
    with pytest.raises(UpdateRefused, match="no previous model package"):
        rollback(config)


def test_a_pinned_version_refuses_install(tmp_path, packages):
    config = from_dict({"storage": {"state_dir": str(tmp_path / "s")},
                        "models": {"version": "1.0.0"}})
    with pytest.raises(UpdateRefused, match=r"pins 1\.0\.0"):
        install(config, make_package(packages, "1.1.0"))


@pytest.mark.slow
def test_cli_install_status_rollback(config, packages, tmp_path, capsys):
    path = tmp_path / "box.toml"
    path.write_text(f'[storage]\nstate_dir = "{config.state_dir}"\n'
                    '[runtime]\nbackend = "onnxruntime"\nprecision = "fp32"\n')
    args = ["--config", str(path)]
    assert main(["model", "install", str(make_package(packages, "1.1.0")), *args]) == 0
    out = capsys.readouterr().out
    assert "installed clinibox-demo-lesion@1.1.0" in out and "8/8 golden cases" in out
    assert main(["model", "install", str(make_package(packages, "0.5.0")), *args]) == 1
    err = capsys.readouterr().err
    assert "REFUSED (older_version)" in err and "keeps running clinibox-demo-lesion@1.1.0" in err
    assert main(["model", "status", "--json", *args]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["running"], status["previous"], status["floor"]) == (
        "clinibox-demo-lesion@1.1.0", "1.0.0", "1.1.0")
    assert [h["action"] for h in status["history"]] == ["install"]
    assert main(["model", "rollback", *args]) == 0
    assert "to clinibox-demo-lesion@1.0.0" in capsys.readouterr().out
    assert main(["model", "verify", *args]) == 0
    assert "OK clinibox-demo-lesion@1.0.0" in capsys.readouterr().out


def test_the_onfailure_hook_queues_a_device_event(config, tmp_path, capsys):
    path = tmp_path / "box.toml"
    path.write_text(f'[storage]\nstate_dir = "{config.state_dir}"\n')
    assert main(["service-failed", "clinibox-web.service", "--config", str(path)]) == 0
    assert main(["service-failed", "clinibox-usb-import@sdb1.service", "--config", str(path)]) == 0
    assert main(["service-failed", "sshd.service", "--config", str(path)]) == 0
    assert "the hospital will be told" in capsys.readouterr().out
    assert [(e["event"], e["reason"], e["unit"], e["model"]) for e in events(config)] == [
        ("service_failed", "unit_failed", unit, "clinibox-demo-lesion@1.0.0")
        for unit in ("clinibox-web", "clinibox-usb-import", "other")]
    conn = sqlite3.connect(config.database_path)
    notes = [r[0] for r in conn.execute("SELECT message FROM events WHERE component='lifecycle'")]
    conn.close()
    assert notes[0] == "systemd unit clinibox-web.service failed"


def test_installs_refusals_and_rollbacks_are_in_the_audit_trail(config, packages):
    from firmware_app.storage import db
    from firmware_app.storage.audit import console_actor
    from firmware_app.storage.audit_chain import verify
    from firmware_app.storage.audit_query import AuditQuery, read_rows

    install(config, make_package(packages, "1.1.0"))
    with pytest.raises(PackageError):
        install(config, make_package(packages, "1.0.5"))
    rollback(config)
    conn = db.open_database(config.database_path)
    try:
        rows = read_rows(conn, AuditQuery(), newest_first=False)
        assert verify(conn).intact
    finally:
        conn.close()
    assert [(r.action, r.account, r.address, r.target) for r in rows] == [
        ("model_installed", console_actor(), "local", "model:clinibox-demo-lesion@1.1.0"),
        ("model_refused", console_actor(), "local", "package:1.0.5"),
        ("model_rolled_back", console_actor(), "local", "model:clinibox-demo-lesion@1.0.0")]
    assert rows[0].detail.startswith("was clinibox-demo-lesion@1.0.0; 8/8 golden cases")
    assert rows[1].detail.startswith("older_version: ")
    assert rows[2].detail == "from clinibox-demo-lesion@1.1.0 (technician)"


@pytest.mark.slow
def test_the_first_package_of_a_name_installs_where_nothing_of_it_ran(tmp_path, packages):
    """Regression: an installed box whose [models] name is set to its hospital's package
    (nothing of that name under [models] dir, nothing installed) refused the first install
    with "no model package … under …"."""
    config = from_dict({"storage": {"state_dir": str(tmp_path / "state")},
                        "models": {"name": "clinibox-lesion"},
                        "runtime": {"backend": "onnxruntime", "precision": "fp32"}})
    with pytest.raises(PackageError):
        resolve_package_root(config)  # the box runs no model of this name yet
    source = make_package(packages, "1.1.0", name="clinibox-lesion")
    archive = tmp_path / "clinibox-lesion-1.1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="clinibox-lesion-1.1.0")
    result = install(config, archive)
    state = store_for(config).read()
    assert (state.active, state.previous, state.floor) == ("1.1.0", "", "1.1.0")
    assert result.package.model_id == "clinibox-lesion@1.1.0" and result.previous == ""
    assert running(config) == store_for(config).package_root("1.1.0").resolve()
    assert [e["event"] for e in events(config)] == ["model_installed"]
    with pytest.raises(UpdateRefused):
        rollback(config)  # nothing to go back to
