"""Issue 56 in headless Chromium, in Chinese at 1024×768: a box's flood of 60 alerts at score
1.0 leaves another clinic's alert on the worklist's first page (the flood shows three and one
line "设备 … 还有 57 条警报"), and the fleet page marks the flooding box in words.

Screenshots: ``test-artifacts/console/zh-fair-*.png``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from central.config import CentralConfig
from central.intake import Intake
from central.store import Store
from central_console.accounts import ConsoleAccounts
from central_console.app import create_app
from tests.browser import ARTIFACTS, headless_chromium, serving
from tests.i18n_text import english_sentences
from tests.unit.central_console.test_console_story_browser import OVERFLOW, _log_in
from tests.unit.central_console.test_console_web import ADMIN, RADIOLOGIST, _alert, _box

pytestmark = pytest.mark.slow

SHOTS = ARTIFACTS.parent / "console"


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[str, Any]]:
    """The console over a store where box c1/flood sent 60 alerts and c2/quiet one."""
    config = CentralConfig()
    config.database.url = f"sqlite:///{tmp_path}/db/central.db"
    config.web.state_dir = str(tmp_path / "state")
    config.web.language = "zh_CN"
    store = Store(config.database.url)
    accounts = ConsoleAccounts(store.database)
    accounts.add(*RADIOLOGIST, "radiologist")
    accounts.add(*ADMIN, "admin")
    app = create_app(config, store)
    for seq in range(1, 61):
        _alert(app, "c1", "flood", seq, score=1.0, age_minutes=5 - seq / 100)
    quiet = _alert(app, "c2", "quiet", 1, score=0.7)
    now = time.time()
    _box(app, "c1", "flood", last_seen=now)
    _box(app, "c2", "quiet", last_seen=now)
    Intake(store.database, "central-1").put([("clinibox/c1/flood/alert", b"x", now)] * 1500)
    try:
        with serving(app, tmp_path) as base:
            yield base, quiet
    finally:
        store.close()


def test_the_flood_leaves_the_quiet_alert_on_the_first_page_in_chinese(served):
    from selenium.webdriver.common.by import By

    base, quiet = served
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver = headless_chromium("zh-CN", accept_languages="zh-CN,zh")
    try:
        _log_in(driver, base, RADIOLOGIST)
        driver.get(f"{base}/alerts")
        driver.save_screenshot(str(SHOTS / "zh-fair-worklist.png"))
        rows = driver.find_elements(By.CSS_SELECTOR, "tr[data-alert-id]")
        assert [r.get_attribute("data-alert-id") for r in rows][-1] == str(quiet)
        assert len(rows) == 4
        more = driver.find_element(By.CSS_SELECTOR, 'tr[data-more-from="c1/flood"]')
        assert more.is_displayed() and more.text == "设备 flood 还有 57 条警报"
        assert driver.execute_script(OVERFLOW) <= 0
        more.find_element(By.TAG_NAME, "a").click()
        assert len(driver.find_elements(By.CSS_SELECTOR, "tr[data-alert-id]")) == 50
        assert "box=flood" in driver.current_url
        driver.delete_all_cookies()
        _log_in(driver, base, ADMIN)
        driver.get(f"{base}/fleet")
        driver.save_screenshot(str(SHOTS / "zh-fair-fleet.png"))
        badge = driver.find_element(By.ID, "flooding-c1-flood")
        assert badge.is_displayed() and badge.text.replace(",", "") == "消息过多：1500 条在等候"
        assert english_sentences(badge.text + badge.get_attribute("title")) == []
        assert driver.find_elements(By.ID, "flooding-c2-quiet") == []
        assert driver.execute_script(OVERFLOW) <= 0
    finally:
        driver.quit()
