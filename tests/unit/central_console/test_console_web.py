"""The hospital's console (central_console): login, roles, worklist, poll, review, fleet, drift."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from central.config import CentralConfig
from central.store import Store
from central_console import charts
from central_console.accounts import ConsoleAccounts
from central_console.app import create_app
from tests.web_client import ViewerClient, csrf_token, page_sources

RADIOLOGIST = ("rad1", "Correct-Horse-91")
ADMIN = ("it1", "Battery-Staple-72")
COOKIE = "clinibox_console"


class ConsoleClient(ViewerClient):
    """The viewer's browser-like client, on the console's cookie and pages."""

    def token(self) -> str:
        """A CSRF token from the login page, or the worklist when logged in."""
        page = self.get("/login")
        if page.status_code == 302:
            page = self.get("/alerts")
        return csrf_token(page.get_data(as_text=True))


@pytest.fixture
def console(tmp_path) -> Any:
    """A console over a fresh SQLite store with one radiologist and one admin."""
    config = CentralConfig()
    config.database.url = f"sqlite:///{tmp_path}/db/central.db"
    config.web.state_dir = str(tmp_path / "state")
    config.web.login_free_failures = 2
    config.alerts.escalate_minutes = 30
    store = Store(config.database.url)
    accounts = ConsoleAccounts(store.database)
    accounts.add(*RADIOLOGIST, "radiologist")
    accounts.add(*ADMIN, "admin")
    app = create_app(config, store)
    yield app
    store.close()


def _client(app: Any, who: tuple[str, str] | None = None) -> ConsoleClient:
    client = ConsoleClient(app)
    if who:
        assert client.login(*who).status_code == 302
    return client


def _db(app: Any) -> Any:
    return app.config["CONSOLE"].store.database


def _clinic(app: Any, clinic: str, name: str, county: str) -> None:
    with _db(app).transaction(write=True) as tx:
        tx.execute("INSERT INTO clinics (clinic, name, county) VALUES (?, ?, ?)",
                   (clinic, name, county))


def _alert(app: Any, clinic: str, device: str, seq: int, *, score: float = 0.8,
           age_minutes: float = 1.0, model: str = "chest-v1", state: str = "new") -> int:
    now = time.time()
    with _db(app).transaction(write=True) as tx:
        tx.execute(
            "INSERT INTO alerts (clinic, device, seq, study_ref, finding, score, threshold,"
            " modality, model, instances, processing_ms, created_at, received_at, state)"
            " VALUES (?, ?, ?, ?, 'nodule', ?, 0.5, 'CR', ?, 1, 420.0, ?, ?, ?)",
            (clinic, device, seq, "a" * 32, score, model, int(now), now - age_minutes * 60,
             state))
        return int(tx.execute("SELECT MAX(id) FROM alerts").fetchone()[0])


def _box(app: Any, clinic: str, device: str, *, last_seen: float, drift: int = 0,
         downlink_key: str | None = None, downlink_seq: int | None = None) -> None:
    with _db(app).transaction(write=True) as tx:
        tx.execute("INSERT INTO box_state (clinic, device, last_seen, state, model, queue_depth,"
                   " disk_used_pct, drift, downlink_key, downlink_seq)"
                   " VALUES (?, ?, ?, 'ok', 'chest-v1', 3, 41.0, ?, ?, ?)",
                   (clinic, device, last_seen, drift, downlink_key, downlink_seq))


def _audit_actions(app: Any) -> list[tuple[str, str, str]]:
    with _db(app).transaction(write=False) as tx:
        return [tuple(r) for r in tx.execute(
            "SELECT account, action, target FROM console_audit ORDER BY id").fetchall()]


def _row_ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-alert-id="(\d+)"', html)]


def test_login_needs_csrf_and_starts_a_new_session_with_safe_cookies(console):
    client = ConsoleClient(console)
    page = client.get("/alerts")
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    refused = client.post("/login", {"name": RADIOLOGIST[0], "password": RADIOLOGIST[1]},
                          token="")
    assert refused.status_code == 400
    login_page = client.get("/login")
    csp = login_page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    before = client.cookie(COOKIE)
    answer = client.login(*RADIOLOGIST)
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/alerts")
    after = client.cookie(COOKIE)
    assert after is not None and (before is None or after.value != before.value)
    cookie = answer.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/alerts").status_code == 200
    assert ("rad1", "login", "account:rad1") in _audit_actions(console)


def test_failed_logins_are_throttled_and_audited(console):
    client = ConsoleClient(console)
    for _ in range(2):
        assert client.login(RADIOLOGIST[0], "wrong-password-1").status_code == 401
    throttled = client.login(*RADIOLOGIST)
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    actions = [a[1] for a in _audit_actions(console)]
    assert actions.count("login_failed") == 2 and "login_throttled" in actions


def test_logout_ends_the_session_on_the_server(console):
    client = _client(console, RADIOLOGIST)
    assert client.post("/logout").status_code == 302
    assert client.get("/alerts").status_code == 302
    assert ("rad1", "logout", "account:rad1") in _audit_actions(console)


@pytest.mark.smoke
def test_worklist_sorts_escalated_first_then_score_and_filters(console):
    _clinic(console, "c1", "Clinic One", "North")
    _clinic(console, "c2", "Clinic Two", "South")
    low_old = _alert(console, "c1", "b1", 1, score=0.6, age_minutes=90)
    high_new = _alert(console, "c1", "b1", 2, score=0.95)
    mid_new = _alert(console, "c2", "b9", 1, score=0.7, model="other")
    _alert(console, "c2", "b9", 2, score=0.99, state="reviewed")
    client = _client(console, RADIOLOGIST)
    html = client.get("/alerts").get_data(as_text=True)
    assert _row_ids(html) == [low_old, high_new, mid_new]
    row = html[html.index(f'data-alert-id="{low_old}"'):]
    assert "escalated" in row[:400]
    north = client.get("/alerts?county=North").get_data(as_text=True)
    assert _row_ids(north) == [low_old, high_new]
    assert _row_ids(client.get("/alerts?model=other").get_data(as_text=True)) == [mid_new]
    assert _row_ids(client.get("/alerts?box=b9&state=all").get_data(as_text=True))[0] == mid_new + 1
    for needed in ('id="alerts"', 'id="new-alerts"'):
        assert needed in html


def test_poll_returns_only_alerts_after_the_id(console):
    first = _alert(console, "c1", "b1", 1)
    client = _client(console, RADIOLOGIST)
    assert client.get(f"/api/alerts/latest?after={first}").get_json()["count"] == 0
    second = _alert(console, "c1", "b1", 2)
    other = _alert(console, "c2", "b2", 1)
    answer = client.get(f"/api/alerts/latest?after={first}&clinic=c1").get_json()
    assert answer["ids"] == [second] and answer["last"] == other
    assert f'data-alert-id="{second}"' in answer["html"]
    assert ConsoleClient(console).get("/api/alerts/latest?after=0").status_code == 401


def test_review_makes_a_downlink_and_an_audit_row(console):
    alert_id = _alert(console, "c1", "b1", 7)
    _box(console, "c1", "b1", last_seen=time.time(), downlink_key="k")
    client = _client(console, RADIOLOGIST)
    page = client.get(f"/alerts/{alert_id}").get_data(as_text=True)
    assert 'id="review"' in page and 'name="verdict"' in page and 'name="months"' in page
    assert ("rad1", "alert_opened", f"alert:{alert_id}") in _audit_actions(console)
    answer = client.post(f"/alerts/{alert_id}", {"verdict": "refer", "note": "urgent"},
                         token=csrf_token(page))
    assert answer.status_code == 302, answer.get_data(as_text=True)[-1500:]
    with _db(console).transaction(write=False) as tx:
        rows = tx.execute("SELECT seq, alert_id, kind FROM downlinks").fetchall()
        state = tx.execute("SELECT state, verdict FROM alerts WHERE id = ?",
                           (alert_id,)).fetchone()
    assert [tuple(r) for r in rows] == [(1, alert_id, "review")]
    assert tuple(state) == ("reviewed", "refer")
    assert ("rad1", "alert_reviewed", f"alert:{alert_id}") in _audit_actions(console)
    shown = client.get(f"/alerts/{alert_id}").get_data(as_text=True)
    # the box is in touch: the verdict goes out with the publisher's next round
    assert "refer the patient" in shown and "queued: goes out with the next send" in shown
    _box_seq(console, "c1", "b1", 1)
    assert "confirmed by the box" in client.get(f"/alerts/{alert_id}").get_data(as_text=True)


def _box_seq(app: Any, clinic: str, device: str, seq: int) -> None:
    with _db(app).transaction(write=True) as tx:
        tx.execute("UPDATE box_state SET downlink_seq = ? WHERE clinic = ? AND device = ?",
                   (seq, clinic, device))


@pytest.mark.parametrize(("form", "reason"), [
    ({"verdict": "maybe"}, "Choose a verdict."),
    ({"verdict": "no_action", "note": "x" * 257}, "The note is longer than 256 characters."),
    ({"verdict": "follow_up", "months": "0"}, "A follow-up needs a number of months"),
])
def test_a_bad_review_is_refused_with_the_reason(console, form, reason):
    alert_id = _alert(console, "c1", "b1", 1)
    client = _client(console, RADIOLOGIST)
    page = client.get(f"/alerts/{alert_id}").get_data(as_text=True)
    answer = client.post(f"/alerts/{alert_id}", form, token=csrf_token(page))
    assert answer.status_code == 400 and reason in answer.get_data(as_text=True)
    with _db(console).transaction(write=False) as tx:
        assert tx.execute("SELECT COUNT(*) FROM downlinks").fetchone()[0] == 0


def test_admin_reads_but_cannot_review_and_radiologist_has_no_fleet(console):
    alert_id = _alert(console, "c1", "b1", 1)
    admin = _client(console, ADMIN)
    page = admin.get(f"/alerts/{alert_id}").get_data(as_text=True)
    assert 'id="review"' not in page
    answer = admin.post(f"/alerts/{alert_id}", {"verdict": "refer"}, token=csrf_token(page))
    assert answer.status_code == 403
    with _db(console).transaction(write=False) as tx:
        assert tx.execute("SELECT state FROM alerts").fetchone()[0] == "new"
    radiologist = _client(console, RADIOLOGIST)
    for path in ("/fleet", "/drift", "/audit", "/users"):
        assert radiologist.get(path).status_code == 403
        assert admin.get(path).status_code == 200


def test_fleet_highlights_stale_boxes_first_and_paginates(console):
    now = time.time()
    for n in range(120):
        _box(console, "c1", f"box-{n:03d}", last_seen=now - (5000 if n == 77 else n))
    admin = _client(console, ADMIN)
    html = admin.get("/fleet").get_data(as_text=True)
    rows = re.findall(r'<tr data-box="([^"]+)"( class="stale")?', html)
    assert len(rows) == 100 and rows[0] == ("c1/box-077", ' class="stale"')
    assert all(stale == "" for _, stale in rows[1:])
    assert "page 1 of 2 (120)" in html
    second = admin.get("/fleet?page=2").get_data(as_text=True)
    assert len(re.findall(r"<tr data-box=", second)) == 20
    stale = admin.get("/fleet?health=stale").get_data(as_text=True)
    assert re.findall(r'data-box="([^"]+)"', stale) == ["c1/box-077"]


def test_drift_chart_has_the_points_and_the_drift_page_links_the_box(console):
    _box(console, "c1", "b1", last_seen=time.time(), drift=1)
    with _db(console).transaction(write=True) as tx:
        for seq, psi in enumerate((0.05, 0.1, 0.4), start=1):
            tx.execute("INSERT INTO drift_points (clinic, device, seq, model, at, psi_confidence,"
                       " psi_intensity, disagree_rate, reviews, drift) VALUES"
                       " ('c1', 'b1', ?, 'chest-v1', ?, ?, 0.02, 0.1, 12, ?)",
                       (seq, 1_700_000_000 + seq * 3600, psi, int(psi > 0.25)))
    admin = _client(console, ADMIN)
    page = admin.get("/fleet/c1/b1").get_data(as_text=True)
    assert page.count("<svg") == 3
    assert 'data-value="0.4"' in page and 'class="point marked"' in page
    assert 'class="threshold"' in page
    assert "/fleet/c1/b1" in admin.get("/drift").get_data(as_text=True)


def test_line_chart_without_points_says_so():
    svg = charts.line_chart("t", [(1.0, None, False)], threshold=0.25, threshold_label="x",
                            first_label="", last_label="", empty_label="No figures yet.")
    assert "No figures yet." in svg and "<circle" not in svg


@pytest.mark.slow
def test_chinese_pages_have_no_english_leftovers(console):
    from tests.i18n_text import catalog_sentences, english_sentences, is_chinese, visible_text

    console.config["CONSOLE"].config.web.language = "zh_CN"
    alert_id = _alert(console, "c1", "b1", 1, age_minutes=90)
    pages = {"radiologist": ["/alerts", f"/alerts/{alert_id}"],
             "admin": ["/fleet", "/fleet/c1/b1", "/drift", "/audit", "/users", "/alerts"]}
    for who, paths in (("radiologist", pages["radiologist"]), ("admin", pages["admin"])):
        client = _client(console, RADIOLOGIST if who == "radiologist" else ADMIN)
        for path in paths:
            html = client.get(path).get_data(as_text=True)
            assert 'lang="zh-CN"' in html, path
            text = visible_text(html)
            assert is_chinese(text), path
            assert catalog_sentences(text) == [], (path, catalog_sentences(text))
            assert english_sentences(text) == [], (path, english_sentences(text))


def test_templates_have_no_inline_script_or_style():
    templates = page_sources()
    assert len(templates) >= 10
    for path in templates:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), path
        assert " style=" not in text and "<style" not in text, path


def test_an_alert_page_shows_each_lesions_growth_since_the_earlier_study(console):
    from clinibox_common.contracts.envelope import Header
    from tests.telemetry_payloads import alert_payload

    store = console.config["CONSOLE"].store
    lesions = [{"label": "lesion", "score": 0.9, "size_mm": 15.0, "growth_pct": 25.0},
               {"label": "lesion", "score": 0.6, "size_mm": 4.0}]  # not compared
    assert store.store(Header("c1", "b1", "alert", 7),
                       alert_payload(assessment="finding", lesions=lesions), time.time())
    with _db(console).transaction(write=False) as tx:
        (alert_id,) = tx.execute("SELECT id FROM alerts ORDER BY seq DESC").fetchone()
    client = _client(console, RADIOLOGIST)
    page = client.get(f"/alerts/{alert_id}").get_data(as_text=True)
    table = page[page.index('id="lesions"'):page.index("</table>", page.index('id="lesions"'))]
    assert "Change since the earlier study" in table
    rows = re.findall(r"<tr><td[^>]*>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>",
                      table)
    assert rows == [("lesion", "15.0 mm", "90 %", "+25 %"), ("lesion", "4.0 mm", "60 %", "–")]
    console.config["CONSOLE"].config.web.language = "zh_CN"
    chinese = client.get(f"/alerts/{alert_id}").get_data(as_text=True)
    assert "+25%" in chinese and "Change since" not in chinese


def test_an_alert_page_shows_the_assessment_and_lesions_the_box_sent(console):
    from clinibox_common.contracts.envelope import Header
    from tests.telemetry_payloads import alert_payload

    store = console.config["CONSOLE"].store
    lesions = [{"label": "lesion", "score": 0.912, "size_mm": 12.34},
               {"label": "lesion", "score": 0.61}]  # no calibration: no size
    assert store.store(Header("c1", "b1", "alert", 4),
                       alert_payload(assessment="finding", lesions=lesions), time.time())
    assert store.store(Header("c1", "b1", "alert", 5), alert_payload(), time.time())
    with _db(console).transaction(write=False) as tx:
        new, old = (r[0] for r in tx.execute("SELECT id FROM alerts ORDER BY seq").fetchall())
    client = _client(console, RADIOLOGIST)
    page = client.get(f"/alerts/{new}").get_data(as_text=True)
    assert re.search(r'id="assessment">\s*finding\s*<', page)
    table = page[page.index('id="lesions"'):page.index("</table>", page.index('id="lesions"'))]
    rows = re.findall(r"<tr><td[^>]*>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", table)
    assert rows == [("lesion", "12.3 mm", "91 %"), ("lesion", "no calibration", "61 %")]
    # an older box's alert carries neither: no assessment, no table
    older = client.get(f"/alerts/{old}").get_data(as_text=True)
    assert 'id="lesions"' not in older and 'id="assessment"' not in older
    console.config["CONSOLE"].config.web.language = "zh_CN"
    chinese = client.get(f"/alerts/{new}").get_data(as_text=True)
    assert re.search(r'id="assessment">\s*异常\s*<', chinese) and "12.3 mm" in chinese
    assert re.search(r'id="finding">\s*病灶\s*<', chinese) and "91%" in chinese
