"""The hospital console over a store ``clinibox central serve`` fills, read as its admin reads
it: in headless Chromium at 1024×768 in Chinese (``tests/browser.py``), or in English through
Flask's client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from central.config import CentralConfig
from central.store import Store
from central_console.accounts import ConsoleAccounts
from central_console.app import create_app
from tests.browser import ARTIFACTS, headless_chromium, serving
from tests.unit.central_console.test_console_web import ADMIN, ConsoleClient

#: where the console's screenshots go
SHOTS = ARTIFACTS.parent / "console"


def console_config(database: Path, folder: Path) -> CentralConfig:
    """A console's config over the SQLite ``database`` (its own state in ``folder``)."""
    config = CentralConfig()
    config.database.url = f"sqlite:///{database}"
    config.web.state_dir = str(folder / "console-state")
    config.keys.hospital_signing_key = str(folder / "hospital-signing.pem")
    return config


@contextmanager
def admin_console(database: Path, folder: Path) -> Iterator[Any]:
    """The console's app over ``database`` with an admin account (:data:`ADMIN`)."""
    store = Store(f"sqlite:///{database}")
    accounts = ConsoleAccounts(store.database)
    if not any(account.name == ADMIN[0] for account in accounts.all()):
        accounts.add(*ADMIN, "admin")
    try:
        yield create_app(console_config(database, folder), store)
    finally:
        store.close()


def read_in_chinese(app: Any, folder: Path, path: str, shot: str,
                    look: Callable[[Any], Any] = lambda driver: None) -> tuple[str, Any]:
    """Log in as the admin in Chinese, open ``path``, save ``SHOTS/shot.png``; the page's
    main text and what ``look(driver)`` found there."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = headless_chromium("zh-CN", accept_languages="zh-CN,zh")
    try:
        with serving(app, folder) as base:
            driver.get(f"{base}/login")
            driver.find_element(By.ID, "name").send_keys(ADMIN[0])
            driver.find_element(By.ID, "password").send_keys(ADMIN[1])
            driver.find_element(By.ID, "login").click()
            WebDriverWait(driver, 30).until(lambda d: "/login" not in d.current_url)
            driver.get(f"{base}{path}")
            SHOTS.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(SHOTS / f"{shot}.png"))
            return driver.find_element(By.TAG_NAME, "main").text, look(driver)
    finally:
        driver.quit()


def read_in_english(app: Any, path: str) -> str:
    """The HTML of ``path`` as the admin reads it in English."""
    client = ConsoleClient(app)
    assert client.login(*ADMIN).status_code == 302
    return client.get(path, headers={"Accept-Language": "en"}).get_data(as_text=True)
