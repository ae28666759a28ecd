"""What a clinician reads agrees with itself, in a real Chromium at 1024×768, zh-CN and en.

The populated box (``tests/viewer_state.py``) with a CT phantom series (one lesion on six
contiguous slices) and three more CT studies: the worklist shows at least eight studies
without breaking a badge or a status over two lines, in clinical order; an image outside
the validated range and one not assessable show no probability and no "do you agree?";
the alert study says its statement once and the disclaimer once; the series is one lesion
with its volume; the report says what the page says. Screenshots go to
``test-artifacts/viewer/truth-*.png``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest

from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import generate
from tests.browser import ARTIFACTS, headless_chromium, serving
from tests.viewer_state import CLINICIAN, _land, add_ct_series, copy_viewer_state, local_box
from web.app import create_app

pytestmark = pytest.mark.slow

#: what each language says (the catalog's words), for the checks on the rendered text
WORDS = {
    "zh-CN": {"agree": "您同意吗", "assist": "本结果只是辅助医生，不能代替医生。",
              "one_lesion": "本次检查共 1 个病灶", "slices": "6 个层面",
              "outside": "超出模型验证范围", "unassessable": "不可评估"},
    "en": {"agree": "do you agree", "assist": "This result assists a doctor and does not "
                                              "replace one.",
           "one_lesion": "1 lesion in the study", "slices": "6 slices",
           "outside": "Outside what the model was validated on", "unassessable":
           "Not assessable"},
}


@pytest.fixture(scope="module")
def truth_box(tmp_path_factory, viewer_template, demo_runner) -> Iterator[tuple[str, dict]]:
    """The box served over HTTPS: (base URL, study ids by name)."""
    root = tmp_path_factory.mktemp("truth-box")
    state = copy_viewer_state(viewer_template, root)
    series = add_ct_series(state, demo_runner, root)
    box = local_box(state.config, state.config.state_dir, demo_runner)
    for k in range(3):
        path = write_dicom(ct_dataset(generate("ct", np.random.default_rng(60 + k),
                                               lesion=False),
                                      {"PatientName": f"李^{'明华强'[k]}",
                                       "PatientID": f"C-{k}", "StudyDescription": "CT 腹部"}),
                           root / f"more-{k}.dcm")
        _land(box.lander, path)
    while box.worker.run_once():
        pass
    box.conn.close()
    studies = dict(state.studies, series=series.study_id)
    with serving(create_app(state.config), root) as base:
        yield base, studies


def _text(driver) -> str:
    return driver.execute_script("return document.body.innerText")


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_what_a_clinician_reads_agrees_with_itself(truth_box, lang):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, studies = truth_box
    words = WORDS[lang]
    driver = headless_chromium(lang, accept_languages="zh-CN,zh" if lang == "zh-CN" else "en")
    wait = WebDriverWait(driver, 30)
    try:
        driver.get(f"{base}/")
        wait.until(lambda d: "/login" in d.current_url)
        driver.find_element(By.ID, "name").send_keys(CLINICIAN[0])
        driver.find_element(By.ID, "password").send_keys(CLINICIAN[1])
        driver.find_element(By.ID, "login").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.worklist a.open"))
        driver.save_screenshot(str(ARTIFACTS / f"truth-{lang}-worklist.png"))
        visible = driver.execute_script(
            "return Array.from(document.querySelectorAll('table.worklist tbody tr'))"
            ".filter(r => r.getBoundingClientRect().bottom <= window.innerHeight).length")
        assert visible >= 8, visible
        broken = driver.execute_script(
            "return Array.from(document.querySelectorAll("
            "'table.worklist .badge:not(.warn), table.worklist td.state')).filter(e => {"
            " const r = document.createRange(); r.selectNodeContents(e);"
            " return r.getClientRects().length > 1 }).map(e => e.textContent)")
        assert broken == []
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth")
        levels = [row.get_attribute("class") for row in
                  driver.find_elements(By.CSS_SELECTOR, "table.worklist tbody tr")]
        order = ["row-alert", "row-finding", "row-outside", "row-unassessable", "row-clear"]
        bands = [min(order.index(c), 2) if c in order[2:4] else order.index(c)
                 for c in levels if c in order]
        assert bands == sorted(bands), levels

        for name in ("real_ct", "dark"):
            driver.get(f"{base}/study/{studies[name]}")
            text = _text(driver)
            driver.save_screenshot(str(ARTIFACTS / f"truth-{lang}-{name}.png"))
            assert "%" not in text and words["agree"] not in text.lower(), name
            assert words["outside" if name == "real_ct" else "unassessable"] in text
            assert not driver.find_elements(By.ID, "heatmap")
            driver.get(f"{base}/study/{studies[name]}/report")
            assert "%" not in _text(driver), name

        driver.get(f"{base}/study/{studies['alert']}")
        text = _text(driver)
        driver.save_screenshot(str(ARTIFACTS / f"truth-{lang}-alert.png"))
        assert text.count(words["assist"]) == 1
        assert len(driver.find_elements(By.CSS_SELECTOR, ".verdict:not(.image-verdict)")) == 1
        assert driver.find_element(By.ID, "image-probability").is_displayed()

        driver.get(f"{base}/study/{studies['series']}")
        text = _text(driver)
        assert driver.execute_script(  # no sideways scrolling on a tablet
            "return document.documentElement.scrollWidth <= window.innerWidth")
        driver.save_screenshot(str(ARTIFACTS / f"truth-{lang}-series.png"))
        assert words["one_lesion"] in text
        rows = driver.find_elements(By.CSS_SELECTOR, "#volume-table tbody tr")
        assert len(rows) == 1 and words["slices"] in rows[0].text
        assert re.search(r"\d[\d,.]* mm³", rows[0].text)
        driver.get(f"{base}/study/{studies['series']}/report")
        report = _text(driver)
        driver.save_screenshot(str(ARTIFACTS / f"truth-{lang}-series-report.png"))
        assert words["one_lesion"] in report and report.count(words["assist"]) == 1
    finally:
        driver.quit()
