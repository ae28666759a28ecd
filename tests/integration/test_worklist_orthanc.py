"""The patient from the clinic's worklist, against a real Modality Worklist: Orthanc with its
ModalityWorklists plugin serving ``.wl`` files (``tests/orthanc_server.py``).

The box's poller (``ingest/worklist.py``) asks it with pynetdicom's C-FIND and keeps today's
steps of its modalities in the box database; the live page lists them; a nurse's pick starts
a session whose kept key frame carries the order's AccessionNumber and the patient as the
worklist has them. With Orthanc gone the worklist is ``down``, the page says the patient is
typed, and the poller keeps running. An odd worklist (too many steps, missing fields, control
characters in names) is bounded and never breaks the page.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

from clinibox_common.contracts.statuses import LiveRequest
from clinibox_common.i18n import gettext, use_locale
from firmware_app.ingest.landing import Lander
from firmware_app.ingest.worklist import WorklistPoller, fetch
from firmware_app.live.keeper import Keeper
from firmware_app.ops.selftest import FAIL, PASS, check_worklist
from firmware_app.settings.box import Config, from_dict
from firmware_app.storage import db, live_sessions, worklist
from firmware_app.storage.accounts import Accounts
from firmware_app.storage.spool import make_spool
from firmware_app.storage.worklist import WorklistState
from firmware_app.words import worklist_words
from tests.orthanc_server import Orthanc, write_worklist_file
from tests.web_client import ViewerClient
from web import live_worklist
from web.app import create_app

pytestmark = pytest.mark.integration

NURSE = ("nora", "scans-the-patients-1")
ZH = "zh-CN,zh;q=0.9"


def _today() -> str:
    """Today as the worklist writes it, read when a test runs (a run may pass midnight)."""
    return dt.date.today().strftime("%Y%m%d")


def _yesterday() -> str:
    return (dt.date.today() - dt.timedelta(days=1)).strftime("%Y%m%d")


@pytest.fixture
def mwl(tmp_path) -> Iterator[tuple[Orthanc, Path]]:
    """Orthanc as the clinic's worklist (AE WORKLIST, UTF-8, knowing the box's AE title
    CLINIBOX only) serving the ``.wl`` files of ``tmp_path / "wl"``; killed after (its
    storage is of no interest, and SIGTERM takes seconds)."""
    folder = tmp_path / "wl"
    folder.mkdir()
    server = Orthanc(tmp_path / "orthanc", ae_title="WORKLIST", worklists=folder,
                     extra={"DefaultEncoding": "Utf8",
                            "DicomModalities": {"box": ["CLINIBOX", "127.0.0.1", 11112]}})
    server.start()
    try:
        yield server, folder
    finally:
        server.kill()


def _config(tmp_path, server: Orthanc, **worklist_keys) -> Config:
    config = from_dict({
        "storage": {"state_dir": str(tmp_path / "state")},
        "live": {"sources": [{"name": "us-1", "url": "/dev/video0", "label": "B超 1号诊室"}]},
        "worklist": {"enabled": True, "host": server.host, "port": server.dicom_port,
                     "timeout": 5, **worklist_keys}})
    db.private_state_dir(config.state_dir)
    with contextlib.closing(db.connect(config.database_path)) as conn:
        db.initialise(conn)
    return config


def _schedule(folder: Path) -> None:
    """Today's clinic: two ultrasounds and an endoscopy for this box, a CT, yesterday's
    ultrasound and one scheduled on another station."""
    write_worklist_file(folder, "wang", patient_name="Wang^Fang=王^芳", patient_id="P-0042",
                        accession="ACC-1001", time_of_day="0930", birth_date="19800304",
                        sex="F", description="甲状腺超声")
    write_worklist_file(folder, "li", patient_name="Li^Lei=李^雷", patient_id="P-0043",
                        accession="ACC-1002", time_of_day="0900", sex="M",
                        description="乳腺超声")
    write_worklist_file(folder, "zhao", patient_name="Zhao^Min", patient_id="P-0044",
                        accession="ACC-1003", modality="ES", time_of_day="1000")
    write_worklist_file(folder, "ct", patient_name="Chen^Gang", patient_id="P-0045",
                        accession="ACC-1004", modality="CT")
    write_worklist_file(folder, "old", patient_name="Liu^Yang", patient_id="P-0046",
                        accession="ACC-0999", day=_yesterday())
    write_worklist_file(folder, "room2", patient_name="Sun^Li", patient_id="P-0047",
                        accession="ACC-1005", station="US_ROOM2", time_of_day="1100")


def test_the_poller_keeps_todays_steps_of_the_boxs_modalities(tmp_path, mwl):
    server, folder = mwl
    _schedule(folder)
    config = _config(tmp_path, server)
    items = fetch(config)
    assert sorted(i.accession_number for i in items) == [
        "ACC-1001", "ACC-1002", "ACC-1003", "ACC-1005"]  # no CT, nothing of yesterday
    wang = next(i for i in items if i.patient_id == "P-0042")
    assert (wang.patient_name, wang.birth_date, wang.sex, wang.modality, wang.sps_id,
            wang.scheduled_date, wang.scheduled_time, wang.description) == (
        "Wang^Fang=王^芳", "19800304", "F", "US", "SPSACC-1001", _today(), "0930", "甲状腺超声")
    config.worklist.match_station = True  # only what is scheduled on this station
    assert sorted(i.accession_number for i in fetch(config)) == [
        "ACC-1001", "ACC-1002", "ACC-1003"]
    config.worklist.modalities = ["ES"]
    assert [i.patient_id for i in fetch(config)] == ["P-0044"]

    status = WorklistPoller(config).poll_once()
    assert (status.state, status.items) == (WorklistState.OK, 1)
    config.worklist.station_ae_title = "STRANGER"  # an AE title the worklist does not know
    status = WorklistPoller(config).poll_once()
    assert (status.state, status.reason) == (WorklistState.DOWN, "refused")
    # `clinibox selftest` asks it the same way and says why in the device page's words
    refused = check_worklist(config)
    assert (refused.status, refused.detail) == (
        FAIL, f"WORKLIST@{server.host}:{server.dicom_port}: "
              "not answering: it refused the box (the worklist must know the box's AE title)")
    config.worklist.station_ae_title = ""
    with use_locale("zh_CN"):
        answered = check_worklist(config)
        said = worklist_words.answering(1)
    assert (answered.status, answered.detail) == (
        PASS, f"WORKLIST@{server.host}:{server.dicom_port}: {said}")


def test_an_odd_worklist_is_bounded_and_never_breaks_the_page(tmp_path, mwl):
    server, folder = mwl
    for n in range(12):
        write_worklist_file(folder, f"p{n:02d}", patient_name=f"Crowd^{n}", patient_id=f"C-{n}",
                            accession=f"ACC-{n}")
    write_worklist_file(folder, "odd", patient_name="Odd\u202e^<b>Name</b>\x07" + "长" * 60,
                        patient_id="ODD-1", accession="ACC-ODD", birth_date="", sex="",
                        time_of_day="", description="")
    config = _config(tmp_path, server, max_items=5)
    assert WorklistPoller(config).poll_once().items == 5  # the rest are not kept
    config.worklist.max_items = 50
    assert WorklistPoller(config).poll_once().items == 13
    app = create_app(config)
    with contextlib.closing(db.connect(config.database_path)) as conn:
        Accounts(conn).add(*NURSE, "clinician")
        odd = next(i for i in worklist.offered(conn, _today()) if i.item.patient_id == "ODD-1")
    assert "\u202e" not in odd.item.patient_name and "\x07" not in odd.item.patient_name
    assert len(odd.item.patient_name) <= 64
    nurse = ViewerClient(app)
    assert nurse.login(*NURSE).status_code == 302
    page = nurse.get("/live/us-1")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and html.count('name="worklist_item"') == 13
    assert "<b>Name</b>" not in html and "&lt;b&gt;Name&lt;/b&gt;" in html  # escaped, as text


def _keep_one_frame(config: Config) -> pydicom.Dataset:
    """The live process's keeper keeps one key frame of the open session; its DICOM."""
    clock = [0.0]
    lander = Lander(make_spool(config), config.database_path, 2**30)
    keeper = Keeper(config.live.sources[0], config.live, config.database_path, lander,
                    station="box-1", now=lambda: clock[0])
    with contextlib.closing(db.connect(config.database_path)) as conn:
        session = live_sessions.open_session(conn, "us-1")
        assert session is not None
        live_sessions.ask(conn, session.id, LiveRequest.KEY_FRAME, "nurse")
    for seq in range(1, 4):
        clock[0] = seq * 0.1
        keeper.observe(np.full((48, 64), 90, np.uint8), [], [], seq)
    keeper.close()
    with contextlib.closing(db.connect(config.database_path)) as conn:
        path = conn.execute("SELECT spool_path FROM instances").fetchone()[0]
    return pydicom.dcmread(path)


def test_a_picked_patient_starts_the_session_and_the_worklist_down_leaves_typing(
        tmp_path, mwl, monkeypatch):
    monkeypatch.setenv("CLINIBOX_RUNTIME_DIR", str(tmp_path / "run"))
    server, folder = mwl
    _schedule(folder)
    config = _config(tmp_path, server, refresh_seconds=10)
    poller = WorklistPoller(config)
    assert poller.poll_once().state == WorklistState.OK
    app = create_app(config)
    with contextlib.closing(db.connect(config.database_path)) as conn:
        Accounts(conn).add(*NURSE, "clinician")
        picks = {i.item.patient_id: i.id for i in worklist.offered(conn, _today())}
    nurse = ViewerClient(app)
    nurse.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = ZH
    assert nurse.login(*NURSE).status_code == 302
    html = nurse.get("/live/us-1").get_data(as_text=True)
    with use_locale("zh-CN"):
        heading = gettext("Today's appointments")
        fallback = gettext(live_worklist.NOTICES[WorklistState.DOWN])
    assert heading in html and "ACC-1001" in html and "09:30" in html and "甲状腺超声" in html
    assert fallback not in html
    assert html.index("P-0043") < html.index("P-0042")  # by scheduled time: 09:00 first

    stale = nurse.post("/live/us-1/session", {"worklist_item": str(picks["P-0042"]),
                                             "worklist_patient": "P-0043"})
    assert stale.status_code == 409  # a pick naming another patient starts nothing
    started = nurse.post("/live/us-1/session", {"worklist_item": str(picks["P-0042"]),
                                               "worklist_patient": "P-0042"})
    assert started.status_code == 302
    with contextlib.closing(db.connect(config.database_path)) as conn:
        session = live_sessions.open_session(conn, "us-1")
    assert session is not None
    assert (session.patient_name, session.patient_id, session.birth_date, session.sex,
            session.accession_number, session.sps_id) == (
        "Wang^Fang=王^芳", "P-0042", "19800304", "F", "ACC-1001", "SPSACC-1001")
    assert "ACC-1001" in nurse.get("/live/us-1").get_data(as_text=True)

    kept = _keep_one_frame(config)
    assert (kept.AccessionNumber, kept.PatientID, str(kept.PatientName)) == (
        "ACC-1001", "P-0042", "Wang^Fang=王^芳")
    assert kept.PatientBirthDate == "19800304" and kept.PatientSex == "F"
    assert kept.RequestAttributesSequence[0].ScheduledProcedureStepID == "SPSACC-1001"

    with contextlib.closing(db.connect(config.database_path)) as conn:
        live_sessions.end(conn, session.id)
    stop = threading.Event()
    runner = threading.Thread(target=poller.run, args=(stop,), daemon=True)
    server.kill()  # the worklist goes away while the service runs
    runner.start()
    try:
        with contextlib.closing(db.connect(config.database_path)) as conn:
            for _ in range(100):
                if worklist.status(conn).state == WorklistState.DOWN:
                    break
                stop.wait(0.05)
            status = worklist.status(conn)
        assert (status.state, status.reason) == (WorklistState.DOWN, "unreachable")
        assert status.answered_at is not None  # when it last answered is kept
        assert runner.is_alive()  # the service keeps running
        html = nurse.get("/live/us-1").get_data(as_text=True)
        assert fallback in html and "ACC-1002" not in html and 'id="start-form"' in html
        assert "unreachable" not in html and "C-FIND" not in html  # no code on the page
    finally:
        stop.set()
        runner.join(5)


@pytest.mark.slow
def test_a_nurse_picks_todays_patient_in_chinese_in_chromium(tmp_path, mwl, monkeypatch):
    """The live page at 1024×768 in Chinese lists today's appointments; a tap on one starts
    the session (screenshots ``test-artifacts/viewer/worklist-zh-*.png``)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser import ARTIFACTS, headless_chromium, serving

    monkeypatch.setenv("CLINIBOX_RUNTIME_DIR", str(tmp_path / "run"))
    server, folder = mwl
    _schedule(folder)
    config = _config(tmp_path, server)
    assert WorklistPoller(config).poll_once().items == 4
    app = create_app(config)
    with contextlib.closing(db.connect(config.database_path)) as conn:
        Accounts(conn).add(*NURSE, "clinician")
    with serving(app, tmp_path) as base:
        driver = headless_chromium("zh-CN", accept_languages="zh-CN,zh")
        try:
            wait = WebDriverWait(driver, 30)
            driver.get(f"{base}/live/us-1")
            wait.until(lambda d: "/login" in d.current_url)
            driver.find_element(By.ID, "name").send_keys(NURSE[0])
            driver.find_element(By.ID, "password").send_keys(NURSE[1])
            driver.find_element(By.ID, "login").click()
            rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR,
                                                        "#live-worklist-rows li"))
            assert len(rows) == 4 and "今日预约患者" in driver.page_source
            first = rows[0]
            assert "P-0043" in first.text and "09:00" in first.text
            driver.save_screenshot(str(ARTIFACTS / "worklist-zh-1-appointments.png"))
            rows[1].find_element(By.CSS_SELECTOR, "button").click()  # Wang Fang, 09:30
            wait.until(lambda d: d.find_elements(By.ID, "live-accession"))
            assert driver.find_element(By.ID, "live-accession").text == "ACC-1001"
            assert "P-0042" in driver.find_element(By.ID, "live-patient").text
            driver.save_screenshot(str(ARTIFACTS / "worklist-zh-2-session.png"))
            server.kill()
            assert WorklistPoller(config).poll_once().state == WorklistState.DOWN
            driver.find_element(By.ID, "end-session").click()
            wait.until(lambda d: d.find_elements(By.ID, "live-worklist-notice"))
            assert "暂时无法获取今日预约名单" in driver.find_element(
                By.ID, "live-worklist-notice").text
            driver.save_screenshot(str(ARTIFACTS / "worklist-zh-3-down.png"))
        finally:
            driver.quit()


def test_the_service_runs_the_poller_beside_the_intake(tmp_path, mwl):
    """``Appliance.start_intake`` starts the worklist poller as a component thread (its
    first question at once); with ``[worklist]`` off it records ``off`` and starts none."""
    from firmware_app.service.appliance import Appliance

    server, folder = mwl
    _schedule(folder)
    config = _config(tmp_path, server)
    config.dicom.enabled = config.usb.enabled = False
    appliance = Appliance(config)
    appliance.start_intake()
    try:
        with contextlib.closing(db.connect(config.database_path)) as conn:
            for _ in range(100):
                if worklist.status(conn).state == WorklistState.OK:
                    break
                threading.Event().wait(0.05)
            assert worklist.status(conn).items == 4
        assert [t.name for t in appliance.threads] == ["worklist"] and appliance.healthy()
    finally:
        appliance.stop()
    config.worklist.enabled = False
    appliance = Appliance(config)
    appliance.start_intake()
    try:
        assert appliance.threads == []
        with contextlib.closing(db.connect(config.database_path)) as conn:
            assert worklist.status(conn).state == WorklistState.OFF
            assert worklist.offered(conn, _today()) == []
    finally:
        appliance.stop()
