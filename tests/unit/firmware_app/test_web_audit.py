"""The audit trail on a box the real worker filled: what the viewer records (who, when, from
which address, what), ``clinibox audit`` and the technician's ``/audit`` page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clinibox.table import main
from firmware_app.storage import db
from firmware_app.storage.audit import console_actor
from firmware_app.storage.audit_query import AuditQuery, AuditRow, read_rows
from firmware_app.storage.audit_schema import TRIGGERS
from tests.viewer_state import CLINICIAN, TECHNICIAN
from tests.web_client import ViewerClient

CLINIC_PC = {"REMOTE_ADDR": "10.0.0.7"}
ELSEWHERE = {"REMOTE_ADDR": "10.0.0.66"}


def _rows(state, action: str | None = None) -> list[AuditRow]:
    conn = db.connect(state.config.database_path)
    try:
        return read_rows(conn, AuditQuery(action=action), newest_first=False)
    finally:
        conn.close()


def _client(viewer, account: tuple[str, str] | None = None) -> ViewerClient:
    _state, app = viewer
    client = ViewerClient(app)
    if account is not None:
        assert client.login(*account).status_code == 302
    return client


def _config_file(state, folder: Path) -> Path:
    path = folder / "box.toml"
    path.write_text(f'[storage]\nstate_dir = "{state.config.state_dir}"\n')
    return path


def _cli_json(capsys, *argv: str) -> tuple[int, list[dict]]:
    capsys.readouterr()
    status = main(["audit", "--json", *argv])
    return status, json.loads(capsys.readouterr().out)


def test_logins_failures_and_logouts_are_recorded_with_the_address(viewer):
    state, _app = viewer
    client = _client(viewer)
    name, password = CLINICIAN
    assert client.post("/login", {"name": name, "password": "not-the-password"},
                       environ_base=ELSEWHERE).status_code == 401
    assert client.post("/login", {"name": "Mallory", "password": "hunter2-hunter2"},
                       environ_base=ELSEWHERE).status_code == 401
    assert client.post("/login", {"name": name, "password": password},
                       environ_base=CLINIC_PC).status_code == 302
    assert client.post("/logout", environ_base=CLINIC_PC).status_code == 302

    failed = _rows(state, "login_failed")
    assert [(r.account, r.address, r.target, r.detail) for r in failed] == [
        (name, "10.0.0.66", f"account:{name}", "wrong password"),
        ("", "10.0.0.66", "", "unknown account name")]
    [login] = _rows(state, "login")
    assert (login.account, login.address, login.target, login.detail) == (
        name, "10.0.0.7", f"account:{name}", "clinician")
    [logout] = _rows(state, "logout")
    assert (logout.account, logout.address) == (name, "10.0.0.7")
    assert logout.id > login.id > failed[-1].id
    every = json.dumps([r.to_dict() for r in _rows(state)])
    for secret in ("not-the-password", "hunter2", password, "mallory"):
        assert secret not in every.lower()  # no password, no unknown name typed


def test_tries_turned_away_by_the_throttle_are_one_row_a_minute(viewer):
    state, _app = viewer
    client = _client(viewer)
    codes = [client.post("/login", {"name": CLINICIAN[0], "password": f"guess-{n}"},
                         environ_base=ELSEWHERE).status_code for n in range(8)]
    assert codes == [401] * 5 + [429] * 3
    assert len(_rows(state, "login_failed")) == 5  # every password checked
    [throttled] = _rows(state, "login_throttled")
    assert (throttled.account, throttled.address) == ("", "10.0.0.66")
    assert throttled.detail.startswith("wait ")


def test_a_clinicians_study_views_of_the_day_show_in_clinibox_audit_json(viewer, tmp_path,
                                                                         capsys):
    """The issue's "done when": every study view of that day, with the account."""
    state, _app = viewer
    client = _client(viewer, CLINICIAN)
    seen = [state.studies["alert"], state.studies["sweep"], state.studies["clear"]]
    for study in seen:
        assert client.get(f"/study/{study}").status_code == 200
    assert client.get(f"/study/{seen[0]}").status_code == 200  # a reload: folded into one row
    instance = state.instances["alert"]
    assert client.get(f"/instance/{instance}/frame/0.png").status_code == 200
    assert client.get(f"/instance/{instance}/heatmap.png").status_code == 200

    config = _config_file(state, tmp_path)
    status, rows = _cli_json(capsys, "--since", "today", "--config", str(config))
    assert status == 0
    views = [r for r in rows if r["action"] == "study_view"]
    assert [(r["account"], r["address"], r["target"]) for r in views] == [
        (CLINICIAN[0], "127.0.0.1", f"study:{s}") for s in seen]
    assert all(r["at"][:10] == rows[-1]["at"][:10] for r in views)
    images = [r for r in rows if r["action"] == "image_view"]
    assert [(r["account"], r["target"]) for r in images] == [
        (CLINICIAN[0], f"instance:{instance}")]  # the heatmap joined the frame's row
    status, only = _cli_json(capsys, "--since", "today", "--account", CLINICIAN[0],
                             "--action", "study_view", "--config", str(config))
    assert status == 0 and only == views
    status, none = _cli_json(capsys, "--until", "yesterday", "--config", str(config))
    assert status == 0 and none == []
    read = _rows(state, "audit_viewed")
    assert read and read[-1].account == console_actor() and read[-1].address == "local"


def test_the_worklist_names_patients_so_reading_it_is_recorded_once_per_five_minutes(viewer):
    state, _app = viewer
    clinician = _client(viewer, CLINICIAN)
    for path in ("/?status=alert&page=2", "/worklist/rows", "/api/worklist", "/"):
        page = clinician.get(path, environ_base=CLINIC_PC)
        assert page.status_code == 200
    assert "CLEAR, PHANTOM" in page.get_data(as_text=True)  # what makes it worth recording
    technician = _client(viewer, TECHNICIAN)
    assert technician.get("/api/worklist", environ_base=ELSEWHERE).status_code == 200
    rows = _rows(state, "worklist_view")
    assert [(r.account, r.address, r.target, r.detail) for r in rows] == [
        (CLINICIAN[0], CLINIC_PC["REMOTE_ADDR"], "worklist", "status alert, page 2"),
        (TECHNICIAN[0], ELSEWHERE["REMOTE_ADDR"], "worklist", "status all, page 1")]


@pytest.mark.slow
def test_reports_feedback_exports_and_quarantine_actions_are_recorded(viewer):
    state, _app = viewer
    clinician = _client(viewer, CLINICIAN)
    study, instance = state.studies["alert"], state.instances["alert"]
    assert clinician.get(f"/study/{study}/report").status_code == 200
    pdf = clinician.get(f"/study/{study}/report.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert clinician.post(f"/instance/{instance}/feedback",
                          {"finding": 0, "verdict": "disagree"}).status_code == 302
    assert clinician.post(f"/study/{study}/export").status_code == 200
    technician = _client(viewer, TECHNICIAN)
    held = state.instances["truncated"]
    assert technician.post(f"/device/quarantine/{held}/process").status_code == 302
    conn = db.connect(state.config.database_path)
    conn.execute("UPDATE instances SET status = 'quarantined', reason = 'again' WHERE id = ?",
                 (held,))
    conn.close()
    assert technician.post(f"/device/quarantine/{held}/delete").status_code == 302

    def one(action: str) -> AuditRow:
        [row] = _rows(state, action)
        return row

    assert (one("report_view").account, one("report_view").target) == (
        CLINICIAN[0], f"study:{study}")
    assert (one("report_download").target, one("report_download").address) == (
        f"study:{study}", "127.0.0.1")
    feedback = one("feedback")
    assert (feedback.account, feedback.target, feedback.detail) == (
        CLINICIAN[0], f"instance:{instance}", "finding 0: disagree")
    export = one("export")
    assert (export.account, export.address, export.target) == (
        CLINICIAN[0], "127.0.0.1", f"study:{study}")
    assert "viewer download" in export.detail
    requeued = one("quarantine_requeued")
    assert (requeued.account, requeued.target) == (TECHNICIAN[0], f"object:{held}")
    assert "truncated" in requeued.detail
    deleted = one("quarantine_deleted")
    assert (deleted.account, deleted.address, deleted.target, deleted.detail) == (
        TECHNICIAN[0], "127.0.0.1", f"object:{held}", "quarantined: again")


def test_the_audit_page_is_for_technicians_and_shows_the_chain_check(viewer):
    state, _app = viewer
    clinician = _client(viewer, CLINICIAN)
    clinician.get(f"/study/{state.studies['alert']}")
    assert clinician.get("/audit").status_code == 403
    anonymous = _client(viewer)
    answer = anonymous.get("/audit")
    assert answer.status_code == 302 and "/login" in answer.location

    technician = _client(viewer, TECHNICIAN)
    answer = technician.get("/audit")
    assert answer.status_code == 200
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    page = answer.get_data(as_text=True)
    assert 'id="chain" class="chain ok">Chain check: intact' in page
    assert 'class="action">study view<' in page and f"study:{state.studies['alert']}" in page
    assert "<script>" not in page.split("</head>", 1)[1]  # no inline script
    assert 'href="/audit"' in page  # in the technician's navigation
    only = technician.get("/audit?action=login&account=carl").get_data(as_text=True)
    assert "login" in only and f"study:{state.studies['alert']}" not in only
    assert technician.get("/audit?action=coffee").status_code == 400
    assert technician.get("/audit?since=someday").status_code == 400
    viewed = _rows(state, "audit_viewed")
    assert [r.account for r in viewed] == [TECHNICIAN[0]]  # folded: once per 5 minutes

    conn = db.connect(state.config.database_path)  # someone edits a row behind the box's back
    for name in TRIGGERS:
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("UPDATE audit SET address = '10.9.9.9' WHERE action = 'study_view'")
    broken = conn.execute("SELECT id FROM audit WHERE action = 'study_view'").fetchone()[0]
    conn.close()
    page = technician.get("/audit").get_data(as_text=True)
    assert f'class="chain bad">Chain check: broken at row {broken}: ' in page
    assert "edited" in page


def test_clinibox_audit_fails_when_the_chain_is_broken(viewer, tmp_path, capsys):
    state, _app = viewer
    config = str(_config_file(state, tmp_path))
    assert main(["audit", "--verify", "--config", config]) == 0
    assert "audit chain: intact" in capsys.readouterr().out
    conn = db.connect(state.config.database_path)
    for name in TRIGGERS:
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DELETE FROM audit WHERE id = 1")
    conn.close()
    assert main(["audit", "--verify", "--json", "--config", config]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["intact"] is False and result["broken_at"] == 2
    assert main(["audit", "--config", config]) == 1
    captured = capsys.readouterr()
    assert "broken at row 2: row 1 is missing" in captured.err
    assert main(["audit", "--since", "someday", "--config", config]) == 2


@pytest.mark.parametrize("action", ["add", "passwd", "remove"])
def test_account_changes_on_the_console_are_recorded(tmp_path, capsys, monkeypatch, action):
    import io
    import sys

    path = tmp_path / "box.toml"
    path.write_text(f'[storage]\nstate_dir = "{(tmp_path / "state").as_posix()}"\n')
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long enough secret\n"))
    assert main(["user", "add", "dora", "--role", "clinician", "--password-stdin",
                 "--config", str(path)]) == 0
    if action != "add":
        monkeypatch.setattr(sys, "stdin", io.StringIO("another long secret\n"))
        argv = ["user", action, "dora", "--config", str(path)]
        assert main([*argv, "--password-stdin"] if action == "passwd" else argv) == 0
    capsys.readouterr()
    assert main(["audit", "--json", "--config", str(path)]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["action"] != "audit_viewed"]
    expected = {"add": ["account_created"],
                "passwd": ["account_created", "password_changed"],
                "remove": ["account_created", "account_removed"]}[action]
    assert [r["action"] for r in rows] == expected
    assert all((r["account"], r["address"], r["target"]) == (console_actor(), "local",
                                                             "account:dora") for r in rows)
    assert rows[0]["detail"] == "role clinician"
    assert "secret" not in json.dumps(rows)
