"""The bedside live page in a real headless Chromium at 1024×768 (a tablet), in Chinese.

A thread plays the source's live process: a FrameWriter publishes a synthetic picture a few
times a second with one lesion box (its size in mm, the hint to hold the probe). The nurse
logs in, opens Live, sees the frames drawn on the canvas with the hint, starts a session,
freezes, steps back, measures between two taps, and resumes. Screenshots go to
``test-artifacts/viewer/live-zh-*.png``.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from clinibox_common.contracts.statuses import LiveKept
from clinibox_common.i18n import use_locale
from firmware_app.settings.box import Config
from firmware_app.settings.live import LiveSource
from firmware_app.settings.storage import StorageConfig
from firmware_app.storage import audit, db, live_sessions
from firmware_app.storage.accounts import Accounts
from firmware_app.storage.live_frames import FrameWriter, live_root
from firmware_app.words import labels
from tests.browser import ARTIFACTS, headless_chromium, serving
from web.app import create_app

pytestmark = pytest.mark.integration

NURSE = ("nora", "scans-the-patients-1")
WIDTH, HEIGHT = 960, 720
LIVE_ACTIONS = ("live_view", "live_session_started", "live_session_ended",
                "live_keep_requested")


def test_the_live_actions_are_in_the_audit_vocabulary_with_their_words():
    for action in LIVE_ACTIONS:
        assert action in audit.ACTIONS and labels.ACTION_NAMES[action]


def _pictures(count: int) -> list[bytes]:
    """Ultrasound-like JPEGs: speckle in a fan, a dark round lesion drifting slowly."""
    rng = np.random.default_rng(4)
    out = []
    for n in range(count):
        speckle = (rng.gamma(2.0, 40.0, (HEIGHT, WIDTH))).clip(0, 255).astype(np.uint8)
        picture = Image.fromarray(speckle).filter(ImageFilter.GaussianBlur(1.2)).convert("RGB")
        mask = Image.new("L", (WIDTH, HEIGHT), 0)
        ImageDraw.Draw(mask).pieslice((-240, -560, WIDTH + 240, HEIGHT + 40), 55, 125, fill=255)
        picture = Image.composite(picture, Image.new("RGB", picture.size), mask)
        ImageDraw.Draw(picture).ellipse((420 + n, 330, 520 + n, 410), fill=(25, 25, 25))
        data = io.BytesIO()
        picture.save(data, "JPEG", quality=80)
        out.append(data.getvalue())
    return out


class FakeLiveProcess:
    """Publishes frames of one source a few times a second until stopped."""

    def __init__(self, config: Config) -> None:
        self.writer = FrameWriter(live_root(config.state_dir), "us-1", config.live.ring_seconds)
        self.pictures = _pictures(6)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        """One frame every 0.2 s, seq counting up."""
        seq = 0
        while not self.stop.is_set():
            seq += 1
            n = seq % len(self.pictures)
            lesion = {"track": 1, "box": [415 + n, 325, 525 + n, 415], "score": 0.83,
                      "long_axis_mm": 11.0, "long_axis_px": 110.0, "held": 5}
            entry = {"arrived": time.monotonic(), "hint": "hold_here", "quality": [],
                     "lesions": [lesion]}
            state = {"source": "us-1", "label": "", "modality": "US", "state": "running",
                     "detail": {}, "width": WIDTH, "height": HEIGHT, "region": None,
                     "mm_per_pixel": 0.1, "fps": 15.0, "analysed": seq, "dropped": 0,
                     "hint": "hold_here", "session": None}
            self.writer.publish(seq, self.pictures[n], entry, state)
            self.stop.wait(0.2)


@pytest.fixture
def live_viewer(tmp_path, monkeypatch) -> Iterator[tuple[str, FakeLiveProcess, Config]]:
    """The viewer over HTTPS with one calibrated ultrasound source fed by FakeLiveProcess."""
    monkeypatch.setenv("CLINIBOX_RUNTIME_DIR", str(tmp_path / "run"))
    config = Config(storage=StorageConfig(state_dir=str(tmp_path / "state")))
    config.live.sources = [LiveSource(name="us-1", url="/dev/video0", label="B超 1号诊室",
                                      mm_per_pixel=0.1)]
    app = create_app(config)
    conn = db.connect(config.database_path)
    Accounts(conn).add(*NURSE, "clinician")
    conn.close()
    process = FakeLiveProcess(config)
    process.thread.start()
    try:
        with serving(app, tmp_path) as base:
            yield base, process, config
    finally:
        process.stop.set()
        process.thread.join(5)


def _shown(driver) -> int:
    text = driver.execute_script("return document.getElementById('live').dataset.shownSeq")
    return int(text) if text else -1


def _on_screen(driver, *ids: str) -> None:
    """Each control lies whole in the window (no scrolling to reach it on the tablet)."""
    for element_id in ids:
        inside = driver.execute_script(
            "const r = document.getElementById(arguments[0]).getBoundingClientRect();"
            "return r.width > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight"
            " && r.right <= innerWidth;", element_id)
        assert inside, element_id


TAP = """
const [x, y] = arguments;
const canvas = document.getElementById('live-canvas');
const r = canvas.getBoundingClientRect();
canvas.dispatchEvent(new PointerEvent('pointerdown', {pointerId: 3, pointerType: 'touch',
  isPrimary: true, clientX: r.left + x * r.width, clientY: r.top + y * r.height,
  bubbles: true, cancelable: true}));
"""


def test_a_nurse_watches_freezes_steps_and_measures_in_chinese(live_viewer):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, _process, config = live_viewer
    driver = headless_chromium("zh-CN", accept_languages="zh-CN,zh")
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(f"{base}/live")
        wait.until(lambda d: "/login" in d.current_url)
        driver.find_element(By.ID, "name").send_keys(NURSE[0])
        driver.find_element(By.ID, "password").send_keys(NURSE[1])
        driver.find_element(By.ID, "login").click()
        wait.until(lambda d: d.find_elements(By.ID, "live-source-us-1"))
        driver.find_element(By.ID, "live-source-us-1").click()
        wait.until(lambda d: _shown(d) > 0)
        first = _shown(driver)
        wait.until(lambda d: _shown(d) > first)  # new frames keep being drawn
        with use_locale("zh-CN"):
            hint = labels.live_hint("hold_here")
            running = labels.live_state("running")
        wait.until(lambda d: d.find_element(By.ID, "live-hint").text == hint)
        assert driver.find_element(By.ID, "live-state").text == running
        lit = driver.execute_script(
            "const c = document.getElementById('live-canvas');"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let red = 0, lit = 0; for (let i = 0; i < d.length; i += 4) {"
            " if (d[i] > 200 && d[i + 1] < 90 && d[i + 2] < 90) red++; if (d[i] > 20) lit++; }"
            "return [red, lit];")
        assert lit[0] > 50 and lit[1] > 1000  # the picture and the red box are drawn
        _on_screen(driver, "live-freeze", "live-back", "live-forward", "live-measure",
                   "live-clear", "start-session")
        driver.save_screenshot(str(ARTIFACTS / "live-zh-1-running.png"))

        driver.find_element(By.ID, "patient-name").send_keys("王^芳")
        driver.find_element(By.ID, "patient-id").send_keys("P-0042")
        driver.find_element(By.ID, "start-session").click()
        wait.until(lambda d: d.find_elements(By.ID, "keep-frame"))
        conn = db.connect(config.database_path)
        session = live_sessions.open_session(conn, "us-1")
        conn.close()
        assert session is not None and session.patient_id == "P-0042"
        wait.until(lambda d: _shown(d) > 0)
        assert "王芳" in driver.find_element(By.ID, "live-patient").text
        _on_screen(driver, "live-freeze", "live-clear", "keep-frame", "keep-clip", "end-session")
        driver.save_screenshot(str(ARTIFACTS / "live-zh-2-session.png"))

        wait.until(lambda d: len(d.execute_script(
            "return fetch(document.getElementById('live').dataset.stateUrl)"
            ".then(r => r.json()).then(s => s.seqs)")) >= 4)
        driver.find_element(By.ID, "live-freeze").click()
        wait.until(lambda d: d.find_element(By.ID, "live-frozen").is_displayed())
        frozen = _shown(driver)
        driver.find_element(By.ID, "live-back").click()
        wait.until(lambda d: _shown(d) < frozen)
        back = _shown(driver)
        driver.find_element(By.ID, "live-back").click()
        wait.until(lambda d: _shown(d) < back)
        driver.find_element(By.ID, "live-forward").click()
        wait.until(lambda d: _shown(d) == back)
        driver.find_element(By.ID, "live-measure").click()
        driver.execute_script(TAP, 0.30, 0.30)
        driver.execute_script(TAP, 0.60, 0.70)
        result = wait.until(lambda d: d.find_element(By.ID, "live-measure-result").text)
        assert result.endswith(" mm")
        expected = np.hypot(0.30 * WIDTH, 0.40 * HEIGHT) * 0.1
        assert float(result.split()[0]) == pytest.approx(expected, abs=1.0)
        assert _shown(driver) == back  # frozen: the picture stays
        driver.save_screenshot(str(ARTIFACTS / "live-zh-3-frozen.png"))

        driver.find_element(By.ID, "keep-frame").click()
        wait.until(lambda d: d.find_element(By.ID, "live-keep-said").text)
        conn = db.connect(config.database_path)
        assert [r.kind.value for r in live_sessions.open_requests(conn, session.id)] \
            == ["key_frame"]
        conn.close()
        driver.find_element(By.ID, "live-freeze").click()
        wait.until(lambda d: _shown(d) > frozen)  # live again
        assert driver.find_element(By.ID, "live-measure-result").text == ""
        # beside the rate, how late the picture is: arrival at the box to drawn here
        rate = wait.until(lambda d: "画面延迟" in d.find_element(By.ID, "live-rate").text
                          and d.find_element(By.ID, "live-rate").text)
        assert "每秒分析 15 帧" in rate and rate.endswith(" 毫秒"), rate
        assert 0 <= int(rate.split("画面延迟 ")[1].split(" ")[0].replace(",", "")) < 2000

        # the live process keeps the frame, the worker analyses it; the nurse ends the session
        conn = db.connect(config.database_path)
        kept = live_sessions.open_requests(conn, session.id)[0]
        live_sessions.finish_request(conn, kept.id, "key_frame")
        live_sessions.record_kept(conn, session.id, live_sessions.Kept(
            LiveKept.KEY_FRAME, 1, "2.25.77", 1, None, time.time()))
        with conn:
            conn.execute("INSERT INTO studies(study_key, modality, instances, max_probability,"
                         " findings, alert, warnings, received_at, updated_at, patient_name,"
                         " patient_id) VALUES (?, 'US', 1, 0.83, 1, 1, 0, ?, ?, '王^芳',"
                         " 'P-0042')", (session.study_uid, time.time(), time.time()))
        study_id = conn.execute("SELECT id FROM studies WHERE study_key = ?",
                                (session.study_uid,)).fetchone()[0]
        conn.close()
        driver.find_element(By.ID, "end-session").click()
        wait.until(lambda d: d.find_elements(By.ID, "live-last"))
        last = driver.find_element(By.ID, "live-last").text
        assert "检查已结束" in last and "王芳" in last and "P-0042" in last, last
        link = driver.find_element(By.ID, "live-last-link")
        assert link.text == "打开检查结果"
        assert link.get_attribute("href").endswith(f"/study/{study_id}")
        driver.save_screenshot(str(ARTIFACTS / "live-zh-4-ended.png"))
        _on_screen(driver, "live-last-link", "start-session")
        link.click()
        wait.until(lambda d: d.current_url.endswith(f"/study/{study_id}"))
    finally:
        driver.quit()
