"""The viewer's safety rules: sessions, roles, CSRF, cookies, login limits, headers."""

from __future__ import annotations

import re

import pytest

from firmware_app.settings.box import Config
from firmware_app.settings.storage import StorageConfig
from firmware_app.storage import db
from firmware_app.storage.accounts import LoginThrottle
from tests.viewer_state import CLINICIAN, TECHNICIAN
from tests.web_client import ViewerClient, page_sources
from web.app import create_app
from web.security import PUBLIC_ENDPOINTS


def _routes(app, state) -> list[tuple[str, str]]:
    """(method, URL) for every route of the app, with real ids filled in."""
    ids = {"study_id": state.studies["alert"], "instance_id": state.instances["alert"],
           "frame": 0, "source": "us-1", "seq": 1}
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        url = rule.build({k: v for k, v in ids.items() if k in rule.arguments})[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, url))
    return out


def test_every_route_but_login_needs_a_session(viewer):
    state, app = viewer
    client = ViewerClient(app)
    routes = _routes(app, state)
    assert len(routes) >= 16
    for method, url in routes:
        if method == "GET":
            answer = client.get(url)
            if url.endswith((".png", ".pdf")) or url.startswith("/api/"):
                assert answer.status_code == 401, url
            else:
                assert answer.status_code == 302, url
                assert answer.location.startswith("/login?next="), url
        else:
            answer = client.post(url, {"finding": 0, "verdict": "agree"})
            assert answer.status_code in (302, 401), url
            if answer.status_code == 302:  # logout without a session: back to the login
                assert answer.location.endswith("/login"), url
    conn = db.connect(state.config.database_path)
    assert conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 0
    conn.close()
    assert client.get("/login").status_code == 200
    assert client.get("/static/viewer.css").status_code == 200


def test_device_pages_are_for_technicians_only(viewer):
    state, app = viewer
    clinician = ViewerClient(app)
    clinician.login(*CLINICIAN)
    held = state.instances["truncated"]
    for url in ("/device", "/device/quarantine", "/api/status"):
        assert clinician.get(url).status_code == 403, url
    for action in ("process", "delete"):
        assert clinician.post(f"/device/quarantine/{held}/{action}").status_code == 403
    assert "Device" not in clinician.get("/").get_data(as_text=True).split("<main>")[0]
    technician = ViewerClient(app)
    technician.login(*TECHNICIAN)
    for url in ("/device", "/device/quarantine", "/api/status"):
        assert technician.get(url).status_code == 200, url


def test_login_redirects_only_within_the_box(viewer):
    _state, app = viewer
    for target in ("https://evil.example/", "//evil.example/x", "/\tevil", "/\t/evil.example",
                   "/%2F%2Fevil.example", "\\/evil.example", "/\r\nSet-Cookie: x=1"):
        client = ViewerClient(app)
        answer = client.post("/login", {"name": CLINICIAN[0], "password": CLINICIAN[1],
                                        "next": target})
        assert answer.status_code == 400, target
        assert "not a page of this box" in answer.get_data(as_text=True)
        assert client.get("/").status_code == 302  # and no session was opened
    client = ViewerClient(app)
    answer = client.post("/login", {"name": CLINICIAN[0].upper(), "password": CLINICIAN[1],
                                    "next": "/device/quarantine"})
    assert answer.location == "/device/quarantine"
    client = ViewerClient(app)
    answer = client.post("/login", {"name": CLINICIAN[0], "password": CLINICIAN[1], "next": ""})
    assert answer.status_code == 302 and answer.location == "/"
    assert ViewerClient(app).get("/login?next=/%09/evil.example").status_code == 400


def test_wrong_password_and_unknown_name_get_the_same_answer(viewer):
    _state, app = viewer
    client = ViewerClient(app)
    wrong = client.login(CLINICIAN[0], "not-the-password")
    unknown = client.login("nobody", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong name or password." in wrong.get_data(as_text=True)
    assert wrong.get_data(as_text=True).replace(CLINICIAN[0], "nobody") \
        .count("Wrong name or password.") == 1
    assert client.get("/").status_code == 302


def test_session_cookie_flags_and_a_new_session_at_login(viewer):
    _state, app = viewer
    client = ViewerClient(app)
    client.get("/login")
    before = client.cookie().value
    answer = client.login(*CLINICIAN)
    header = answer.headers["Set-Cookie"]
    assert "Secure" in header and "HttpOnly" in header and "SameSite=Strict" in header
    assert client.cookie().value != before
    assert client.get("/").status_code == 200


def test_logout_ends_the_session_on_the_box(viewer):
    state, app = viewer
    client = ViewerClient(app)
    client.login(*CLINICIAN)
    stolen = client.cookie().value
    assert client.get("/logout").status_code == 405  # GET cannot log anyone out
    assert client.post("/logout").location.endswith("/login")
    replay = ViewerClient(app)
    replay.client.set_cookie("clinibox_session", stolen, domain="localhost")
    assert replay.get("/").status_code == 302
    conn = db.connect(state.config.database_path)
    assert conn.execute("SELECT COUNT(*) FROM web_sessions").fetchone()[0] == 0
    conn.close()


def test_idle_and_old_sessions_expire(viewer):
    state, app = viewer
    client = ViewerClient(app)
    client.login(*CLINICIAN)
    conn = db.connect(state.config.database_path)
    idle = state.config.web.session_idle_minutes * 60
    conn.execute("UPDATE web_sessions SET last_seen = last_seen - ?", (idle + 5,))
    assert client.get("/").status_code == 302
    client.login(*CLINICIAN)
    age = state.config.web.session_max_hours * 3600
    conn.execute("UPDATE web_sessions SET created_at = created_at - ?", (age + 5,))
    assert client.get("/").status_code == 302
    conn.close()


@pytest.mark.slow
def test_login_failures_slow_the_address_down_but_never_lock(viewer):
    state, app = viewer
    free = state.config.web.login_free_failures
    client = ViewerClient(app)
    for _ in range(free):
        assert client.login(CLINICIAN[0], "wrong-password!").status_code == 401
    blocked = client.login(*CLINICIAN)  # even the right password waits, from this address
    assert blocked.status_code == 429
    assert re.search(r"Wait \d+ seconds", blocked.get_data(as_text=True))
    assert int(blocked.headers["Retry-After"]) >= 1
    # the delay is per account and address: other accounts from here are not held up yet
    assert client.login(TECHNICIAN[0], TECHNICIAN[1]).status_code == 302
    conn = db.connect(state.config.database_path)
    conn.execute("UPDATE login_failures SET at = at - 3")  # the 2 s delay has passed
    conn.close()
    assert ViewerClient(app).login(*CLINICIAN).status_code == 302


def test_an_attacker_elsewhere_cannot_lock_the_user_out(viewer):
    state, app = viewer
    client = ViewerClient(app)
    for _ in range(state.config.web.login_free_failures + 3):
        client.post("/login", {"name": TECHNICIAN[0], "password": "wrong-password!"},
                    environ_base={"REMOTE_ADDR": "10.0.0.66"})
    attacker = client.post("/login", {"name": TECHNICIAN[0], "password": TECHNICIAN[1]},
                           environ_base={"REMOTE_ADDR": "10.0.0.66"})
    assert attacker.status_code == 429
    user = ViewerClient(app).post("/login", {"name": TECHNICIAN[0], "password": TECHNICIAN[1]},
                                  environ_base={"REMOTE_ADDR": "10.0.0.7"})
    assert user.status_code == 302


def test_the_throttle_delays_grow_and_are_capped(tmp_path):
    conn = db.open_database(tmp_path / "t.db")
    throttle = LoginThrottle(conn, free_per_account=2, free_per_address=5, max_delay=16)
    now = 1_000_000.0
    waits = []
    for _ in range(8):
        wait = throttle.wait_seconds("nurse", "10.0.0.9", now)
        waits.append(wait)
        now += wait
        throttle.record_failure("nurse", "10.0.0.9", now)
    assert waits[:2] == [0.0, 0.0]
    assert waits[2:] == [2.0, 4.0, 8.0, 16.0, 16.0, 16.0]
    assert throttle.wait_seconds("nurse", "10.0.0.10", now) == 0.0  # another computer
    # one address trying many names is slowed after free_per_address failures in all
    for n in range(5):
        throttle.record_failure(f"name-{n}", "10.0.0.11", now)
    assert throttle.wait_seconds("someone-else", "10.0.0.11", now) == 2.0
    assert throttle.wait_seconds("nurse", "10.0.0.9", now + 3601) == 0.0  # the window ends
    conn.close()


def test_forms_need_a_csrf_token_and_a_same_origin_referer(viewer):
    state, app = viewer
    client = ViewerClient(app)
    assert client.post("/login", {"name": CLINICIAN[0], "password": CLINICIAN[1]},
                       token="").status_code == 400
    assert client.post("/login", {"name": CLINICIAN[0], "password": CLINICIAN[1]},
                       token="forged").status_code == 400
    assert client.post("/login", {"name": CLINICIAN[0], "password": CLINICIAN[1]},
                       referer="https://evil.example/").status_code == 400
    assert client.post("/login", {"name": CLINICIAN[0], "password": CLINICIAN[1]},
                       referer=None).status_code == 400
    assert client.login(*CLINICIAN).status_code == 302
    instance = state.instances["alert"]
    assert client.post(f"/instance/{instance}/feedback", {"finding": 0, "verdict": "agree"},
                       referer="https://evil.example/").status_code == 400


def test_security_headers_on_pages_images_and_errors(viewer):
    state, app = viewer
    client = ViewerClient(app)
    client.login(*TECHNICIAN)
    for url in ("/login", "/", f"/study/{state.studies['alert']}", "/device",
                f"/instance/{state.instances['alert']}/frame/0.png", "/no-such-page"):
        headers = client.get(url).headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp, url
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, url
        assert "frame-ancestors 'none'" in csp, url
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-store", url
        assert "max-age" in headers["Strict-Transport-Security"]


def test_pages_have_no_inline_script_or_style_and_nothing_from_outside():
    for path in page_sources():
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), path
        assert " style=" not in text and "<style" not in text, path
        assert not re.search(r"\son[a-z]+=", text), path  # no inline event handlers
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), path


def test_login_page_says_how_to_make_the_first_account(tmp_path):
    config = Config(storage=StorageConfig(state_dir=str(tmp_path / "state")))
    client = ViewerClient(create_app(config))
    page = client.get("/login").get_data(as_text=True)
    assert "No accounts exist yet" in page
    assert "clinibox user add NAME --role technician" in page
    assert client.login("admin", "admin").status_code == 401  # no default account


def test_requests_are_bounded(viewer):
    _state, app = viewer
    client = ViewerClient(app)
    big = client.post("/login", {"name": "x" * 100_000, "password": "y"})
    assert big.status_code == 413


def test_session_secret_is_private_and_kept(viewer):
    state, _app = viewer
    secret = state.config.keys_dir / "web-session.secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    before = secret.read_bytes()
    create_app(state.config)
    assert secret.read_bytes() == before and len(before) == 32
