"""Bedside live mode end to end, all real parts: a phantom ultrasound screen streamed by
Debian's ffmpeg (MPEG-TS over UDP, in real time) and the same video as a file, read by a real
``clinibox serve`` (one live process per source), shown to a nurse in Chromium at 1024x768 in
Chinese; her session's key frames and clip become a study with findings, an SR in Orthanc and
an alert at the hospital (Mosquitto with TLS, ``clinibox central serve``).

The demo model was trained on generated phantoms: not for clinical use.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from clinibox_common.contracts.statuses import LiveKept
from firmware_app.storage.live_frames import read_state
from tests.box_harness import clinibox, stop
from tests.browser import ARTIFACTS, headless_chromium
from tests.integration.conftest import REPO, Box, add_viewer_account, to_toml, wait_for
from tests.live_video import make_phantom_video, udp_mpegts_sender
from tests.mqtt_broker import Broker, make_mqtt_pki, receiver_settings
from tests.orthanc_server import Orthanc
from tests.ports import free_port

pytestmark = pytest.mark.integration

CLINIC, DEVICE = "clinic-live", "box-1"
NURSE = ("sonographer-zhao", "clinic-scans-2026")
PATIENT = ("LIVECANARY^PATIENT", "LIVE-CANARY-77")
REGION = {"region_x": 280, "region_y": 100, "region_width": 720, "region_height": 540,
          "mm_per_pixel": 0.2}
SHOTS = ARTIFACTS.parent / "live"
#: a lesion's box score the test waits for before keeping a clip: the phantom's lesions reach
#: 0.70 to 0.75 at their clearest, and a key frame kept at 0.64 stayed below the package's
#: alert threshold on a loaded machine (a kept frame at 0.72 alerted)
CLEAR_SCORE = 0.7
#: log lines a failed wait leaves out: the page's requests and the model's start-up
NOISE = ('"GET ', "runtime candidate", "inference.heads")


@dataclass
class Site:
    """The hospital (broker, receiver), the clinic's PACS (Orthanc) and the box."""

    root: Path
    hospital_db: Path
    pacs: Orthanc
    box: Box

    def hospital(self, sql: str) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(self.hospital_db, timeout=30)) as conn:
            return conn.execute(sql).fetchall()

    def live(self, source: str) -> dict:
        return read_state(self.box.state / "live", source) or {}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("live-e2e")
    video = make_phantom_video(root / "phantom.mp4", seconds=20.0, seed=11).path
    pki = make_mqtt_pki(root / "pki", [(CLINIC, DEVICE)])
    broker = Broker(root / "broker", pki).start()
    clinibox("keys", "generate", "--kind", "hospital", "--out", str(root / "hospital"))
    database = root / "central.db"
    config = root / "central.toml"
    config.write_text(to_toml(receiver_settings(broker, pki, database, root / "hospital.pem",
                                                "central-live-e2e")))
    receiver = subprocess.Popen(
        [sys.executable, "-m", "clinibox", "central", "serve", "--config", str(config)],
        stdout=open(root / "receiver.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        cwd=REPO)
    pacs = Orthanc(root / "orthanc").start()
    port = free_port()
    identity = pki.device(CLINIC, DEVICE)
    (root / "box").mkdir()
    with udp_mpegts_sender(video, port) as stream:
        box = Box(root / "box", {
            "web": {"enabled": True},
            "studies": {"stable_seconds": 3.0},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "ca_file": str(pki.ca_cert),
                     "cert_file": str(identity.cert), "key_file": str(identity.key)},
            "telemetry": {"clinic": CLINIC, "device": DEVICE,
                          "hospital_key": str(root / "hospital.pub"), "summary_seconds": 3.0,
                          "heartbeat_seconds": 2.0, "retry_min_seconds": 0.2,
                          "retry_max_seconds": 1.0},
            "pacs": {"retry_min_seconds": 0.2, "retry_max_seconds": 1.0,
                     "destinations": [{"name": "pacs", "ae_title": pacs.ae_title,
                                       "host": pacs.host, "port": pacs.dicom_port,
                                       "send": ["sr", "seg", "key_image"]}]},
            "live": {"hold_frames": 3, "sources": [
                {"name": "us-1", "url": stream, "label": "B 超 1 号", **REGION},
                {"name": "demo", "url": str(video), "label": "demo file", "loop": True,
                 **REGION}]},
        })
        public = root / "box" / "device.pub"
        box.cli("identity", "--out", str(public))
        clinibox("central", "enrol", "--config", str(config), "--clinic", CLINIC, "--device",
                 DEVICE, "--key", str(public))
        add_viewer_account(box, NURSE[0], NURSE[1], "clinician")
        box.start()
        place = Site(root, database, pacs, box)
        try:
            yield place
        finally:
            box.stop()
            stop(receiver)
            pacs.stop()
            broker.stop()


def test_both_sources_are_analysed_live_and_nothing_is_kept_without_a_session(site: Site):
    for source in ("us-1", "demo"):
        wait_for(lambda s=source: site.live(s).get("analysed", 0) > 30
                 and site.live(s).get("state") == "running", 180, f"{source} analysed live")
        state = site.live(source)
        assert state["model"].startswith("clinibox-demo-lesion")
        assert (state["width"], state["height"]) == (1280, 720)
    wait_for(lambda: any(f["lesions"] for f in site.live("us-1")["frames"]), 60,
             "a lesion held on the stream")
    assert site.box.db_rows("SELECT COUNT(*) FROM instances")[0][0] == 0


def _what_the_box_says(site: Site) -> str:
    """The box's status, its studies, DICOM outbox and events, and its log's last lines
    (without the page's requests): what a failed wait needs to be understood."""
    status = site.box.cli("status", check=False)
    tables = {sql: [tuple(r) for r in site.box.db_rows(sql)] for sql in (
        "SELECT id, study_key, alert, findings FROM studies",
        "SELECT id, kind, state, attempts, last_error FROM dicom_outbox",
        "SELECT component, level, message FROM events ORDER BY id DESC LIMIT 20")}
    lines = [line for line in site.box.log.read_text(errors="replace").splitlines()
             if not any(noise in line for noise in NOISE)][-60:]
    return "\n".join([status.stdout, status.stderr, repr(tables), *lines])


def _login(driver, base: str) -> None:
    driver.get(f"{base}/login")
    driver.find_element(By.ID, "name").send_keys(NURSE[0])
    driver.find_element(By.ID, "password").send_keys(NURSE[1])
    driver.find_element(By.ID, "login").click()
    # the form's answer before the next page: a GET racing ahead of it lands on the login page
    wait_for(lambda: "/login" not in driver.current_url, 30, "the login to go through")


def _shown_seq(driver) -> int:
    return int(driver.find_element(By.ID, "live").get_attribute("data-seq") or 0)


def _held_clearly(state: dict, after_seq: int) -> bool:
    """Whether a frame analysed after ``after_seq`` holds a lesion at ``CLEAR_SCORE`` or
    more."""
    return any(lesion.get("held") and lesion["score"] >= CLEAR_SCORE
               for frame in state.get("frames", []) if frame["seq"] > after_seq
               for lesion in frame["lesions"])


def test_a_session_on_the_tablet_becomes_a_study_an_sr_and_an_alert(site: Site):
    SHOTS.mkdir(parents=True, exist_ok=True)
    base = f"https://127.0.0.1:{site.box.web_port}"
    wait_for(lambda: site.live("us-1").get("analysed", 0) > 30, 180, "the stream analysed")
    with contextlib.closing(headless_chromium("zh-CN", accept_languages="zh-CN,zh")) as driver:
        _login(driver, base)
        driver.get(f"{base}/live/us-1")
        wait_for(lambda: _shown_seq(driver) > 0, 60, "the page to draw frames")
        first = _shown_seq(driver)
        wait_for(lambda: _shown_seq(driver) > first + 10, 60, "the page to keep drawing")
        driver.find_element(By.ID, "patient-name").send_keys(PATIENT[0])
        driver.find_element(By.ID, "patient-id").send_keys(PATIENT[1])
        driver.find_element(By.ID, "start-session").click()
        wait_for(lambda: driver.find_elements(By.ID, "keep-clip"), 30, "the session to open")
        shown: list[str] = []  # the hint's class and words read together: the next frame
        #                        may take the hint away between two separate reads

        def hint_to_hold() -> bool:
            shown[:] = driver.execute_script(
                "const h = document.getElementById('live-hint');"
                " return [h.className, h.textContent];")
            return "hold_here" in shown[0]

        wait_for(hint_to_hold, 90, "the hint to hold the probe")
        driver.save_screenshot(str(SHOTS / "live_e2e_zh.png"))
        assert "探头" in shown[1]  # 保持探头 …
        # she keeps the clip once the lesion is seen clearly in this session, as a
        # sonographer would: on a loaded machine fewer frames are analysed, and a lesion
        # passing in two seconds may be kept from its faintest frames only, below the alert
        opened = site.live("us-1").get("last_seq", 0)
        wait_for(lambda: _held_clearly(site.live("us-1"), opened), 120,
                 f"a lesion held at a score of {CLEAR_SCORE} or more in the session")
        driver.find_element(By.ID, "keep-clip").click()
        session = site.box.db_rows("SELECT id, study_uid FROM live_sessions")[0]

        def kept() -> set[str]:
            return {r[0] for r in site.box.db_rows(
                "SELECT kind FROM live_kept WHERE session = ?", (session[0],))}

        wait_for(lambda: kept() >= {LiveKept.CLIP.value, LiveKept.KEY_FRAME.value}, 120,
                 "a clip and a lesion's key frame kept")
        driver.get(f"{base}/live/us-1")
        driver.find_element(By.ID, "end-session").click()
        wait_for(lambda: driver.find_elements(By.ID, "start-session"), 30, "the session ended")
        study_uid = session[1]
        wait_for(lambda: [tuple(r) for r in site.box.db_rows(
            "SELECT alert FROM studies WHERE study_key = ?", (study_uid,))] == [(1,)], 180,
                 "the session's study analysed, with an alert")
        # the page says where the study went: the ended session, and a link to its study
        study_id = site.box.db_rows("SELECT id FROM studies WHERE study_key = ?",
                                    (study_uid,))[0][0]
        wait_for(lambda: driver.find_element(By.ID, "live-last-link").is_displayed(), 30,
                 "the link to the session's study")
        link = driver.find_element(By.ID, "live-last-link")
        assert link.get_attribute("href").endswith(f"/study/{study_id}")
        assert "检查已结束" in driver.find_element(By.ID, "live-last").text
        driver.save_screenshot(str(SHOTS / "live_e2e_zh_ended.png"))
        link.click()
        wait_for(lambda: driver.current_url.endswith(f"/study/{study_id}"), 30, "its study")
        driver.get(f"{base}/")  # and on the worklist it is the first row
        first_row = driver.find_elements(By.CSS_SELECTOR, "table.worklist tbody tr")[0]
        assert f"/study/{study_id}" in first_row.get_attribute("innerHTML")
        driver.save_screenshot(str(SHOTS / "live_e2e_zh_worklist.png"))
    rows = site.box.db_rows("SELECT patient_name, patient_id, findings, modality FROM studies "
                            "WHERE study_key = ?", (study_uid,))
    assert tuple(rows[0])[:2] == PATIENT and rows[0][2] >= 1 and rows[0][3] == "US"

    def sr_in_pacs() -> bool:
        found = site.pacs.post("/tools/find", {"Level": "Instance", "Expand": True,
                                               "Query": {"StudyInstanceUID": study_uid}})
        return any(item["MainDicomTags"].get("Modality") == "SR"
                   or item.get("Modality") == "SR" for item in found) or any(
            site.pacs.get(f"/instances/{item['ID']}/simplified-tags").get("Modality") == "SR"
            for item in found)

    wait_for(sr_in_pacs, 240, "the SR in Orthanc", lambda: _what_the_box_says(site))
    wait_for(lambda: site.hospital("SELECT COUNT(*) FROM alerts WHERE device = 'box-1'")[0][0]
             >= 1, 120, "the alert at the hospital", lambda: _what_the_box_says(site))
    everything = repr(site.hospital("SELECT * FROM alerts")) + repr(
        site.hospital("SELECT * FROM messages"))
    assert PATIENT[0].split("^")[0] not in everything and PATIENT[1] not in everything
