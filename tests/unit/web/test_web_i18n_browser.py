"""The Chinese viewer in a real headless Chromium (Debian's, driven by Selenium).

A browser set to Simplified Chinese (``--lang=zh-CN``, Accept-Language
``zh-CN,zh``) logs in to the populated box (``tests/viewer_state.py``) served
over HTTPS, reads the alert study in Chinese, switches to English with the
header's switch (a plain form: no script) and back. Screenshots go to
``test-artifacts/viewer/`` (``zh-*.png``); the Chinese is drawn with the CJK
font Chromium finds (Debian: ``fonts-noto-cjk``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser import ARTIFACTS, headless_chromium, serving
from tests.i18n_text import catalog_sentences, english_sentences
from tests.viewer_state import CLINICIAN, XSS_NAME

pytestmark = pytest.mark.slow



@pytest.fixture
def served(viewer, tmp_path) -> Iterator[tuple[str, object]]:
    """The viewer app on an HTTPS port of localhost (werkzeug, a thread): (base URL, state)."""
    state, app = viewer
    with serving(app, tmp_path) as base:
        yield base, state


@pytest.fixture
def chinese_browser():
    """Headless Chromium whose user reads Simplified Chinese."""
    driver = headless_chromium("zh-CN", accept_languages="zh-CN,zh")
    yield driver
    driver.quit()


def _text(driver) -> str:
    return driver.execute_script("return document.body.innerText")


def _readable(driver) -> str:
    """The page's text without what it shows as recorded (translate="no", lang="en")."""
    return driver.execute_script(
        "const copy = document.body.cloneNode(true);"
        "copy.querySelectorAll('[translate=no], [lang=en], code').forEach(e => e.remove());"
        "return copy.innerText")


def test_a_nurse_reads_the_study_in_chinese_in_chromium(served, chinese_browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, state = served
    driver, wait = chinese_browser, WebDriverWait(chinese_browser, 30)
    driver.get(f"{base}/")
    wait.until(lambda d: "/login" in d.current_url)
    assert driver.execute_script("return document.documentElement.lang") == "zh-CN"
    assert "登录" in _text(driver)
    driver.find_element(By.ID, "name").send_keys(CLINICIAN[0])
    driver.find_element(By.ID, "password").send_keys(CLINICIAN[1])
    driver.find_element(By.ID, "login").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.worklist a.open"))
    first = driver.find_elements(By.CSS_SELECTOR, "table.worklist tbody tr")[0]
    assert "警报" in first.text
    driver.save_screenshot(str(ARTIFACTS / "zh-01-worklist.png"))

    driver.get(f"{base}/study/{state.studies['alert']}")
    verdict = wait.until(lambda d: d.find_element(By.ID, "verdict"))
    assert verdict.text == "发现可疑区域——请医生尽快查看这个检查"
    page = _text(driver)
    for words in ("区域 1：疑似病灶", "模型置信度", "您同意吗？", "仅供演示", "必须由医生阅片",
                  "热力图", "窗宽"):
        assert words in page, words
    assert XSS_NAME.split("<")[0] in page or "Evil" in page  # the patient's name, as recorded
    assert driver.execute_script("return window.__xss") is None
    readable = _readable(driver)
    assert catalog_sentences(readable) == [] and english_sentences(readable) == []
    assert driver.execute_script(
        "return getComputedStyle(document.body).fontFamily").count("Noto Sans CJK SC") == 1
    driver.save_screenshot(str(ARTIFACTS / "zh-02-study.png"))

    # the switch in the header: a plain form, back on the same page, in English, and back
    driver.find_element(By.ID, "language-en").click()
    wait.until(lambda d: d.execute_script("return document.documentElement.lang") == "en")
    assert f"/study/{state.studies['alert']}" in driver.current_url
    assert "Suspicious area found — a doctor should review this study soon" in _text(driver)
    driver.find_element(By.ID, "language-zh_CN").click()
    wait.until(lambda d: d.execute_script("return document.documentElement.lang") == "zh-CN")

    driver.find_element(By.ID, "report-link").click()
    wait.until(lambda d: "/report" in d.current_url)
    report = _text(driver)
    assert "clinibox 检查报告" in report and "整张图像：" in report
    assert catalog_sentences(_readable(driver)) == []
    driver.save_screenshot(str(ARTIFACTS / "zh-03-report.png"))
