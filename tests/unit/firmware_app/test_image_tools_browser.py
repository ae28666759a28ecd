"""Zoom, pan and the distance tool in a real headless Chromium at a tablet's 1024×768.

A clinician opens the alert study of the populated box (``tests/viewer_state.py``,
the real worker and model), zooms in and pans (the box drawn over the lesion
must move and scale with the image), taps the lesion's row in the lesion
table, and measures the lesion with the distance tool by finger (synthetic
``touch`` pointer events) between the two ends of its long axis, taken from
the lesion's contour (its farthest pair of points), at a zoom other than 1.
The length shown must match the lesion's ``long_axis_mm`` within a pixel's
size. The page's CSP is the strict one and the console has no error (a CSP
violation would be one). Screenshots go to ``test-artifacts/viewer/``.
"""

from __future__ import annotations

import json
import math

import pytest

from firmware_app.storage import db
from tests.browser import ARTIFACTS, POINTER, headless_chromium
from tests.unit.web import test_web_i18n_browser as zh_browser
from tests.viewer_state import CLINICIAN
from webcore.security import CONTENT_SECURITY_POLICY

pytestmark = pytest.mark.slow

#: the viewer served over HTTPS on localhost (the Chinese browser test's fixture)
served = zh_browser.served

#: The policy as the viewer has always sent it: the tools add nothing to it.
STRICT_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
              "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@pytest.fixture
def tablet_browser():
    """Headless Chromium in a 1024×768 window that keeps its console log."""
    driver = headless_chromium("en", console_log=True)
    yield driver
    driver.quit()


#: Screen rectangles of the stage (image and overlays) and of lesion 1's box.
RECTS = """
const r = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.width, b.height]; };
return {stage: r(document.getElementById('stage')),
        box: r(document.querySelector('#boxes rect[data-lesion="1"]')),
        viewer: r(document.getElementById('viewer'))};
"""


def _long_axis_ends(contour: list[list[float]], row_mm: float, column_mm: float
                    ) -> tuple[tuple[float, float], tuple[float, float]]:
    """The two ends of a lesion's long axis from its contour: the farthest pair (in mm) of the
    contour pixels' corners, as the box measures a mask (``inference/masks.py``: a
    one-pixel lesion is one pixel long), in source-pixel coordinates."""
    corners = sorted({(x + dx, y + dy) for x, y in contour for dx in (0, 1) for dy in (0, 1)})
    best, pair = -1.0, (corners[0], corners[0])
    for i, a in enumerate(corners):
        for b in corners[i + 1:]:
            d = math.hypot((a[0] - b[0]) * column_mm, (a[1] - b[1]) * row_mm)
            if d > best:
                best, pair = d, (a, b)
    return pair


def _box_in_source(rects: dict, columns: int, rows: int) -> list[float]:
    """Lesion 1's drawn box read back from the screen into source pixels."""
    sx, sy, sw, sh = rects["stage"]
    bx, by, bw, bh = rects["box"]
    return [(bx - sx) / sw * columns, (by - sy) / sh * rows,
            (bx + bw - sx) / sw * columns, (by + bh - sy) / sh * rows]


def _drag(driver, points: list[tuple[float, float]]) -> None:
    driver.execute_script(POINTER, "pointerdown", *points[0])
    for point in points[1:]:
        driver.execute_script(POINTER, "pointermove", *point)
    driver.execute_script(POINTER, "pointerup", *points[-1])


def test_a_lesion_measured_on_the_zoomed_image_matches_its_long_axis(served, tablet_browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, state = served
    driver, wait = tablet_browser, WebDriverWait(tablet_browser, 30)
    conn = db.connect(state.config.database_path)
    lesions = json.loads(conn.execute("SELECT lesions_json FROM results WHERE instance_id = ?",
                                      (state.instances["alert"],)).fetchone()[0])
    conn.close()
    lesion = lesions[0]
    assert lesion["units"] == "mm" and lesion["contour"], lesion

    driver.get(f"{base}/login")
    driver.find_element(By.ID, "name").send_keys(CLINICIAN[0])
    driver.find_element(By.ID, "password").send_keys(CLINICIAN[1])
    driver.find_element(By.ID, "login").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.worklist a.open"))
    driver.get(f"{base}/study/{state.studies['alert']}")
    wait.until(lambda d: d.execute_script(
        "const i = document.getElementById('frame-image'); return i.complete && i.naturalWidth"))
    viewer = driver.find_element(By.ID, "viewer")
    columns = int(viewer.get_attribute("data-columns"))
    rows = int(viewer.get_attribute("data-rows"))
    row_mm = float(viewer.get_attribute("data-row-mm"))
    column_mm = float(viewer.get_attribute("data-column-mm"))
    pixel_mm = max(row_mm, column_mm)
    assert driver.find_element(By.ID, "viewer-tools").is_displayed()
    # a 1024×768 tablet: nothing wider than the screen, the lesion table readable on it
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 1024
    table = driver.find_element(By.ID, "lesion-table")
    assert table.is_displayed() and table.size["width"] <= 1024
    assert driver.execute_script(
        "return parseFloat(getComputedStyle(document.getElementById('lesion-table')).fontSize)"
    ) >= 14

    # zoom (buttons) and pan (a finger's drag): the box stays on the lesion, scaled with the image
    start = driver.execute_script(RECTS)
    drawn = _box_in_source(start, columns, rows)
    assert drawn == pytest.approx(lesion["box"], abs=1.0)
    driver.find_element(By.ID, "zoom-in").click()
    driver.find_element(By.ID, "zoom-in").click()
    zoomed = driver.execute_script(RECTS)
    scale = zoomed["stage"][2] / start["stage"][2]
    assert scale == pytest.approx(2.25, rel=0.01)
    assert zoomed["box"][2] == pytest.approx(start["box"][2] * scale, rel=0.02, abs=1)
    assert zoomed["box"][3] == pytest.approx(start["box"][3] * scale, rel=0.02, abs=1)
    vx, vy, vw, vh = zoomed["viewer"]
    _drag(driver, [(vx + vw / 2, vy + vh / 2), (vx + vw / 2 - 40, vy + vh / 2 - 25),
                   (vx + vw / 2 - 80, vy + vh / 2 - 50)])
    panned = driver.execute_script(RECTS)
    assert panned["stage"][0] == pytest.approx(zoomed["stage"][0] - 80, abs=1)
    assert panned["stage"][1] == pytest.approx(zoomed["stage"][1] - 50, abs=1)
    assert _box_in_source(panned, columns, rows) == pytest.approx(lesion["box"], abs=1.0)
    driver.save_screenshot(str(ARTIFACTS / "tools-01-zoomed.png"))

    # the lesion's row zooms to its box and marks it
    row = '#lesion-table tr[data-lesion="1"] td:nth-child(2)'
    driver.find_element(By.CSS_SELECTOR, row).click()
    chosen = driver.execute_script(RECTS)
    scale = chosen["stage"][2] / start["stage"][2]
    assert scale > 1.01
    assert "selected" in driver.find_element(
        By.CSS_SELECTOR, '#boxes rect[data-lesion="1"]').get_attribute("class")
    bx, by, bw, bh = chosen["box"]
    vx, vy, vw, vh = chosen["viewer"]
    assert vx <= bx and bx + bw <= vx + vw and vy <= by and by + bh <= vy + vh  # in view

    # measure the long axis by finger: a drag, then two taps
    sx, sy, sw, sh = chosen["stage"]
    ends = [(sx + x / columns * sw, sy + y / rows * sh)
            for x, y in _long_axis_ends(lesion["contour"], row_mm, column_mm)]
    driver.find_element(By.ID, "measure-toggle").click()
    middle = ((ends[0][0] + ends[1][0]) / 2, (ends[0][1] + ends[1][1]) / 2)
    _drag(driver, [ends[0], middle, ends[1]])
    for end in ends:
        _drag(driver, [end])
    shown = driver.find_elements(By.CSS_SELECTOR, "#measurements li")
    assert len(shown) == 2
    for item in shown:
        value, units = float(item.get_attribute("data-value")), item.get_attribute("data-units")
        assert units == "mm" and item.text.endswith(" mm")
        print(f"measured {value:.3f} mm ({item.text}), long_axis_mm {lesion['long_axis_mm']},"
              f" pixel {pixel_mm} mm, zoom {scale:.2f}")
        assert abs(value - lesion["long_axis_mm"]) <= pixel_mm, (value, lesion["long_axis_mm"])
        assert abs(float(item.text.split()[0]) - lesion["long_axis_mm"]) <= pixel_mm
    assert len(driver.find_elements(By.CSS_SELECTOR, "#measures g.measure line")) == 2
    driver.save_screenshot(str(ARTIFACTS / "tools-02-measured.png"))
    driver.find_element(By.ID, "measure-clear").click()
    assert driver.find_elements(By.CSS_SELECTOR, "#measurements li") == []
    driver.find_element(By.ID, "zoom-fit").click()
    assert driver.execute_script(RECTS)["stage"][2] == pytest.approx(start["stage"][2], abs=0.5)

    # the policy is the strict one, and nothing was refused or broke
    policy = driver.execute_async_script(
        "const done = arguments[0]; fetch(location.href, {credentials: 'same-origin'})"
        ".then(r => done(r.headers.get('content-security-policy')));")
    assert policy == CONTENT_SECURITY_POLICY == STRICT_CSP
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
              and "/favicon.ico " not in entry["message"]]  # the browser asks for it itself
    assert errors == []
    assert driver.execute_script("return window.__xss") is None
