"""Headless Chromium for the viewer's browser tests (Debian's chromium + chromium-driver)."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
#: One pointer event (a finger) at client point (x, y) on what lies there in the viewer
#: (``driver.execute_script(POINTER, type, x, y)``).
POINTER = """
const [type, x, y] = arguments;
const viewer = document.getElementById('viewer');
const hit = document.elementFromPoint(x, y);
const target = hit && viewer.contains(hit) ? hit : viewer;
target.dispatchEvent(new PointerEvent(type, {pointerId: 7, pointerType: 'touch', isPrimary: true,
  clientX: x, clientY: y, button: 0, buttons: type === 'pointerup' ? 0 : 1,
  bubbles: true, cancelable: true}));
"""
#: where the browser tests leave their screenshots
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "viewer"


#: the page area of a cheap tablet: what every browser test sees and screenshots
VIEWPORT = {"width": 1024, "height": 768, "deviceScaleFactor": 1, "mobile": False}


def headless_chromium(lang: str, *, accept_languages: str = "", console_log: bool = False):
    """A headless Chromium showing pages at 1024×768 (a cheap tablet) speaking ``lang``;
    a test fails, saying what to install, when Chromium or its driver is missing (.ci/run
    installs both), as it does for every other real part.

    A 1024×768 window alone leaves the page 1024×625 (headless Chromium keeps room for
    a window's frame), so the page area itself is set to 1024×768."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("Chromium and chromedriver not found: install them (apt-get install "
                    "chromium chromium-driver), as .ci/run does")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--ignore-certificate-errors", "--window-size=1024,768", f"--lang={lang}"):
        options.add_argument(argument)
    if accept_languages:
        options.add_experimental_option("prefs", {"intl.accept_languages": accept_languages})
    if console_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", VIEWPORT)
    return driver


@contextmanager
def serving(app, folder: Path) -> Iterator[str]:
    """``app`` served over HTTPS on a free port of localhost (werkzeug, a thread, a
    self-signed certificate in ``folder``); yields its base URL."""
    from werkzeug.serving import make_server

    from webcore.tls import make_self_signed

    cert, key = folder / "cert.pem", folder / "key.pem"
    make_self_signed(cert, key, "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = make_server("127.0.0.1", port, app, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{port}"
    finally:
        server.shutdown()
        thread.join(10)
