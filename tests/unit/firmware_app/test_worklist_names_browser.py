"""A nurse at a 1024×768 tablet reads every patient's name whole on the Chinese worklist, and
the printed report carries the hospital's verdict (headless Chromium, ``tests/browser.py``).

A long Latin name ("PHAN, THI NGOC ANH …") wraps inside its cell instead of ending in "…";
its full text is on the element (and in its title, for a finger's long press); the page
still needs no sideways scrolling. Screenshots: ``test-artifacts/viewer/zh-names-*.png``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from firmware_app.storage import db, hospital_reviews
from tests.browser import ARTIFACTS, headless_chromium, serving
from tests.viewer_state import CLINICIAN

pytestmark = pytest.mark.slow

LONG_NAME = "PHAN^THI NGOC ANH NGUYEN-TRAN HOANG PHUONG"
SHOWN = "PHAN, THI NGOC ANH NGUYEN-TRAN HOANG PHUONG"
LONG_STUDY = "US ABDOMEN LIVER GALLBLADDER PANCREAS KIDNEYS SPLEEN"
NOTE = "肿块边界清楚，请两周内到县医院做 CT。"

#: each name cell: its text, whether it is cut (wider content than its box) and its lines
MEASURE = """
return Array.from(document.querySelectorAll('table.worklist td.patient .name')).map(e => {
  const cell = e.closest('td');
  const range = document.createRange(); range.selectNodeContents(e);
  const lines = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top))).size;
  return {text: e.innerText, title: e.title, lines: lines,
          cut: cell.scrollWidth > cell.clientWidth || e.scrollWidth > e.clientWidth
               || getComputedStyle(cell).textOverflow === 'ellipsis'
                  && getComputedStyle(cell).overflow === 'hidden'};
});
"""


@pytest.fixture
def served(viewer, tmp_path) -> Iterator[tuple[str, object]]:
    """The viewer with one long name and description and a hospital verdict, over HTTPS."""
    state, app = viewer
    conn = db.connect(state.config.database_path)
    try:
        with db.transaction(conn):
            conn.execute("UPDATE studies SET patient_name = ?, study_description = ?"
                         " WHERE id = ?", (LONG_NAME, LONG_STUDY, state.studies["alert"]))
            key = conn.execute("SELECT study_key FROM studies WHERE id = ?",
                               (state.studies["alert"],)).fetchone()[0]
            hospital_reviews.add(conn, seq=1, study_key=key, study_ref="cd" * 16, alert_seq=1,
                                 verdict="refer", follow_up_months=None, note=NOTE,
                                 reviewed_at=1_790_000_000.0)
    finally:
        conn.close()
    with serving(app, tmp_path) as base:
        yield base, state


def test_a_long_name_is_shown_whole_on_the_chinese_worklist(served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, state = served
    driver = headless_chromium("zh-CN", accept_languages="zh-CN,zh")
    wait = WebDriverWait(driver, 30)
    try:
        driver.get(f"{base}/")
        wait.until(lambda d: "/login" in d.current_url)
        driver.find_element(By.ID, "name").send_keys(CLINICIAN[0])
        driver.find_element(By.ID, "password").send_keys(CLINICIAN[1])
        driver.find_element(By.ID, "login").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.worklist a.open"))
        assert driver.execute_script("return window.innerWidth") == 1024
        driver.save_screenshot(str(ARTIFACTS / "zh-names-worklist.png"))
        names = driver.execute_script(MEASURE)
        long = next(n for n in names if n["title"] == SHOWN)
        assert " ".join(long["text"].split()) == SHOWN  # every word of it, nothing elided
        assert long["cut"] is False and long["lines"] >= 2, names  # wrapped, not clipped
        assert [n for n in names if n["cut"]] == []
        description = driver.find_element(By.CSS_SELECTOR, f'td.study [title="{LONG_STUDY}"]')
        assert " ".join(description.text.split()) == LONG_STUDY
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth")
        assert "中心医院已审阅：转诊患者" in driver.find_element(
            By.CSS_SELECTOR, "table.worklist").text

        driver.get(f"{base}/study/{state.studies['alert']}/report")
        review = wait.until(lambda d: d.find_element(By.ID, "hospital-review"))
        assert "中心医院已审阅：转诊患者" in review.text and NOTE in review.text
        assert SHOWN in " ".join(driver.find_element(By.CSS_SELECTOR, "td.patient")
                                 .text.split())
        driver.save_screenshot(str(ARTIFACTS / "zh-names-report.png"))
    finally:
        driver.quit()


def test_the_images_waiting_for_a_model_are_in_the_table_the_badge_counts(served):
    """While the box waits for a model the Chinese worklist's badge and its table agree."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from firmware_app.storage import model_offers

    base, state = served
    conn = db.connect(state.config.database_path)
    try:
        with db.transaction(conn):
            model_offers.set_waiting(conn, "not_installed", "no model package found")
    finally:
        conn.close()
    driver = headless_chromium("zh-CN", accept_languages="zh-CN,zh")
    wait = WebDriverWait(driver, 30)
    try:
        driver.get(f"{base}/")
        wait.until(lambda d: "/login" in d.current_url)
        driver.find_element(By.ID, "name").send_keys(CLINICIAN[0])
        driver.find_element(By.ID, "password").send_keys(CLINICIAN[1])
        driver.find_element(By.ID, "login").click()
        badge = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "a.pill.waiting_for_model"))
        assert badge.text == "1 张图像等待模型"
        rows = driver.find_elements(By.CSS_SELECTOR, "table.worklist tr.row-waiting_for_model")
        assert len(rows) == 1 and "等待模型" in rows[0].text
        assert rows[0].is_displayed() and rows[0].rect["y"] < driver.execute_script(
            "return window.innerHeight")  # where the nurse looks, under the badge
        driver.save_screenshot(str(ARTIFACTS / "zh-names-waiting.png"))
    finally:
        driver.quit()
