"""The console's rollout page in Chinese at 1024×768 in headless Chromium while a box
downloads the package: its bar, bytes, percent, rate and minutes left, as the box reported
them. Screenshot: ``test-artifacts/console/zh-rollout-downloading.png`` (opened and read)."""

from __future__ import annotations

import time

import pytest

from clinibox_common.contracts.envelope import Header
from firmware_app.telemetry.messages import device_event
from tests.browser import ARTIFACTS, headless_chromium, serving
from tests.i18n_text import english_sentences
from tests.unit.central_console.test_console_rollouts import _rollout, _step, archives, console  # noqa: F401
from tests.unit.central_console.test_console_web import ADMIN

pytestmark = pytest.mark.slow
SHOTS = ARTIFACTS.parent / "console"


def test_the_rollout_page_shows_a_download_in_chinese(console, archives, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    rollout_id = _rollout(console, archives)
    _step(console, rollout_id, ("c1", "box-1"), "downloading")
    store = console.config["CONSOLE"].store
    now = time.time()
    for seq, (received, ago) in enumerate(((1_400_000, 90), (2_800_000, 30)), start=1):
        event = device_event("rollout", "hospital", "", "clinibox-demo-lesion@2.0.0",
                             rollout=rollout_id, step="downloading",
                             progress=(received, 4_700_000))
        event["created_at"] = int(now - ago)
        assert store.store(Header("c1", "box-1", "event", seq), event, now - ago + 1)
    console.config["CONSOLE"].config.web.language = "zh_CN"
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver = headless_chromium("zh-CN", accept_languages="zh-CN,zh")
    try:
        with serving(console, tmp_path) as base:
            driver.get(f"{base}/login")
            driver.find_element(By.ID, "name").send_keys(ADMIN[0])
            driver.find_element(By.ID, "password").send_keys(ADMIN[1])
            driver.find_element(By.ID, "login").click()
            WebDriverWait(driver, 30).until(lambda d: "/login" not in d.current_url)
            driver.get(f"{base}/rollouts/{rollout_id}")
            table = driver.find_element(By.ID, "rollout-boxes")
            driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", table)
            driver.save_screenshot(str(SHOTS / "zh-rollout-downloading.png"))
            row = driver.find_element(By.CSS_SELECTOR, 'tr[data-target="c1/box-1"]').text
            text = driver.execute_script(  # what is shown as recorded (names) left out
                "const copy = document.querySelector('main').cloneNode(true);"
                "copy.querySelectorAll('[translate=no], [lang=en], code')"
                ".forEach(e => e.remove()); return copy.innerText")
    finally:
        driver.quit()
    assert "已收到 2.8 MB，共 4.7 MB（60%）" in row and "约剩 2 分钟" in row, row
    assert "每秒 23.3 KB" in row, row
    assert english_sentences(text) == [], english_sentences(text)
