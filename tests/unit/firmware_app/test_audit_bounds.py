"""A bounded audit trail in the viewer: a reloaded report adds one row, and the device page
raises the alarm past ``[audit] max_mb`` (no row is ever dropped)."""

from __future__ import annotations

import dataclasses

import pytest

from firmware_app.settings.audit import AuditConfig
from firmware_app.storage import db
from firmware_app.storage.audit_query import AuditQuery, count_rows
from tests.viewer_state import CLINICIAN, TECHNICIAN
from tests.web_client import ViewerClient

OTHER_PC = {"REMOTE_ADDR": "10.0.0.8"}


def _count(state, action: str) -> int:
    conn = db.connect(state.config.database_path)
    try:
        return count_rows(conn, AuditQuery(action=action))
    finally:
        conn.close()


@pytest.mark.slow
def test_reloading_a_report_50_times_writes_one_row(viewer):
    state, app = viewer
    clinician = ViewerClient(app)
    assert clinician.login(*CLINICIAN).status_code == 302
    study = state.studies["alert"]
    for _ in range(50):
        assert clinician.get(f"/study/{study}/report").status_code == 200
    assert _count(state, "report_view") == 1
    for _ in range(2):
        assert clinician.get(f"/study/{study}/report.pdf").status_code == 200
    assert _count(state, "report_download") == 1
    assert clinician.get(f"/study/{study}/report", environ_base=OTHER_PC).status_code == 200
    assert _count(state, "report_view") == 2  # another computer: its own row


def test_the_device_page_raises_the_audit_size_alarm(viewer):
    from web.app import create_app

    state, app = viewer
    technician = ViewerClient(app)
    assert technician.login(*TECHNICIAN).status_code == 302
    page = technician.get("/device").get_data(as_text=True)
    assert 'id="audit-size" class="ok"' in page and 'id="audit-alarm"' not in page
    rows = _count(state, "login")
    assert rows >= 1

    tiny = dataclasses.replace(state.config, audit=AuditConfig(max_mb=0.0001))
    technician = ViewerClient(create_app(tiny))
    assert technician.login(*TECHNICIAN).status_code == 302
    page = technician.get("/device").get_data(as_text=True)
    assert 'id="audit-size" class="bad"' in page and 'id="audit-alarm"' in page
    assert "more than [audit] max_mb (0.0001 MB)" in page
    assert "about 0.0 MB" not in page  # a small trail's size is not rounded away
    assert '<code translate="no">clinibox audit --json &gt; FILE</code>' in page
    assert '<code translate="no">clinibox retention</code>' in page
    figures = technician.get("/api/status").get_json()["audit"]
    assert figures["over_limit"] is True and figures["rows"] > rows
