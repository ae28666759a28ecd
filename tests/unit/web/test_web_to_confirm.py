"""The clinic doctor's list of studies where the hospital's verdict contradicts the box: on the
worklist as a link, on its own page in Chinese, and gone once a doctor here has looked again
(demo model trained on phantoms)."""

from __future__ import annotations

import pytest

from firmware_app.storage import db, hospital_reviews
from tests.viewer_state import CLINICIAN
from tests.web_client import ViewerClient


@pytest.fixture
def disagreed(viewer):
    """The alert study (the box found a lesion) with the hospital's verdict "no action"."""
    state, app = viewer
    conn = db.open_database(state.config.database_path)
    key = conn.execute("SELECT study_key FROM studies WHERE id = ?",
                       (state.studies["alert"],)).fetchone()[0]
    with db.transaction(conn):
        hospital_reviews.add(conn, seq=1, study_key=key, study_ref="ref-1", alert_seq=1,
                             verdict="no_action", follow_up_months=None, note="",
                             reviewed_at=1_780_000_000.0)
    conn.close()
    client = ViewerClient(app)
    client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN,zh;q=0.9"
    assert client.login(*CLINICIAN).status_code == 302
    return state, client


def test_the_worklist_links_the_list_and_the_list_names_the_study(disagreed):
    state, client = disagreed
    worklist = client.get("/").get_data(as_text=True)
    assert 'id="to-confirm-note"' in worklist and "/to-confirm" in worklist
    assert "个检查医院的结论与设备不同" in worklist
    page = client.get("/to-confirm")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f'id="confirm-{state.studies["alert"]}"' in html
    for words in ("医院的结论与设备不同", "可疑区域（", "无需处理"):
        assert words in html


def test_a_doctors_review_takes_the_study_off_the_list(disagreed):
    state, client = disagreed
    instance = state.instances["alert"]
    answer = client.post(f"/instance/{instance}/feedback", {"finding": -1, "verdict": "agree"})
    assert answer.status_code in (200, 302, 303)
    html = client.get("/to-confirm").get_data(as_text=True)
    assert f'id="confirm-{state.studies["alert"]}"' not in html
    assert 'id="to-confirm-note"' not in client.get("/").get_data(as_text=True)
