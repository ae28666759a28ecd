"""A Flask test client that behaves like a browser on the viewer: HTTPS, CSRF tokens, Referer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.test import TestResponse

BASE = "https://localhost"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
ROOT = Path(__file__).resolve().parents[1]
#: where the pages browsers get come from: the viewer's, the console's and webcore's
#: templates, and the apps' static files
PAGE_FOLDERS = ("web/templates", "web/static", "central_console/templates",
                "central_console/static", "webcore/templates/webcore")


def page_sources() -> list[Path]:
    """Every template and static file of the viewer, the console and webcore."""
    return sorted(path for folder in PAGE_FOLDERS for path in (ROOT / folder).iterdir()
                  if path.is_file())


def csrf_token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = _TOKEN.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


class ViewerClient:
    """Requests as a browser sends them: over HTTPS, same-origin Referer, cookies kept."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client = app.test_client()

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        """GET over HTTPS."""
        return self.client.get(path, base_url=BASE, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, *, token: str | None = None,
             referer: str | None = BASE + "/", **kwargs: Any) -> TestResponse:
        """POST a form; ``token`` defaults to a fresh one from the worklist or login page."""
        form = dict(data or {})
        if token is None:
            token = self.token()
        if token:
            form["csrf_token"] = token
        headers = dict(kwargs.pop("headers", {}))
        if referer:
            headers["Referer"] = referer
        return self.client.post(path, data=form, base_url=BASE, headers=headers, **kwargs)

    def token(self) -> str:
        """A CSRF token for this session (from the login page, or the worklist when logged in)."""
        page = self.get("/login")
        if page.status_code == 302:
            page = self.get("/")
        return csrf_token(page.get_data(as_text=True))

    def login(self, name: str, password: str) -> TestResponse:
        """Log in through the form."""
        return self.post("/login", {"name": name, "password": password})

    def cookie(self, name: str = "clinibox_session"):
        """The cookie as the browser holds it, or None."""
        return self.client.get_cookie(name, domain="localhost")
