"""The clinic viewer end to end in a real headless Chromium (Debian's, driven by Selenium).

`clinibox serve` starts the viewer as its child (gunicorn, HTTPS with the
box's self-signed certificate); phantoms arrive over DICOM from dcmtk's
storescu and are analysed by the demo model (trained on procedurally
generated phantoms; not for clinical use). In the browser: log in, see the
alert study at the top of the worklist, watch a new study appear without a
reload, open the study, toggle the overlays, move the window, record
feedback, open the report and its PDF. The patient name carries a script
canary that must show as text and never run. Screenshots go to
``test-artifacts/viewer/``.
"""

from __future__ import annotations

import shutil
import ssl
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from firmware_app.service.appliance import load_runner
from firmware_app.settings.box import Config
from tests.integration.conftest import (
    REPO,
    add_viewer_account,
    storescu,
    wait_for,
)
from tests.ports import free_port
from tests.viewer_state import XSS_NAME, ct_phantom

pytestmark = pytest.mark.integration

ARTIFACTS = REPO / "test-artifacts" / "viewer"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
NURSE = ("nadia", "the-clinic-nurse-1")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> dict[str, Path]:
    """An alerting CT phantom (script canary in PatientName) and a clear one."""
    config = Config()
    config.runtime.backend = "onnxruntime"
    runner = load_runner(config)
    folder = tmp_path_factory.mktemp("phantoms")
    return {
        "alert": ct_phantom(runner, folder / "alert.dcm", lesion=True, alert=True, identity={
            "PatientName": XSS_NAME, "StudyDescription": "CT CHEST PHANTOM"}),
        "clear": ct_phantom(runner, folder / "clear.dcm", lesion=False, alert=False, identity={
            "PatientName": "CLEAR^PHANTOM", "StudyDescription": "CT ABDOMEN PHANTOM"}),
    }


@pytest.fixture
def browser():
    """Headless Chromium; it accepts the box's self-signed certificate."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--ignore-certificate-errors", "--window-size=1280,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _shot(driver, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _https_get(url: str, cert: Path):
    """GET trusting only the box's own certificate (as a pinned CA)."""
    context = ssl.create_default_context(cafile=str(cert))
    return urllib.request.urlopen(url, context=context, timeout=10)


def _displayed(driver, element_id: str) -> bool:
    return driver.execute_script(
        "return getComputedStyle(document.getElementById(arguments[0])).display !== 'none'",
        element_id)


def test_clinician_reads_a_study_in_chromium(box_factory, browser, phantoms):
    port = free_port()
    box = box_factory(web={"enabled": True, "port": port})
    base = f"https://localhost:{port}"
    cert = box.state / "keys" / "web-cert.pem"
    wait_for(lambda: cert.exists() and _reachable(base, cert), 90, "the viewer to answer")
    with _https_get(f"{base}/login", cert) as answer:
        assert answer.headers["Server"].startswith("gunicorn")  # not a development server
    assert "no viewer accounts yet" in box.log.read_text()
    add_viewer_account(box, *NURSE, "clinician")

    result = storescu(box.port, [phantoms["alert"]])
    assert result.returncode == 0, result.stderr
    box.wait_idle(1)

    wait = WebDriverWait(browser, 30)
    browser.get(f"{base}/")
    wait.until(lambda d: "/login" in d.current_url)
    _shot(browser, "01-login")
    browser.find_element(By.ID, "name").send_keys(NURSE[0])
    browser.find_element(By.ID, "password").send_keys(NURSE[1])
    browser.find_element(By.ID, "login").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.worklist a.open"))
    first = browser.find_elements(By.CSS_SELECTOR, "table.worklist tbody tr")[0]
    assert "ALERT" in first.text
    assert browser.find_element(By.CSS_SELECTOR, "td.patient").text.startswith(
        "<script>window.__xss")  # shown as text (the name's groups split at "=")
    assert browser.execute_script("return window.__xss") is None  # never ran
    _shot(browser, "02-worklist")

    # a new study appears without a reload
    browser.execute_script("window.__stillHere = true")
    assert storescu(box.port, [phantoms["clear"]]).returncode == 0
    wait.until(lambda d: "CLEAR, PHANTOM" in d.find_element(By.ID, "worklist").text)
    assert browser.execute_script("return window.__stillHere") is True
    rows = browser.find_elements(By.CSS_SELECTOR, "table.worklist tbody tr")
    assert "ALERT" in rows[0].text and "no finding" in rows[1].text
    _shot(browser, "03-worklist-updated")

    rows[0].find_element(By.CSS_SELECTOR, "a.open").click()
    wait.until(lambda d: d.execute_script(
        "const i = document.getElementById('frame-image'); return i && i.complete"
        " && i.naturalWidth > 0"))
    assert "Suspicious area found" in browser.find_element(By.ID, "verdict").text
    assert browser.execute_script("return window.__xss") is None
    assert _displayed(browser, "boxes") and not _displayed(browser, "heatmap")
    _shot(browser, "04-study-boxes")
    browser.find_element(By.CSS_SELECTOR, "label[for=show-heatmap]").click()
    browser.find_element(By.CSS_SELECTOR, "label[for=show-boxes]").click()
    assert _displayed(browser, "heatmap") and not _displayed(browser, "boxes")
    assert browser.execute_script("return document.getElementById('heatmap').naturalWidth") > 0
    _shot(browser, "05-study-heatmap")

    before = browser.find_element(By.ID, "frame-image").get_attribute("src")
    browser.execute_script(
        "const w = document.getElementById('width'); w.value = '80';"
        " w.dispatchEvent(new Event('input'));")
    wait.until(lambda d: d.find_element(By.ID, "frame-image").get_attribute("src") != before)
    assert "width=80" in browser.find_element(By.ID, "frame-image").get_attribute("src")
    wait.until(lambda d: d.execute_script(
        "const i = document.getElementById('frame-image'); return i.complete"
        " && i.naturalWidth > 0"))
    _shot(browser, "06-study-window")

    browser.find_element(By.CSS_SELECTOR, "ol.findings form.feedback button.verdict-agree").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "button.verdict-agree.chosen"))
    stored = box.db_rows("SELECT f.verdict, f.finding, a.name FROM feedback f"
                         " JOIN accounts a ON a.id = f.account_id")
    assert [tuple(r) for r in stored] == [("agree", 0, NURSE[0])]
    _shot(browser, "07-feedback")

    browser.find_element(By.ID, "report-link").click()
    wait.until(lambda d: d.execute_script(
        "const i = document.getElementById('key-image'); return i && i.complete"
        " && i.naturalWidth > 0"))
    assert "Suspicious area found" in browser.page_source
    pdf_head = browser.execute_async_script(
        "const done = arguments[0];"
        "fetch(document.getElementById('pdf-link').href).then(r => r.arrayBuffer())"
        ".then(b => done(String.fromCharCode(...new Uint8Array(b.slice(0, 5)))));")
    assert pdf_head == "%PDF-"
    assert browser.execute_script("return window.__xss") is None
    _shot(browser, "08-report")


#: study (worklist patient name) → (badge level, words the verdict and the report must show)
ASSESSMENTS = {
    "<script>window.__xss": ("alert", "Suspicious area found"),
    "CLEAR, PHANTOM": ("clear", "No suspicious area found"),
    "DARK, PHANTOM": ("unassessable", "Not assessable: image too dark"),
    "CompressedSamples, CT1": ("outside", "Outside what the model was validated on"),
}


def test_every_assessment_reads_in_chromium_on_the_page_and_the_report(
        box_factory, browser, phantoms, tmp_path):
    """Finding, no finding, not assessable and outside the validated range (a real CT
    scan: pydicom's CT_small), each in the worklist, its study page and its report."""
    import numpy as np
    from pydicom.data import get_testdata_file

    from phantoms.dicom import us_dataset, write_dicom
    from phantoms.images import generate

    port = free_port()
    box = box_factory(web={"enabled": True, "port": port})
    base = f"https://localhost:{port}"
    cert = box.state / "keys" / "web-cert.pem"
    wait_for(lambda: cert.exists() and _reachable(base, cert), 90, "the viewer to answer")
    add_viewer_account(box, *NURSE, "clinician")
    dark = write_dicom(us_dataset(
        generate("us", np.random.default_rng(3), lesion=False).image * 0.12,
        {"PatientName": "DARK^PHANTOM"}), tmp_path / "dark.dcm")
    files = [phantoms["alert"], phantoms["clear"], dark, Path(get_testdata_file("CT_small.dcm"))]
    assert storescu(box.port, files).returncode == 0
    box.wait_idle(len(files))

    wait = WebDriverWait(browser, 30)
    browser.get(f"{base}/login")
    browser.find_element(By.ID, "name").send_keys(NURSE[0])
    browser.find_element(By.ID, "password").send_keys(NURSE[1])
    browser.find_element(By.ID, "login").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "table.worklist a.open")) == 4)
    links = {}
    for row in browser.find_elements(By.CSS_SELECTOR, "table.worklist tbody tr"):
        name = next(n for n in ASSESSMENTS if n in row.text)
        badge = row.find_element(By.CSS_SELECTOR, "span.badge")
        assert ASSESSMENTS[name][0] in badge.get_attribute("class").split(), (name, row.text)
        links[name] = row.find_element(By.CSS_SELECTOR, "a.open").get_attribute("href")
    _shot(browser, "10-worklist-every-assessment")
    for number, (name, (level, words)) in enumerate(ASSESSMENTS.items()):
        browser.get(links[name])
        verdict = wait.until(lambda d: d.find_element(By.ID, "verdict"))
        assert level in verdict.get_attribute("class").split() and words in verdict.text
        if level in ("unassessable", "outside"):
            assert "no result" in verdict.text and "No suspicious area" not in verdict.text
        _shot(browser, f"{11 + number}-study-{level}")
        browser.find_element(By.ID, "report-link").click()
        wait.until(lambda d: "/report" in d.current_url)
        assert words in browser.find_element(By.CSS_SELECTOR, "p.verdict").text
    assert browser.execute_script("return window.__xss") is None


def _reachable(base: str, cert: Path) -> bool:
    try:
        with _https_get(f"{base}/login", cert) as answer:
            return answer.status == 200
    except OSError:
        return False
