"""Headless Chromium for the viewer's browser tests (Debian's chromium + chromium-driver)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
#: where the browser tests leave their screenshots
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "viewer"


def headless_chromium(lang: str, *, accept_languages: str = "", console_log: bool = False):
    """A headless Chromium in a 1024×768 window (a cheap tablet) speaking ``lang``; skips
    the test when Chromium or its driver is missing (.ci/run installs both)."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium and chromedriver are needed (Debian: chromium chromium-driver)")
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
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
