"""The console's alert page, worklist and a box's page read in Chinese at 1024×768 in headless
Chromium (``tests/browser.py``) over the day of ``tests/console_scene.py``: what a
radiologist and the hospital's IT see fits the window, in their words.

Screenshots: ``test-artifacts/console/zh-story-*.png`` (opened and read before a change to
these pages is called done).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from central.config import CentralConfig
from central.store import Store
from central_console.accounts import ConsoleAccounts
from central_console.app import create_app
from tests import console_scene
from tests.browser import ARTIFACTS, headless_chromium, serving
from tests.i18n_text import english_sentences
from tests.unit.central_console.test_console_web import ADMIN, RADIOLOGIST

pytestmark = pytest.mark.slow

SHOTS = ARTIFACTS.parent / "console"
#: how much wider than the window the page is (sideways scrolling), in CSS pixels
OVERFLOW = "return document.documentElement.scrollWidth - window.innerWidth"


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[str, Any]]:
    """The console over the scene's store, over HTTPS: (base URL, scene)."""
    config = CentralConfig()
    config.database.url = f"sqlite:///{tmp_path}/db/central.db"
    config.web.state_dir = str(tmp_path / "state")
    config.keys.hospital_signing_key = str(tmp_path / "hospital-signing.pem")
    store = Store(config.database.url)
    accounts = ConsoleAccounts(store.database)
    accounts.add(*RADIOLOGIST, "radiologist")
    accounts.add(*ADMIN, "admin")
    made = console_scene.build(store)
    try:
        with serving(create_app(config, store), tmp_path) as base:
            yield base, made
    finally:
        store.close()


def _log_in(driver: Any, base: str, who: tuple[str, str]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base}/login")
    driver.find_element(By.ID, "name").send_keys(who[0])
    driver.find_element(By.ID, "password").send_keys(who[1])
    driver.find_element(By.ID, "login").click()
    WebDriverWait(driver, 30).until(lambda d: "/login" not in d.current_url)


def _read(driver: Any, path: str, base: str, shot: str, lower: str = "") -> str:
    """Open ``path``, save its screenshot (and one scrolled to the element ``lower``), and
    return the text a person reads on it."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base}{path}")
    driver.save_screenshot(str(SHOTS / f"zh-story-{shot}.png"))
    if lower:
        driver.execute_script("arguments[0].scrollIntoView()",
                              driver.find_element(By.ID, lower))
        driver.save_screenshot(str(SHOTS / f"zh-story-{shot}-{lower}.png"))
    return driver.find_element(By.TAG_NAME, "main").text


def test_the_console_reads_in_chinese_at_1024(served):
    base, made = served
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver = headless_chromium("zh-CN", accept_languages="zh-CN,zh")
    try:
        assert driver.execute_script("return window.innerWidth") == 1024
        _log_in(driver, base, RADIOLOGIST)
        worklist = _read(driver, "/alerts?state=all", base, "worklist")
        assert "高" in worklist and "整张图像 / 报警阈值" in worklist
        assert driver.execute_script(OVERFLOW) <= 0
        alert = _read(driver, f"/alerts/{made.alert_id}", base, "alert", "lesions")
        assert "整张图像：>99%（已分析的 3 张图像中最可疑的一张）" in alert
        assert "模型置信度" in alert and "77%" in alert and "检查参考号" in alert
        assert "分钟前上报" in alert and english_sentences(alert) == []
        assert driver.execute_script(OVERFLOW) <= 0
        driver.delete_all_cookies()
        _log_in(driver, base, ADMIN)
        box = _read(driver, f"/fleet/{console_scene.CLINIC}/{console_scene.DEVICE}", base,
                    "box", "events")
        assert "正在重启以安装模型" in box and "第 52 条" in box and "共 5 次" in box
        # restarting to install another model: no threshold is claimed until it reports one
        assert "0.041" not in box
        assert driver.execute_script(OVERFLOW) <= 0
        fleet = _read(driver, "/fleet", base, "fleet")
        assert "尚未上报" in fleet
        audit = _read(driver, "/audit", base, "audit")
        assert f"诊所 {console_scene.CLINIC} 的设备 {console_scene.DEVICE}" in audit
        assert "box:" not in audit and "rollout:" not in audit
    finally:
        driver.quit()
