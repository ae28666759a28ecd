"""The web foundations the viewer and the hospital's console share (webcore), on a tiny app.

The app below is built with webcore alone (no viewer, no database): what it gets is what
any clinibox web app gets from ``configure``, ``install_error_pages``, ``i18n.install``,
``pages.install`` and ``require_session``.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from pathlib import Path

import pytest
from cryptography import x509
from flask import Flask, abort, flash, g, render_template, request, session

import webcore.passwords as passwords_module
from clinibox_common.errors import EXIT_USAGE
from clinibox_common.i18n import N_
from tests.ports import HOST, free_port
from tests.web_client import BASE, csrf_token
from webcore import errors, i18n, login, pages, security, server, tls
from webcore.passwords import MAX_PASSWORD_LENGTH, check_password, hash_password
from webcore.sessions import TOUCH_SECONDS, SessionRule, new_token, token_hash
from webcore.throttle import THROTTLE_KEY_LENGTH, ThrottlePolicy, throttle_key


def tiny_app(folder: Path, language: str = "zh_CN") -> Flask:
    """A web app on webcore only, answering in ``language``."""
    templates, static = folder / "templates", folder / "static"
    templates.mkdir(parents=True)
    static.mkdir()
    (static / "app.css").write_text("body {}")
    (templates / "page.html").write_text(
        '<form method="post"><input name="csrf_token" value="{{ csrf_token() }}"></form>'
        "<p>{{ _('Please log in') }}</p>")
    (templates / "oops.html").write_text(
        '<html lang="{{ html_lang }}"><h1>{{ code }} {{ title }}</h1><p>{{ detail }}</p>')
    (templates / "parts.html").write_text(
        '{% from "webcore/page_parts.html" import language_switch, logout, flashed, login_card,'
        ' error_card, time_zone_line with context %}'
        "{{ language_switch('/language') }}{{ logout('/logout', {'name': 'ana'}, 'Admin', 'out') }}"
        "{{ flashed('flash') }}{{ login_card('/login', '/x', 'Wrong', 'No accounts', 'make one') }}"
        "{{ error_card('Gone', 'Nothing', '/', 'Back') }}{{ time_zone_line() }}")
    app = Flask("webcore_tiny", template_folder=str(templates), static_folder=str(static))
    security.configure(app, secret=security.session_secret(folder / "keys" / "cookie.secret"),
                       cookie_name="tiny_session", max_hours=2)
    i18n.install(app, lambda: language)
    pages.install(app)
    errors.install_error_pages(app, template="oops.html",
                               extra={410: (N_("Image deleted"), N_("There is nothing here."))})
    app.config["KEPT_LANGUAGES"] = kept = []
    public = {"page", "form", "gone", "static", "login", "enter", "language", "parts", "back"}
    app.before_request(lambda: security.require_session(
        lambda token: {"name": "ana"} if token == "live" else None, public,
        login_endpoint="login", file_suffixes=(".png",)))

    @app.route("/login", endpoint="login")
    def login_page() -> str:
        return "the login page"

    @app.route("/enter")
    def enter() -> str:
        session["token"] = request.args.get("token", "live")
        return "in"

    @app.route("/private")
    @app.route("/private.png", endpoint="private_png")
    @app.route("/api/private", endpoint="private_api")
    def private() -> str:
        return f"hello {g.account['name']}"

    @app.route("/language", methods=["POST"], endpoint="language")
    def switch() -> object:
        return i18n.switch_language(kept.append if request.args.get("account") else None,
                                    "page")

    @app.route("/parts")
    def parts() -> str:
        flash("saved")
        return render_template("parts.html")

    @app.route("/back")
    def back() -> str:
        return security.return_path(request.args.get("next", ""), "page")

    @app.route("/")
    def page() -> str:
        session["seen"] = True
        return render_template("page.html")

    @app.route("/form", methods=["POST"])
    def form() -> str:
        return "taken"

    @app.route("/gone")
    def gone() -> str:
        abort(410)

    return app


@pytest.fixture
def app(tmp_path) -> Flask:
    return tiny_app(tmp_path / "app")


# --- headers, cookies, CSRF, error pages, language -----------------------------------------

def test_every_answer_has_the_security_headers_and_pages_are_not_cached(app):
    client = app.test_client()
    page = client.get("/", base_url=BASE)
    assert page.status_code == 200
    for name, value in security.SECURITY_HEADERS.items():
        assert page.headers[name] == value
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    static = client.get("/static/app.css", base_url=BASE)
    assert static.status_code == 200
    assert static.headers["X-Frame-Options"] == "DENY"
    assert "no-store" not in static.headers.get("Cache-Control", "")


def test_the_session_cookie_is_secure_http_only_strict_and_bounded(app, tmp_path):
    cookie = app.test_client().get("/", base_url=BASE).headers["Set-Cookie"]
    assert cookie.startswith("tiny_session=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert app.config["PERMANENT_SESSION_LIFETIME"] == dt.timedelta(hours=2)
    assert app.config["WTF_CSRF_TIME_LIMIT"] == 7200
    assert app.config["MAX_CONTENT_LENGTH"] == 64 * 1024
    secret = tmp_path / "app" / "keys" / "cookie.secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert security.session_secret(secret) == app.config["SECRET_KEY"]  # kept across restarts


def test_a_post_without_a_csrf_token_is_refused_with_a_page_in_the_chosen_language(app):
    client = app.test_client()
    refused = client.post("/form", base_url=BASE, headers={"Referer": BASE + "/"})
    assert refused.status_code == 400
    text = refused.get_data(as_text=True)
    assert "表单已过期" in text and 'lang="zh-CN"' in text
    token = csrf_token(client.get("/", base_url=BASE).get_data(as_text=True))
    taken = client.post("/form", data={"csrf_token": token}, base_url=BASE,
                        headers={"Referer": BASE + "/"})
    assert taken.status_code == 200 and taken.get_data(as_text=True) == "taken"
    too_big = client.post("/form", data={"csrf_token": token, "x": "y" * 70_000},
                          base_url=BASE, headers={"Referer": BASE + "/"})
    assert too_big.status_code == 413


def test_error_pages_use_the_app_template_in_chinese_with_the_app_extras(app, tmp_path):
    client = app.test_client()
    missing = client.get("/nothing-here", base_url=BASE)
    assert missing.status_code == 404
    assert "404 找不到" in missing.get_data(as_text=True)
    assert "这里什么也没有。" in missing.get_data(as_text=True)
    assert "请登录" in client.get("/", base_url=BASE).get_data(as_text=True)  # templates' _()
    gone = client.get("/gone", base_url=BASE)
    assert gone.status_code == 410 and "410" in gone.get_data(as_text=True)
    english = tiny_app(tmp_path / "en", language="en").test_client().get("/x", base_url=BASE)
    assert "404 Not found" in english.get_data(as_text=True)
    assert 'lang="en"' in english.get_data(as_text=True)


def test_the_browser_language_is_the_first_the_catalog_has(app):
    with app.test_request_context("/", headers={"Accept-Language": "fr, zh-CN;q=0.8, en;q=0.5"}):
        assert i18n.browser_language() == "zh_CN"
    with app.test_request_context("/", headers={"Accept-Language": "fr, de"}):
        assert i18n.browser_language() is None


@pytest.mark.parametrize("target, expected", [
    ("/study/7?tab=a", "/study/7?tab=a"), ("//evil.example", None),
    ("https://evil.example/", None), ("/%2F%2Fevil.example", None), ("/\tx", None),
    ("/" + "a" * security.MAX_NEXT, None), ("", None),
])
def test_return_paths_stay_on_this_server(target, expected):
    assert security.same_origin_path(target) == expected


# --- the session check, return paths, the language -------------------------------------------

def test_without_a_live_session_pages_go_to_the_login_and_the_rest_is_401(app):
    client = app.test_client()
    page = client.get("/private?x=1", base_url=BASE)
    assert page.status_code == 302 and page.location == "/login?next=/private?x%3D1"
    assert client.get("/private.png", base_url=BASE).status_code == 401
    assert client.get("/api/private", base_url=BASE).status_code == 401
    assert client.get("/nothing-here", base_url=BASE).status_code == 404
    client.get("/enter?token=dead", base_url=BASE)
    assert client.get("/private", base_url=BASE).status_code == 302
    with client.session_transaction() as kept:
        assert "token" not in kept  # a dead token leaves the cookie
    client.get("/enter", base_url=BASE)
    live = client.get("/private", base_url=BASE)
    assert live.status_code == 200 and live.get_data(as_text=True) == "hello ana"


def test_a_return_path_is_this_servers_or_refused_in_neutral_words(tmp_path):
    client = tiny_app(tmp_path / "en", language="en").test_client()
    assert client.get("/back?next=/study/7", base_url=BASE).get_data(as_text=True) == "/study/7"
    assert client.get("/back", base_url=BASE).get_data(as_text=True) == "/"
    refused = client.get("/back?next=//evil.example", base_url=BASE)
    assert refused.status_code == 400
    assert "is not a page of this site." in refused.get_data(as_text=True)


def test_the_language_is_the_accounts_the_sessions_the_settings_the_browsers_or_english(app):
    with app.test_request_context("/", headers={"Accept-Language": "zh-CN"}):
        assert i18n.pick_language("en", "zh_CN", "zh_CN") == "en"
        assert i18n.pick_language(None, "en", "zh_CN") == "en"
        assert i18n.pick_language("", "zh-Hant", "en") == "en"  # Traditional: not a choice
        assert i18n.pick_language(None, None, None) == "zh_CN"
    with app.test_request_context("/", headers={"Accept-Language": "fr"}):
        assert i18n.pick_language(None, None, "") == "en"


def test_the_language_switch_keeps_the_choice_and_goes_back_to_a_page_here(app):
    client = app.test_client()
    token = csrf_token(client.get("/", base_url=BASE).get_data(as_text=True))
    headers = {"Referer": BASE + "/"}

    def switch(language: str, back: str, account: str = "") -> object:
        return client.post(f"/language?account={account}", base_url=BASE, headers=headers,
                           data={"csrf_token": token, "language": language, "next": back})

    answer = switch("en", "/parts?a=1")
    assert answer.status_code == 302 and answer.location == "/parts?a=1"
    with client.session_transaction() as kept:
        assert kept[i18n.SESSION_KEY] == "en"
    assert app.config["KEPT_LANGUAGES"] == []  # no account: the session only
    assert switch("zh_CN", "https://evil.example/", account="1").location == "/"
    assert app.config["KEPT_LANGUAGES"] == ["zh_CN"]
    assert switch("fr", "/").status_code == 400


# --- the shared page parts ------------------------------------------------------------------

def test_the_page_parts_come_from_webcore_behind_the_apps_own_templates(app, tmp_path):
    html = app.test_client().get("/parts", base_url=BASE).get_data(as_text=True)
    assert '<form class="language" method="post" action="/language" aria-label="语言">' in html
    assert ('id="language-zh_CN" class="chosen" aria-pressed="true">中文</button>' in html)
    assert 'name="next" value="/parts"' in html
    assert '<span translate="no">ana</span> (Admin)</span>' in html
    assert '<button type="submit" id="out">退出</button>' in html
    assert '<div class="flash" id="flash"><p>saved</p></div>' in html
    assert '<p class="hint">No accounts<br>' in html and '>make one</code>' in html
    assert '<p class="error" role="alert">Wrong</p>' in html
    assert '<input type="hidden" name="next" value="/x">' in html
    assert '<button type="submit" id="login">登录</button>' in html
    assert '<h1>Gone</h1>' in html and '<a href="/">Back</a>' in html
    assert '<p class="time-zone" id="time-zone">' in html
    mine = tiny_app(tmp_path / "own")
    own = Path(mine.template_folder) / "webcore" / "page_parts.html"
    own.parent.mkdir()
    own.write_text("{% macro language_switch(action) %}mine{% endmacro %}")
    with mine.test_request_context("/"):
        assert mine.jinja_env.get_template("webcore/page_parts.html").filename == str(own)


def test_the_time_zone_line_names_the_servers_zone_and_offset(monkeypatch):
    def zone(tz: str) -> tuple[str, str]:
        monkeypatch.setenv("TZ", tz)
        time.tzset()
        pages._zone_name.cache_clear()
        return pages.server_time_zone(dt.datetime(2026, 1, 15, 12, 0))

    try:
        assert zone("Asia/Shanghai") == ("Asia/Shanghai", "+08:00")
        assert zone(":/usr/share/zoneinfo/America/New_York") == ("America/New_York", "-05:00")
        assert zone("IST-5:30") == ("IST-5:30", "+05:30")
    finally:
        monkeypatch.undo()
        time.tzset()
        pages._zone_name.cache_clear()


# --- passwords, throttle, sessions ----------------------------------------------------------

def test_an_unknown_name_costs_one_check_against_the_dummy_hash_and_fails(monkeypatch):
    checked = []
    real_check = passwords_module.check_password_hash

    def counting_check(stored: str, password: str) -> bool:
        checked.append(stored)
        return real_check(stored, password)

    monkeypatch.setattr(passwords_module, "check_password_hash", counting_check)
    assert check_password(None, "correct horse battery") is False
    assert check_password(None, "another guess here") is False
    assert len(checked) == 2 and checked[0] == checked[1] and checked[0].startswith("scrypt:")
    stored = hash_password("correct horse battery")
    assert check_password(stored, "correct horse battery") is True
    assert check_password(stored, "correct horse batterY") is False
    checked.clear()
    assert check_password(stored, "x" * (MAX_PASSWORD_LENGTH + 1)) is False
    assert checked == []  # refused before hashing


def test_throttle_delays_double_after_the_free_failures_up_to_the_cap():
    policy = ThrottlePolicy(free_per_account=3, free_per_address=10, max_delay=16)
    assert policy.delay(2, 100.0, 3, now=100.0) == 0.0  # still free
    assert policy.delay(3, 100.0, 3, now=100.0) == 2.0
    assert policy.delay(4, 100.0, 3, now=101.0) == 3.0  # 4 s after the last, 1 s gone
    assert policy.delay(10, 100.0, 3, now=100.0) == 16.0  # capped
    assert policy.delay(3, 100.0, 3, now=200.0) == 0.0  # waited long enough
    assert policy.wait_seconds((3, 100.0), (0, None), now=100.0) == 2.0
    assert policy.wait_seconds((1, 100.0), (12, 100.0), now=100.0) == 8.0  # the address's
    assert policy.since(5000.0) == 5000.0 - 3600.0
    assert throttle_key("  Alice ") == "alice"
    assert len(throttle_key("x" * 1000)) == THROTTLE_KEY_LENGTH
    with pytest.raises(ValueError, match="free failures"):
        ThrottlePolicy(0, 10, 60)


def test_sessions_end_when_idle_or_too_old_and_are_touched_sparingly():
    rule = SessionRule(idle_seconds=600, max_seconds=3600)
    assert not rule.expired(created_at=0, last_seen=3000, now=3500)
    assert rule.expired(created_at=0, last_seen=3000, now=3601)  # absolute
    assert rule.expired(created_at=1000, last_seen=1000, now=1601)  # idle
    assert not rule.needs_touch(last_seen=100, now=100 + TOUCH_SECONDS)
    assert rule.needs_touch(last_seen=100, now=101 + TOUCH_SECONDS)
    assert rule.cutoffs(10_000) == (9_400, 6_400)
    token = new_token()
    assert len(token) >= 43 and new_token() != token
    assert token_hash(token) == token_hash(token) and len(token_hash(token)) == 64
    assert token not in token_hash(token)


# --- the login try ---------------------------------------------------------------------------

def test_a_login_try_is_throttled_checked_and_counted(app):
    failures: list[tuple[str, str]] = []
    checked: list[str] = []

    def authenticate(name: str, password: str) -> str | None:
        checked.append(name)
        return name if password == "right" else None

    def run(password: str, wait: float) -> login.LoginOutcome[str]:
        return login.attempt(name="alice", password=password, address="10.0.0.9",
                             throttle_wait=lambda _n, _a: wait,
                             record_failure=lambda n, a: failures.append((n, a)),
                             authenticate=authenticate)

    throttled = run("right", 2.5)
    assert throttled.throttled and throttled.account is None and checked == []
    assert throttled.status == 429 and throttled.retry_after == 3
    wrong = run("wrong", 0.0)
    assert wrong.account is None and wrong.status == 401
    assert failures == [("alice", "10.0.0.9")]
    right = run("right", 0.0)
    assert right.account == "alice" and right.status == 200 and right.message() is None
    assert failures == [("alice", "10.0.0.9")]  # a success is not counted
    with app.test_request_context("/"):  # the tiny app answers in Chinese
        assert throttled.message() == login.LoginOutcome(None, 3.0).message()
        assert "3" in throttled.message() and "Wait" not in throttled.message()
        assert wrong.message() not in (None, "Wrong name or password.")
        session["old"] = "fixated"
        session["language"] = "zh_CN"  # chosen before login; the account has its own
        login.begin_session("tok", "en", lambda _chosen: None)
        assert "old" not in session and session.permanent
        assert session["token"] == "tok" and session["language"] == "zh_CN"


# --- certificate and server -----------------------------------------------------------------

def test_the_certificate_is_made_once_or_must_exist_where_configured(tmp_path):
    cert, key = tmp_path / "tls" / "c.pem", tmp_path / "tls" / "k.pem"
    made = tls.ensure_certificate(cert, key, configured=False, setting="[web]",
                                  common_name="clinibox console")
    subject = x509.load_pem_x509_certificate(cert.read_bytes()).subject.rfc4514_string()
    assert subject.startswith("CN=clinibox console ")
    assert key.stat().st_mode & 0o777 == 0o600
    assert len(made[2].split(":")) == 32
    assert tls.ensure_certificate(cert, key, configured=False, setting="[web]") == made
    with pytest.raises(tls.CertificateError, match=r"\[web\] tls_cert/tls_key: .* does not"):
        tls.ensure_certificate(tmp_path / "none.pem", key, configured=True, setting="[web]")
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(tls.CertificateError, match="not a PEM certificate"):
        tls.ensure_certificate(tmp_path / "bad.pem", key, configured=True, setting="[web]")


def test_gunicorn_runs_one_threaded_worker_with_tls(tmp_path):
    options = server.gunicorn_options(bind="0.0.0.0:9443", threads=4, cert=tmp_path / "c.pem",
                                      key=tmp_path / "k.pem", loglevel="INFO",
                                      proc_name="clinibox-console")
    assert options["bind"] == "0.0.0.0:9443" and options["workers"] == 1
    assert options["worker_class"] == "gthread" and options["threads"] == 4
    assert options["certfile"].endswith("c.pem") and options["loglevel"] == "info"
    assert options["proc_name"] == "clinibox-console" and options["forwarded_allow_ips"] == ""
    assert options["control_socket_disable"] is True  # no ~/.gunicorn/gunicorn.ctl shared
    wsgi = server.WsgiServer(Flask("x"), options)
    assert wsgi.cfg.settings["threads"].value == 4 and wsgi.load() is wsgi.application
    assert wsgi.cfg.settings["control_socket_disable"].value is True


def test_a_port_already_taken_is_one_clear_error_before_serving():
    server.check_port(HOST, free_port())
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(server.PortError) as refused:
            server.check_port(HOST, port)
    assert refused.value.exit_status == EXIT_USAGE
    assert str(refused.value).startswith(f"port {port} is already in use ({HOST}:{port})")
    assert "[web] port" in str(refused.value)
    elsewhere = r"cannot listen on 192\.0\.2\.1:\d+: .*\[web\] host"
    with pytest.raises(server.PortError, match=elsewhere):
        server.check_port("192.0.2.1", free_port())  # not this machine's address
