"""Issue 56 on the console: one box's flood cannot fill the worklist's page, and a box whose
messages wait in the receiver's intake beyond ``[receiver] flood_messages`` is marked on the
fleet page (a code in the data, words in the console's language)."""

from __future__ import annotations

import re
import time

from central.intake import Intake
from tests.unit.central_console.test_console_web import (
    ADMIN,
    RADIOLOGIST,
    _alert,
    _box,
    _client,
    _db,
    console,  # noqa: F401 (the pytest fixture)
)


def _row_ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-alert-id="(\d+)"', html)]


def test_one_box_cannot_fill_the_worklists_page(console):  # noqa: F811
    """Found by the red team: 60 flood alerts at score 1.0 pushed another clinic's alert off
    the first page. Now a box shows its first three, then one line with how many more."""
    flood = [_alert(console, "c1", "flood", seq, score=1.0, age_minutes=5 - seq / 100)
             for seq in range(1, 61)]
    real = _alert(console, "c2", "quiet", 1, score=0.7)
    client = _client(console, RADIOLOGIST)
    html = client.get("/alerts").get_data(as_text=True)
    assert _row_ids(html) == [*flood[:3], real]
    more = re.search(r'<tr class="box-more" data-more-from="c1/flood" data-count="(\d+)">'
                     r'.*?href="([^"]+)"[^>]*>([^<]+)</a>', html)
    assert more and more.group(1) == "57" and more.group(3) == "57 more alerts from box flood"
    whole = client.get(more.group(2).replace("&amp;", "&")).get_data(as_text=True)
    assert _row_ids(whole)[:50] == flood[:50] and "box-more" not in whole  # the box, whole
    console.config["CONSOLE"].config.web.language = "zh_CN"
    chinese = client.get("/alerts").get_data(as_text=True)
    line = re.search(r'data-more-from="c1/flood".*?<a [^>]*>([^<]+)</a>', chinese).group(1)
    assert "57" in line and "flood" in line and not re.search(r"more|alerts", line)


def test_the_poll_groups_a_boxs_new_alerts_too(console):  # noqa: F811
    before = _alert(console, "c2", "quiet", 1)
    flood = [_alert(console, "c1", "flood", seq, score=1.0) for seq in range(1, 41)]
    real = _alert(console, "c2", "quiet", 2, score=0.7)
    answer = _client(console, RADIOLOGIST).get(f"/api/alerts/latest?after={before}").get_json()
    assert answer["ids"] == [real, *reversed(flood[-3:])] and answer["count"] == 41
    assert 'data-more-from="c1/flood" data-count="37"' in answer["html"]


def test_a_flooding_box_is_marked_on_the_fleet_page(console):  # noqa: F811
    now = time.time()
    _box(console, "c1", "flood", last_seen=now)
    _box(console, "c2", "quiet", last_seen=now)
    held = Intake(_db(console), "central-1")
    held.put([("clinibox/c1/flood/alert", b"x", now)] * 201)
    held.put([("clinibox/c2/quiet/alert", b"x", now)] * 3)
    html = _client(console, ADMIN).get("/fleet").get_data(as_text=True)
    flood = html[html.index('data-box="c1/flood"'):html.index('data-box="c2/quiet"')]
    quiet = html[html.index('data-box="c2/quiet"'):]
    assert 'data-warn="flooding"' in flood and "flooding: 201 messages waiting" in flood
    assert "flooding" not in quiet
    console.config["CONSOLE"].config.web.language = "zh_CN"
    chinese = _client(console, ADMIN).get("/fleet").get_data(as_text=True)
    flood = chinese[chinese.index('data-box="c1/flood"'):chinese.index('data-box="c2/quiet"')]
    badge = re.search(r'data-warn="flooding" title="([^"]+)">([^<]+)<', flood)
    assert badge and "201" in badge.group(2)
    assert not re.search(r"[A-Za-z]{3,}", badge.group(1) + badge.group(2))  # all in Chinese
