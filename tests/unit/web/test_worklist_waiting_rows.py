"""While the box waits for a model, the worklist's badge "N waiting for a model" and its table
agree: the table of every study lists the images the badge counts (the first few, then a link
to the rest), for the day shown, and never says "Nothing here." under a badge counting some."""

from __future__ import annotations

import datetime as dt
import re

from firmware_app.storage import db, model_offers
from tests.viewer_state import CLINICIAN
from tests.web_client import ViewerClient
from web import views_clinic

BADGE = re.compile(r'<a class="pill waiting_for_model" href="([^"]+)">(\d+) waiting for a model<')
WAITING_ROW = re.compile(r'<tr class="row-waiting_for_model">\s*<td><span class="badge '
                         r'waiting_for_model">waiting for a model</span></td>\s*'
                         r'<td colspan="2" class="object">image (\d+) from')


def _execute(state, sql: str, *values) -> None:
    conn = db.connect(state.config.database_path)
    try:
        with db.transaction(conn):
            conn.execute(sql, values)
    finally:
        conn.close()


def _client(state, app) -> ViewerClient:
    conn = db.connect(state.config.database_path)
    try:
        with db.transaction(conn):
            model_offers.set_waiting(conn, "not_installed", "no model package found")
    finally:
        conn.close()
    client = ViewerClient(app)
    assert client.login(*CLINICIAN).status_code == 302
    return client


def _page(client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, path
    return response.get_data(as_text=True)


def test_a_day_with_only_images_waiting_lists_them_under_the_badge(viewer):
    state, app = viewer
    yesterday = dt.date.today() - dt.timedelta(days=1)
    noon = dt.datetime.combine(yesterday, dt.time(12)).timestamp()
    _execute(state, "UPDATE instances SET received_at = ? WHERE id = ?", noon,
             state.instances["waiting"])
    client = _client(state, app)
    for path in (f"/?day={yesterday.isoformat()}", f"/worklist/rows?day={yesterday.isoformat()}"):
        page = _page(client, path)
        badge = BADGE.search(page)
        assert badge and badge.group(2) == "1", path
        assert f"day={yesterday.isoformat()}" in badge.group(1)  # the badge opens that day
        assert WAITING_ROW.findall(page) == [str(state.instances["waiting"])], path
        assert "Nothing here" not in page, path
    today = _page(client, f"/?day={dt.date.today().isoformat()}")  # nothing waits today
    assert BADGE.search(today).group(2) == "0" and WAITING_ROW.findall(today) == []
    every_day = _page(client, "/")
    assert BADGE.search(every_day).group(2) == "1" and len(WAITING_ROW.findall(every_day)) == 1


def test_the_first_page_lists_the_first_images_waiting_and_links_to_the_rest(viewer,
                                                                            monkeypatch):
    state, app = viewer
    held = [state.instances[name] for name in ("waiting", "truncated", "nm")]
    _execute(state, "UPDATE instances SET status = 'queued' WHERE id IN (?, ?, ?)", *held)
    monkeypatch.setattr(views_clinic, "WAITING_SHOWN", 2)
    client = _client(state, app)
    page = _page(client, "/")
    badge = BADGE.search(page)
    assert badge and badge.group(2) == "3"
    listed = WAITING_ROW.findall(page)
    assert len(listed) == 2 and set(map(int, listed)) <= set(held)
    assert "and 1 more image waiting for a model: show them all" in page
    every = WAITING_ROW.findall(_page(client, "/?status=waiting"))
    assert sorted(map(int, every)) == sorted(held)  # the badge's link lists all three
    assert WAITING_ROW.findall(_page(client, "/?status=alert")) == []  # alerts only
    assert WAITING_ROW.findall(_page(client, "/?page=2")) == []
    # studies still follow, in clinical order
    assert f'href="/study/{state.studies["alert"]}"' in page


def test_no_waiting_rows_while_the_box_runs_a_model(viewer):
    _state, app = viewer
    client = ViewerClient(app)
    assert client.login(*CLINICIAN).status_code == 302
    page = _page(client, "/")
    assert "1 waiting for analysis" in page and WAITING_ROW.findall(page) == []
    assert 'class="row-waiting"' not in page
