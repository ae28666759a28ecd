"""The clinic's worklist on the live page (``web/live_worklist.py``), read from the box
database only: today's appointments to pick, in English and Chinese, or the sentence saying
the patient is typed. (Against a real worklist: tests/integration/test_worklist_orthanc.py.)"""

from __future__ import annotations

import datetime as dt

from clinibox_common.i18n import gettext, use_locale
from firmware_app.settings.box import Config
from firmware_app.settings.live import LiveSource
from firmware_app.settings.storage import StorageConfig
from firmware_app.storage import db, live_sessions, worklist
from firmware_app.storage.accounts import Accounts
from firmware_app.storage.worklist import WorklistItem, WorklistState
from tests.web_client import ViewerClient
from web import live_worklist
from web.app import create_app

NURSE = ("nora", "scans-the-patients-1")


def _today() -> str:
    """Today as the worklist writes it, read when a test runs (a run may pass midnight)."""
    return dt.date.today().strftime("%Y%m%d")


def _viewer(tmp_path, monkeypatch):
    """The box database and the viewer (one live source, a nurse's account)."""
    monkeypatch.setenv("CLINIBOX_RUNTIME_DIR", str(tmp_path / "run"))
    config = Config(storage=StorageConfig(state_dir=str(tmp_path / "state")))
    config.live.sources = [LiveSource(name="us-1", url="/dev/video0")]
    app = create_app(config)
    conn = db.connect(config.database_path)
    Accounts(conn).add(*NURSE, "clinician")
    return conn, app


def _nurse(app, chinese: bool = False) -> ViewerClient:
    client = ViewerClient(app)
    if chinese:
        client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN,zh;q=0.9"
    assert client.login(*NURSE).status_code == 302
    return client


def test_each_state_of_the_worklist_reads_plainly_in_english_and_chinese(tmp_path, monkeypatch):
    conn, app = _viewer(tmp_path, monkeypatch)
    nurse, chinese = _nurse(app), _nurse(app, chinese=True)
    html = nurse.get("/live/us-1").get_data(as_text=True)
    # no worklist set up: the form is the way, and the page says nothing of a worklist
    assert 'id="live-worklist"' not in html and 'id="start-form"' in html
    assert "预约" not in chinese.get("/live/us-1").get_data(as_text=True)
    worklist.set_state(conn, WorklistState.DOWN, "timeout")
    html = nurse.get("/live/us-1").get_data(as_text=True)
    assert "cannot be fetched just now: type the patient&#39;s details below." in html
    assert "timeout" not in html
    worklist.replace_items(conn, [WorklistItem(
        patient_name="Wang^Fang", patient_id="P-7", birth_date="19800304", sex="F",
        accession_number="ACC-7", sps_id="S-7", modality="US", scheduled_date=_today(),
        scheduled_time="143000", description="Thyroid")])
    html = nurse.get("/live/us-1").get_data(as_text=True)
    assert "Today's appointments" in html and "Wang, Fang" in html and "14:30" in html
    assert "ACC-7" in html and "Start with this patient" in html
    html = chinese.get("/live/us-1").get_data(as_text=True)
    assert "今日预约患者" in html and "选择此患者，开始检查" in html and "检查单号" in html
    for state, notice in live_worklist.NOTICES.items():
        with use_locale("zh-CN"):
            said = gettext(notice)
        assert said != notice and "请在下方手动输入患者信息" in said, state


def test_a_pick_of_a_replaced_list_starts_nothing(tmp_path, monkeypatch):
    conn, app = _viewer(tmp_path, monkeypatch)
    nurse = _nurse(app)
    worklist.replace_items(conn, [WorklistItem(patient_id="P-1", scheduled_date=_today())])
    old = worklist.offered(conn, _today())[0].id
    worklist.replace_items(conn, [WorklistItem(patient_id="P-2", scheduled_date=_today())])
    refused = nurse.post("/live/us-1/session", {"worklist_item": str(old),
                                               "worklist_patient": "P-1"})
    assert refused.status_code == 409 and "no longer on the list" in refused.get_data(
        as_text=True)
    assert nurse.post("/live/us-1/session", {"worklist_item": "1e3",
                                            "worklist_patient": ""}).status_code == 409
    assert live_sessions.open_session(conn, "us-1") is None


def test_the_device_page_tells_the_technician_where_the_worklist_stands(tmp_path, monkeypatch):
    conn, app = _viewer(tmp_path, monkeypatch)
    Accounts(conn).add("tina", "keeps-the-box-running", "technician")
    config = app.config["CLINIBOX"].config
    tech = ViewerClient(app)
    assert tech.login("tina", "keeps-the-box-running").status_code == 302
    html = tech.get("/device").get_data(as_text=True)
    assert 'id="worklist-off"' in html and "[worklist] enabled" in html
    config.worklist.enabled, config.worklist.host = True, "ris.local"
    html = tech.get("/device").get_data(as_text=True)
    assert "WORKLIST@ris.local:104" in html and "not asked yet" in html and "never" in html
    worklist.replace_items(conn, [WorklistItem(patient_id="P-1", scheduled_date=_today())])
    worklist.set_state(conn, WorklistState.DOWN, "refused")
    chinese = ViewerClient(app)
    chinese.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN,zh;q=0.9"
    assert chinese.login("tina", "keeps-the-box-running").status_code == 302
    html = chinese.get("/device").get_data(as_text=True)
    assert "没有答复：它拒绝了本机" in html and "refused" not in html
    worklist.replace_items(conn, [WorklistItem(patient_id="P-1", scheduled_date=_today())])
    html = tech.get("/device").get_data(as_text=True)
    assert "answering: 1 appointment today" in html
