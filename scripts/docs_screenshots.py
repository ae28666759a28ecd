"""The documentation's screenshots, made again from the pages (``make docs-screenshots``).

Each screen a reader of the docs meets — the nurse's worklist, study page and live page, the
radiologist's alert page on the hospital's console, the technician's device page — is opened
in headless Chromium at 1024×768 (``tests/browser.py``), once in English and once in Chinese,
over the fixtures the browser tests use: a box whose phantom studies the real worker analysed
with the bundled demo model (``tests/viewer_state.py``: made-up images, the demo model is
trained on phantoms and not for clinical use) and the console's day (``tests/console_scene.py``).
The PNGs go to ``docs/images/screens/NAME-LANG.png`` (:data:`SCREENS` × :data:`LANGUAGES`),
reduced to 256 colours and optimised; ``tests/unit/test_docs_screenshots.py`` holds the pages'
references to this list.

Run: ``.venv/bin/python scripts/docs_screenshots.py [NAME ...]`` (Debian's chromium and
chromium-driver installed).
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OUT = REPO / "docs" / "images" / "screens"
#: file suffix -> (Chromium's --lang, Accept-Language)
LANGUAGES = {"en": ("en-US", "en"), "zh": ("zh-CN", "zh-CN,zh")}
#: each study's patient, by language (the phantoms' names made a clinic's; the descriptions
#: still say PHANTOM)
PATIENTS = {
    "alert": {"en": ("WANG^FANG", "Q-2041"), "zh": ("王^芳", "Q-2041")},
    "clear": {"en": ("LI^MING", "Q-2038"), "zh": ("李^明", "Q-2038")},
    "sweep": {"en": ("ZHANG^LI", "Q-2039"), "zh": ("张^丽", "Q-2039")},
    "dark": {"en": ("LIU^YANG", "Q-2040"), "zh": ("刘^洋", "Q-2040")},
    "real_ct": {"en": ("CHEN^JING", "Q-2035"), "zh": ("陈^静", "Q-2035")},
}
#: the live source's label, by language (the technician's words for it)
SOURCE_LABEL = {"en": "Ultrasound, room 1", "zh": "超声 1 号"}
LIVE_SIZE = (640, 480)


# -- the box -----------------------------------------------------------------------------------


def build_box(root: Path) -> Any:
    """The viewer's populated box (tests/viewer_state.py) with a live source ``us-1``."""
    from firmware_app.service.appliance import load_runner
    from firmware_app.settings.box import Config
    from firmware_app.settings.live import LiveSource
    from tests.viewer_state import build_viewer_state

    config = Config()
    config.runtime.backend = "onnxruntime"
    state = build_viewer_state(root, load_runner(config))
    state.config.live.sources = [LiveSource(name="us-1", url="/dev/video0", label="",
                                            mm_per_pixel=0.1)]
    return state


def name_patients(state: Any, language: str) -> None:
    """Give the box's studies the patients' names of ``language``."""
    from firmware_app.storage import db

    conn = db.connect(state.config.database_path)
    try:
        with db.transaction(conn):
            for study, names in PATIENTS.items():
                name, patient_id = names[language]
                conn.execute("UPDATE studies SET patient_name = ?, patient_id = ? WHERE id = ?",
                             (name, patient_id, state.studies[study]))
            # pydicom's real CT sample describes itself as "e+1"
            conn.execute("UPDATE studies SET study_description = 'CT SAMPLE' WHERE id = ?",
                         (state.studies["real_ct"],))
    finally:
        conn.close()


def downloading(state: Any, running: str) -> None:
    """The hospital's rollout of the next version, half downloaded (as the updater records
    it: tests/unit/firmware_app/test_device_page_browser.py)."""
    from firmware_app.storage import db, download_progress, model_offers

    name, version = running.split("@")
    major, minor, patch = version.split(".")
    newer = f"{major}.{minor}.{int(patch) + 1}"
    conn = db.connect(state.config.database_path)
    try:
        with db.transaction(conn):
            model_offers.add(conn, seq=3, kind="rollout", step="kept", done=True,
                             payload={"rollout": 6, "name": name, "version": version})
            model_offers.add(conn, seq=4, kind="rollout", step="downloading",
                             payload={"rollout": 7, "name": name, "version": newer})
            download_progress.record(conn, 4, 2_300_000, 4_700_000, 16_400.0, time.time())
    finally:
        conn.close()


def service_seen(state: Any) -> None:
    """The appliance's note that it is alive, as its telemetry loop writes it every 10 s (the
    device page says the service runs)."""
    from firmware_app.storage import db
    from firmware_app.storage import telemetry as telemetry_rows

    conn = db.connect(state.config.database_path)
    try:
        with db.transaction(conn):
            telemetry_rows.set_state(conn, "appliance_seen_at", time.time())
    finally:
        conn.close()


def _live_frame() -> tuple[bytes, list[float]]:
    """An ultrasound phantom with a lesion as the live JPEG, and the lesion's box on it."""
    import numpy as np
    from PIL import Image

    from phantoms.images import generate

    phantom = generate("us", np.random.default_rng(11), lesion=True)
    pixels = np.clip(phantom.image, 0.0, 1.0) * 255.0
    height, width = pixels.shape[:2]
    image = Image.fromarray(pixels.astype(np.uint8)).convert("RGB").resize(LIVE_SIZE)
    sx, sy = LIVE_SIZE[0] / width, LIVE_SIZE[1] / height
    x0, y0, x1, y1 = (float(v) for v in phantom.boxes[0])
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue(), [x0 * sx, y0 * sy, x1 * sx, y1 * sy]


@contextmanager
def live_source(state: Any) -> Iterator[None]:
    """A live process's frames for ``us-1``, ten a second, while the block runs (the overlay a
    held lesion with its size, the hint "hold the probe here")."""
    from firmware_app.storage.live_frames import FrameWriter, live_root

    jpeg, box = _live_frame()
    writer = FrameWriter(live_root(state.config.state_dir), "us-1", 2.0)
    width, height = LIVE_SIZE
    long_px = max(box[2] - box[0], box[3] - box[1])
    stop = threading.Event()

    def run() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            lesion = {"track": 1, "box": box, "score": 0.82, "long_axis_mm": long_px * 0.1,
                      "short_axis_mm": min(box[2] - box[0], box[3] - box[1]) * 0.1,
                      "long_axis_px": long_px, "held": 6}
            entry = {"arrived": time.time(), "hint": "hold_here", "quality": [],
                     "lesions": [lesion]}
            writer.publish(seq, jpeg, entry, {
                "source": "us-1", "label": "", "modality": "US", "state": "running",
                "detail": {}, "width": width, "height": height, "region": None,
                "mm_per_pixel": 0.1, "fps": 14.8, "analysed": seq, "dropped": 0,
                "hint": "hold_here", "session": None})
            stop.wait(0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


# -- the browser -------------------------------------------------------------------------------


def browser(lang: str, accept: str) -> Any:
    """Headless Chromium (tests/browser.py) whose page is 1024×768 (a tablet, no window
    frame: the window's 768 includes Chromium's own)."""
    from tests.browser import headless_chromium

    driver = headless_chromium(lang, accept_languages=accept)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 1024, "height": 768, "deviceScaleFactor": 1, "mobile": False})
    return driver


def log_in(driver: Any, base: str, who: tuple[str, str]) -> None:
    """Log in at ``base`` as ``who`` (the viewer's and the console's login form)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.delete_all_cookies()
    driver.get(f"{base}/login")
    driver.find_element(By.ID, "name").send_keys(who[0])
    driver.find_element(By.ID, "password").send_keys(who[1])
    driver.find_element(By.ID, "login").click()
    WebDriverWait(driver, 30).until(lambda d: "/login" not in d.current_url)


def save(driver: Any, name: str, language: str) -> Path:
    """The window as ``OUT/NAME-LANG.png``: 256 colours, optimised."""
    from PIL import Image

    shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    assert shot.size == (1024, 768), shot.size
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}-{language}.png"
    shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size // 1024} KB)")
    return path


def settle(driver: Any, ready: str = "", seconds: float = 1.0) -> None:
    """Wait for ``ready`` (a CSS selector) to be shown, then for the page's scripts."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if ready:  # the live page replaces its picture's elements as frames come
        WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: any(e.is_displayed() for e in d.find_elements(By.CSS_SELECTOR, ready)))
    time.sleep(seconds)


# -- the screens -------------------------------------------------------------------------------


def viewer_screens(names: set[str], folder: Path) -> None:
    """The nurse's worklist, study page and live page, the technician's device page."""
    from tests.browser import serving
    from tests.viewer_state import CLINICIAN, TECHNICIAN
    from web.app import create_app

    os.environ["CLINIBOX_RUNTIME_DIR"] = str(folder / "run")
    state = build_box(folder / "box")
    app = create_app(state.config)
    downloading(state, app.config["CLINIBOX"].package_facts()["model_id"])
    with serving(app, folder) as base, live_source(state):
        for language, (lang, accept) in LANGUAGES.items():
            name_patients(state, language)
            state.config.live.sources[0].label = SOURCE_LABEL[language]
            driver = browser(lang, accept)
            try:
                log_in(driver, base, CLINICIAN)
                if "worklist" in names:
                    driver.get(f"{base}/")
                    settle(driver, "table.worklist a.open")
                    save(driver, "worklist", language)
                if "study" in names:
                    driver.get(f"{base}/study/{state.studies['alert']}")
                    settle(driver, "#viewer", 2.0)
                    save(driver, "study", language)
                if "live" in names:
                    driver.get(f"{base}/live/us-1")
                    settle(driver, "#viewer, #live, img, canvas", 3.0)
                    save(driver, "live", language)
                if names & {"device", "device-model"}:
                    log_in(driver, base, TECHNICIAN)
                    service_seen(state)
                    driver.get(f"{base}/device")
                    settle(driver, "#model")
                    if "device" in names:
                        save(driver, "device", language)
                    if "device-model" in names:  # a rollout's download, under way
                        driver.execute_script("document.getElementById('model')"
                                              ".scrollIntoView({block: 'start'})")
                        time.sleep(0.5)
                        save(driver, "device-model", language)
            finally:
                driver.quit()


def console_screens(names: set[str], folder: Path) -> None:
    """The radiologist's alert page on the hospital's console (tests/console_scene.py)."""
    from central.config import CentralConfig
    from central.store import Store
    from central_console.accounts import ConsoleAccounts
    from central_console.app import create_app
    from tests import console_scene
    from tests.browser import serving
    from tests.unit.central_console.test_console_web import RADIOLOGIST

    if not names & {"console-alert", "console-verdict"}:
        return
    config = CentralConfig()
    config.database.url = f"sqlite:///{folder}/central.db"
    config.web.state_dir = str(folder / "console-state")
    config.keys.hospital_signing_key = str(folder / "hospital-signing.pem")
    store = Store(config.database.url)
    try:
        ConsoleAccounts(store.database).add(*RADIOLOGIST, "radiologist")
        scene = console_scene.build(store)
        with serving(create_app(config, store), folder) as base:
            for language, (lang, accept) in LANGUAGES.items():
                driver = browser(lang, accept)
                try:
                    log_in(driver, base, RADIOLOGIST)
                    driver.get(f"{base}/alerts/{scene.alert_id}")
                    settle(driver, "main")
                    if "console-alert" in names:
                        save(driver, "console-alert", language)
                    if "console-verdict" not in names:
                        continue
                    # lower down: the review, the verdict's form
                    driver.execute_script("document.getElementById('review-state')"
                                          ".scrollIntoView({block: 'start'})")
                    time.sleep(0.5)
                    save(driver, "console-verdict", language)
                finally:
                    driver.quit()
    finally:
        store.close()


#: every screenshot: its name -> the function making it (both languages)
SCREENS: dict[str, Callable[[set[str], Path], None]] = {
    "worklist": viewer_screens, "study": viewer_screens, "live": viewer_screens,
    "device": viewer_screens, "device-model": viewer_screens,
    "console-alert": console_screens, "console-verdict": console_screens,
}


def files() -> list[str]:
    """The file name of every screenshot this script writes (under :data:`OUT`)."""
    return [f"{name}-{language}.png" for name in SCREENS for language in LANGUAGES]


def main(argv: list[str]) -> int:
    """Write the screenshots named in ``argv`` (all of them without)."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    names = set(argv) or set(SCREENS)
    unknown = names - set(SCREENS)
    if unknown:
        print(f"unknown screens: {sorted(unknown)}; known: {sorted(SCREENS)}", file=sys.stderr)
        return 2
    for make in dict.fromkeys(SCREENS[name] for name in names):
        with tempfile.TemporaryDirectory(prefix="clinibox-screens-") as folder:
            make(names, Path(folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
