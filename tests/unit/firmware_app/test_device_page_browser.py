"""The technician's device page in Chinese in a real headless Chromium at 1024×768: during a
rollout's download (its bar, bytes, percent, rate and time left) and after a rollback (the
update table says which version left and which runs). Screenshots go to
``test-artifacts/viewer/zh-device-*.png``; they are opened and read as a technician would.
The technician's header (the most links) holds one line at 1024 px in English and Chinese."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from firmware_app.storage import audit, db, download_progress, model_offers
from firmware_app.telemetry.messages import device_event, queue_device_event
from firmware_app.words import labels
from tests.browser import ARTIFACTS, headless_chromium, serving
from tests.i18n_text import english_sentences
from tests.viewer_state import TECHNICIAN

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _rollout_audit_actions(monkeypatch):
    for kind in ("rollout", "rollback"):
        action = f"model_{kind}_received"
        if action not in audit.ACTIONS:
            monkeypatch.setitem(audit.ACTIONS, action, labels.ACTION_NAMES[action])


@pytest.fixture
def served(viewer, tmp_path) -> Iterator[tuple[str, object, object]]:
    state, app = viewer
    with serving(app, tmp_path) as base:
        yield base, state, app


def _orders(state, running: str, rolled_back: bool) -> None:
    """Two rollouts of the package: the one the box runs, and a newer one being downloaded
    (or installed and then rolled back by a technician)."""
    name, version = running.split("@")
    newer = version.rsplit(".", 1)[0] + "." + str(int(version.rsplit(".", 1)[1]) + 1)
    conn = db.connect(state.config.database_path)
    try:
        with db.transaction(conn):
            model_offers.add(conn, seq=3, kind="rollout", step="kept", done=True,
                             payload={"rollout": 6, "name": name, "version": version})
            if rolled_back:
                model_offers.add(conn, seq=4, kind="rollout", step="rolled_back",
                                 reason="technician", done=True,
                                 payload={"rollout": 7, "name": name, "version": newer})
            else:
                model_offers.add(conn, seq=4, kind="rollout", step="downloading",
                                 payload={"rollout": 7, "name": name, "version": newer})
                download_progress.record(conn, 4, 2_300_000, 4_700_000, 16_400.0, time.time())
        if rolled_back:
            queue_device_event(conn, 100, device_event("model_rolled_back", "technician",
                                                       running, f"{name}@{newer}", rollout=7),
                               f"model rolled back from {name}@{newer} to {running}")
    finally:
        conn.close()


def _log_in(driver, base: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base}/login")
    driver.find_element(By.ID, "name").send_keys(TECHNICIAN[0])
    driver.find_element(By.ID, "password").send_keys(TECHNICIAN[1])
    driver.find_element(By.ID, "login").click()
    WebDriverWait(driver, 30).until(lambda d: "/login" not in d.current_url)


def _shoot(driver, base: str, name: str) -> str:
    """Open the device page, screenshot its model section; the section's readable text."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/device")
    section = driver.find_element(By.ID, "model")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", section)
    driver.save_screenshot(str(ARTIFACTS / f"zh-device-{name}.png"))
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(ARTIFACTS / f"zh-device-{name}-top.png"))
    driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    driver.save_screenshot(str(ARTIFACTS / f"zh-device-{name}-log.png"))
    return driver.execute_script(
        "const copy = arguments[0].cloneNode(true);"
        "copy.querySelectorAll('[translate=no], [lang=en], code').forEach(e => e.remove());"
        "return copy.innerText", section)


@pytest.mark.parametrize("rolled_back", [False, True], ids=["downloading", "rolled-back"])
def test_the_device_page_in_chinese_during_a_download_and_after_a_rollback(served,
                                                                          rolled_back):
    base, state, app = served
    running = app.config["CLINIBOX"].package_facts()["model_id"]
    _orders(state, running, rolled_back)
    driver = headless_chromium("zh-CN", accept_languages="zh-CN,zh")
    try:
        _log_in(driver, base)
        text = _shoot(driver, base, "rolled-back" if rolled_back else "downloading")
    finally:
        driver.quit()
    assert english_sentences(text) == [], english_sentences(text)
    assert "已安装，试用中" not in text
    if rolled_back:
        assert "已退回之前的模型（技术人员操作）" in text and "正在使用" in text
    else:
        assert "正在下载" in text and "已收到 2.3 MB，共 4.7 MB（48.9%）" in text
        assert "每秒 16.4 KB" in text and "约剩 2 分钟" in text


def test_the_device_page_in_chinese_while_the_box_waits_for_a_model(served):
    """The wait for a model, its refusal and the model's log lines are words, not the
    English refusal or a raw log line ("WARNING lifecycle model_unavailable (signature)")."""
    base, state, _app = served
    conn = db.connect(state.config.database_path)
    try:
        with db.transaction(conn):
            model_offers.set_waiting(conn, "signature", "clinibox-demo-lesion@1.0.0 is signed "
                                     "with the DEMO-ONLY key, which this box does not trust")
        queue_device_event(conn, 100, device_event("model_unavailable", "signature", "",
                                                   "clinibox-demo-lesion@1.0.0"),
                           "model_unavailable (signature): clinibox-demo-lesion@1.0.0; the "
                           "box waits for a model")
    finally:
        conn.close()
    driver = headless_chromium("zh-CN", accept_languages="zh-CN,zh")
    try:
        _log_in(driver, base)
        text = _shoot(driver, base, "waiting")
        page = driver.execute_script("return document.body.innerText")
    finally:
        driver.quit()
    assert "DEMO-ONLY" not in page and "model_unavailable" not in page and "WARNING" not in page
    assert "模型包的签名不是受信任的密钥签的" in text
    assert "模型不可用（模型包的签名不是受信任的密钥签的）" in page
    assert english_sentences(text) == [], english_sentences(text)


def test_the_device_page_in_chinese_says_the_boxs_events_and_a_pacs_failure(served):
    """The event log and a failing PACS destination read in Chinese words from their codes
    (an event from before codes: a plain note), never the English lines the log keeps."""
    from firmware_app.settings.pacs import PacsDestination
    from tests.box_events import EVENTS, record_events

    base, state, _app = served
    state.config.pacs.destinations = [PacsDestination(name="main", host="10.0.0.9")]
    conn = db.connect(state.config.database_path)
    try:
        record_events(conn)
    finally:
        conn.close()
    driver = headless_chromium("zh-CN", accept_languages="zh-CN,zh")
    try:
        _log_in(driver, base)
        _shoot(driver, base, "events")
        page = driver.execute_script("return document.body.innerText")
    finally:
        driver.quit()
    assert not [message for _c, message, _code in EVENTS if message[:20] in page]
    assert "PACS 拒绝了连接" in page and "与中心医院消息服务器的连接断开" in page
    assert "（仅有英文记录，请看英文页面或日志）" in page


def test_the_device_page_in_chinese_says_which_records_system_fails_and_why(served):
    """Two clinic records systems: one unreachable (reports wait), one that refused a report
    until it was held. The top of the page says both, the card says why in Chinese with the
    receiver's own words beside, the commands to run, and nothing else in English."""
    from selenium.webdriver.common.by import By

    from firmware_app.settings.records import RecordsReceiver
    from firmware_app.storage import records_outbox

    base, state, _app = served
    state.config.records.receivers = [
        RecordsReceiver(name="his", host="127.0.0.1", port=9),
        RecordsReceiver(name="emr", protocol="fhir", url="https://emr.clinic.lan/fhir")]
    conn = db.connect(state.config.database_path)
    try:
        with db.transaction(conn):
            records_outbox.add_report(conn, ["his"], "1.2.3", "result", 1, {})
            (held,) = records_outbox.add_report(conn, ["emr"], "1.2.4", "result", 1, {})
            records_outbox.mark_refused(conn, held, "emr answered 422: Patient identifier "
                                        "P1 unknown (report 2, study 1.2.4)", "422", 1, 1, 1)
            db.record_event(conn, "WARNING", "records his", "127.0.0.1:9: cannot connect",
                            "records_failed:unreachable")
            db.record_event(conn, "WARNING", "records emr", "held after 5 refusals: …",
                            "records_held:5:422")
        # an unreachable system is an outage (retried), not a set-up fault: no top line
        assert not event_codes_need_a_person("records_failed:unreachable")
        with db.transaction(conn):
            db.record_event(conn, "WARNING", "records his", "127.0.0.1:9: not an ACK",
                            "records_failed:not_ack")
    finally:
        conn.close()
    driver = headless_chromium("zh-CN", accept_languages="zh-CN,zh")
    try:
        _log_in(driver, base)
        driver.get(f"{base}/device")
        top = driver.find_element(By.ID, "records-held").text
        to_fix = driver.find_element(By.ID, "records-to-fix").text
        driver.save_screenshot(str(ARTIFACTS / "zh-device-records-top.png"))
        card = driver.find_element(By.ID, "records")
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", card)
        driver.save_screenshot(str(ARTIFACTS / "zh-device-records.png"))
        words = driver.execute_script(
            "const copy = arguments[0].cloneNode(true);"
            "copy.querySelectorAll('[translate=no], [lang=en], code').forEach(e => e.remove());"
            "return copy.innerText", card)
        said = card.text
    finally:
        driver.quit()
    assert top == "1 份报告被诊所信息系统拒收，已暂停发送"
    assert "his" in to_fix and "emr" not in to_fix
    assert "HL7 v2（MLLP） 127.0.0.1:9" in said and "FHIR https://emr.clinic.lan/fhir" in said
    assert "（对方返回代码 422）" in said and "Patient identifier P1 unknown" in said
    assert "不是对这份报告的 HL7 确认" in said
    assert "clinibox records retry --receiver emr" in said
    assert english_sentences(words) == [], english_sentences(words)


def event_codes_need_a_person(code: str) -> bool:
    from firmware_app.storage import event_codes

    return event_codes.records_need_a_person(code)


#: the header's items (brand, links, language switch, logout) and their boxes, in the page
HEADER_BOXES = """
const header = document.querySelector('header.top');
const items = Array.from(header.children).map(e => e.getBoundingClientRect());
const links = Array.from(header.querySelectorAll('nav a, .logout .who, .logout button'))
  .map(e => [e.getBoundingClientRect().height, parseFloat(getComputedStyle(e).lineHeight)
             || e.getBoundingClientRect().height]);
return {middles: items.map(r => Math.round((r.top + r.bottom) / 2)),
        height: header.getBoundingClientRect().height,
        overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
        links: links, rights: items.map(r => r.right), width: header.clientWidth};
"""


@pytest.mark.parametrize("lang, accept", [("en-US", "en"), ("zh-CN", "zh-CN,zh")],
                         ids=["en", "zh"])
def test_the_technicians_header_holds_one_line_at_1024_and_wraps_whole_items_at_800(
        served, lang, accept):
    """Six links (a live source configured), the language switch and the technician's name
    with "Log out" share one line on a 1024 px tablet (English is the longest); at 800 px
    items wrap whole, nothing runs off the side and no link breaks over two lines."""
    from firmware_app.settings.live import LiveSource

    base, state, _app = served
    state.config.live.sources = [LiveSource(name="us-1", url="/dev/video0", label="",
                                            mm_per_pixel=0.1)]
    driver = headless_chromium(lang, accept_languages=accept)
    try:
        _log_in(driver, base)
        measured = {}
        for width in (1024, 800):
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": 768, "deviceScaleFactor": 1, "mobile": False})
            driver.get(f"{base}/device")
            assert driver.find_elements("id", "nav-live")
            measured[width] = driver.execute_script(HEADER_BOXES)
            driver.save_screenshot(str(ARTIFACTS / f"{lang}-device-header-{width}.png"))
    finally:
        driver.quit()
    wide, narrow = measured[1024], measured[800]
    assert len(wide["middles"]) == 4 and max(wide["middles"]) - min(wide["middles"]) <= 1, wide
    for box in (wide, narrow):
        assert box["overflow"] <= 0, box
        assert max(box["rights"]) <= box["width"], box
        assert all(height < 1.6 * line for height, line in box["links"]), box
