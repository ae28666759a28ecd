"""The console's pages as a radiologist and the hospital's IT read them: the box's words
(verdicts with their months, classes, percentages), delivery in honest words, the box's
state from its silence, warnings, filters, audit words, drift, and huge numbers."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from central import labels
from central_console import charts, queries
from clinibox_common.contracts.downlink import VERDICTS, verdict_words
from clinibox_common.i18n import formats, use_locale
from firmware_app.words import labels as viewer_labels
from tests.unit.central_console import test_console_web as base
from tests.unit.central_console.test_console_web import (
    ADMIN,
    RADIOLOGIST,
    _alert,
    _box,
    _client,
    _clinic,
    _db,
)
from tests.web_client import csrf_token

#: the console over a fresh SQLite store (``test_console_web``'s fixture)
console = base.console


def test_a_verdict_reads_the_same_on_the_box_and_in_the_console():
    for language in ("en", "zh_CN"):
        with use_locale(language):
            for word in VERDICTS:
                for months in (None, 1, 6):
                    assert labels.verdict(word, months) == viewer_labels.hospital_verdict(
                        word, months) == verdict_words(word, months)
    with use_locale("en"):
        assert verdict_words("follow_up", 6) == "follow up in 6 months"
        assert verdict_words("follow_up", 1) == "follow up in 1 month"
        assert verdict_words("refer") == "refer the patient"
    with use_locale("zh_CN"):
        assert "6" in verdict_words("follow_up", 6) and "follow" not in verdict_words(
            "follow_up", 6)


def test_percent_never_rounds_up_to_certainty_nor_down_to_none():
    with use_locale("en"):
        assert formats.percent(0.9995) == "> 99 %" and formats.percent(1.0) == "100 %"
        assert formats.percent(0.003) == "< 1 %" and formats.percent(0.0) == "0 %"
        assert formats.percent(0.87) == "87 %"
    with use_locale("zh_CN"):
        assert formats.percent(0.9995) == ">99%" and formats.percent(0.87) == "87%"


def test_delivery_says_where_a_verdict_stands_in_three_honest_cases():
    key_box = {"downlink_key": "k", "downlink_seq": None}
    waiting = {"seq": 1, "sent_at": None}
    assert queries.delivery(waiting, key_box, stale=False, resend_before=0) == "queued"
    assert queries.delivery(waiting, key_box, stale=True, resend_before=0) == "waiting"
    assert queries.delivery(waiting, {"downlink_key": None}, stale=False,
                            resend_before=0) == "no_key"
    sent = {"seq": 1, "sent_at": 1000.0}
    assert queries.delivery(sent, key_box, stale=False, resend_before=900.0) == "sent"
    assert queries.delivery(sent, key_box, stale=False, resend_before=1100.0) == "unconfirmed"
    assert queries.delivery(sent, {"downlink_key": "k", "downlink_seq": 1}, stale=True,
                            resend_before=1100.0) == "confirmed"
    with use_locale("en"):
        assert labels.delivery("unconfirmed") == "sent, not yet confirmed by the box"
        assert "tell the clinic by phone" in labels.delivery("no_key")


def _downlink(app: Any, alert_id: int, seq: int, *, sent_at: float | None = None,
              months: int | None = None, verdict: str = "refer") -> None:
    payload = {"verdict": verdict, **({"follow_up_months": months} if months else {})}
    with _db(app).transaction(write=True) as tx:
        tx.execute("INSERT INTO downlinks (clinic, device, seq, alert_id, kind, payload,"
                   " created_at, sent_at, attempts) VALUES ('c1', 'b1', ?, ?, 'review', ?, ?, ?,"
                   " 0)", (seq, alert_id, json.dumps(payload), time.time() - 3600, sent_at))


def test_an_alerts_downlinks_are_the_newest_twenty_in_order(console):
    alert_id = _alert(console, "c1", "b1", 1)
    for seq in range(1, 26):
        _downlink(console, alert_id, seq)
    shown = queries.downlinks(_db(console), "c1", "b1", alert_id)
    assert [row["seq"] for row in shown] == list(range(6, 26))


def test_huge_numbers_are_never_a_server_error(console):
    radiologist = _client(console, RADIOLOGIST)
    huge = 2**70
    assert radiologist.get(f"/alerts?page={huge}").status_code == 200
    assert radiologist.get(f"/alerts/{huge}").status_code == 404
    assert radiologist.get(f"/api/alerts/latest?after={huge}").status_code == 200
    admin = _client(console, ADMIN)
    for path in (f"/fleet?page={huge}", f"/audit?page={huge}"):
        assert admin.get(path).status_code == 200, path


def _drift_point(app: Any, seq: int, at: float, psi_conf: float, *, drift: int = 1) -> None:
    with _db(app).transaction(write=True) as tx:
        tx.execute("INSERT INTO drift_points (clinic, device, seq, model, at, psi_confidence,"
                   " psi_intensity, disagree_rate, reviews, drift) VALUES"
                   " ('c1', 'b1', ?, 'chest-v1', ?, ?, 0.01, 0.05, 12, ?)",
                   (seq, at, psi_conf, drift))


def test_a_far_future_drift_point_and_own_thresholds_on_the_charts(console):
    _box(console, "c1", "b1", last_seen=time.time(), drift=1)
    _drift_point(console, 1, 1_700_000_000, 0.01)
    _drift_point(console, 2, 1_700_003_600, 0.4)
    _drift_point(console, 3, 2**40 - 1, 0.02)  # a box's clock in the year 36812
    page = _client(console, ADMIN).get("/fleet/c1/b1")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) == 3
    # the box is drifting, but only the point over its own chart's threshold is red
    assert svgs[0].count('class="point marked"') == 1
    assert 'class="point marked"' not in svgs[1] and 'class="point marked"' not in svgs[2]
    assert "red point: over the threshold" in html


def test_chart_ticks_are_round_numbers():
    svg = charts.line_chart("t", [(1.0, 0.05, False), (2.0, 0.15, False)], threshold=0.1,
                            threshold_label="x", first_label="", last_label="",
                            empty_label="")
    ticks = re.findall(r'class="tick">([0-9.e-]+)<', svg)
    assert ticks == ["0", "0.1", "0.2"]


def test_worklist_shows_the_boxs_words_and_fits_selects_for_clinic_and_model(console):
    _clinic(console, "c1", "Hexi clinic", "Xinhe")
    reviewed = _alert(console, "c1", "box-north", 1, score=0.9995, state="reviewed")
    with _db(console).transaction(write=True) as tx:
        tx.execute("UPDATE alerts SET verdict = 'follow_up', follow_up_months = 6 WHERE id = ?",
                   (reviewed,))
    _alert(console, "c1", "box-south", 2, model="clinibox-demo-lesion@1.0.0")
    _box(console, "c1", "box-north", last_seen=time.time())
    client = _client(console, RADIOLOGIST)
    html = client.get("/alerts?state=all").get_data(as_text=True)
    assert "follow up in 6 months" in html and "&gt; 99 %" in html
    assert re.search(r'<select name="clinic"[^>]*>.*?<option value="c1">Hexi clinic · Xinhe',
                     html, flags=re.S)
    assert re.search(r'<select name="model"[^>]*>.*?<option value="chest-v1"', html, re.S)
    assert 'class="badge demo"' in html and "table-wrap" in html
    # the start of a box's id is enough, and % is taken literally
    assert len(re.findall(r"data-alert-id=", client.get(
        "/alerts?state=all&box=box-n").get_data(as_text=True))) == 1
    assert len(re.findall(r"data-alert-id=", client.get(
        "/alerts?state=all&box=%25").get_data(as_text=True))) == 0
    console.config["CONSOLE"].config.web.language = "zh_CN"
    chinese = client.get("/alerts?state=all").get_data(as_text=True)
    assert "结节" in chinese and ">nodule<" not in chinese


def test_a_reviewed_alert_hides_its_form_and_a_colleague_is_named(console):
    alert_id = _alert(console, "c1", "b1", 1, state="under_review")
    with _db(console).transaction(write=True) as tx:
        tx.execute("UPDATE alerts SET opened_by = 'rad2', opened_at = ? WHERE id = ?",
                   (time.time(), alert_id))
    client = _client(console, RADIOLOGIST)
    html = client.get(f"/alerts/{alert_id}").get_data(as_text=True)
    assert 'id="colleague"' in html and "rad2 started reviewing this alert" in html
    assert "<details" not in html
    with _db(console).transaction(write=True) as tx:
        tx.execute("UPDATE alerts SET state = 'reviewed', verdict = 'follow_up',"
                   " follow_up_months = 3, reviewed_by = 'rad2', reviewed_at = ? WHERE id = ?",
                   (time.time(), alert_id))
    html = client.get(f"/alerts/{alert_id}").get_data(as_text=True)
    assert 'id="colleague"' not in html and "follow up in 3 months" in html
    assert re.search(r'<details class="change">\s*<summary id="change-verdict">Change the '
                     r'verdict</summary>', html)
    assert html.index("<details") < html.index('id="review"')
    fresh = _alert(console, "c1", "b1", 2)
    admin_view = _client(console, ADMIN).get(f"/alerts/{fresh}").get_data(as_text=True)
    assert "not reviewed yet (only radiologists give verdicts)" in admin_view


def test_a_verdict_waiting_for_a_box_without_key_tells_to_phone(console):
    alert_id = _alert(console, "c1", "b1", 1)
    _box(console, "c1", "b1", last_seen=time.time())
    _downlink(console, alert_id, 1, verdict="follow_up", months=6)
    html = _client(console, RADIOLOGIST).get(f"/alerts/{alert_id}").get_data(as_text=True)
    assert "tell the clinic by phone" in html and "follow up in 6 months" in html


def _set_box(app: Any, device: str, **values: Any) -> None:
    with _db(app).transaction(write=True) as tx:
        for column, value in values.items():
            tx.execute(f"UPDATE box_state SET {column} = ? WHERE device = ?", (value, device))


def test_fleet_and_box_pages_say_state_events_and_warnings_in_words(console):
    now = time.time()
    _box(console, "c1", "fresh", last_seen=now)
    _box(console, "c1", "silent", last_seen=now - 100_000)
    _set_box(console, "fresh", state="heartbeat", queue_depth=900, disk_used_pct=95.0,
             software="1.2.0", last_event="model_rolled_back", last_event_reason="load_failed",
             last_event_at=now)
    _set_box(console, "silent", state="heartbeat")
    admin = _client(console, ADMIN)
    html = admin.get("/fleet").get_data(as_text=True)
    silent = html[html.index('data-box="c1/silent"'):html.index('data-box="c1/fresh"')]
    fresh = html[html.index('data-box="c1/fresh"'):]
    assert "out of contact" in silent and "heartbeat" not in silent and "online" not in silent
    assert "online" in fresh and "heartbeat" not in fresh
    assert "queue backlog" in fresh and "disk nearly full" in fresh
    assert "model rolled back (load failed)" in fresh and "software 1.2.0" in fresh
    assert "queue backlog" not in silent
    only = admin.get("/fleet?health=queue").get_data(as_text=True)
    assert re.findall(r'data-box="([^"]+)"', only) == ["c1/fresh"]
    ok = admin.get("/fleet?health=ok").get_data(as_text=True)
    assert re.findall(r'data-box="([^"]+)"', ok) == []
    page = admin.get("/fleet/c1/fresh").get_data(as_text=True)
    assert re.search(r'id="box-state">\s*online', page)
    assert "Software version" in page and "model rolled back (load failed)" in page
    assert "waiting for a model" not in page
    # a box that runs no model says so, and why, on the fleet and its own page
    _set_box(console, "silent", waiting_for_model="signature")
    html = admin.get("/fleet").get_data(as_text=True)
    silent = html[html.index('data-box="c1/silent"'):html.index('data-box="c1/fresh"')]
    assert 'id="waiting-c1-silent"' in silent and "bad signature" in silent
    assert "waiting for a model" not in html[html.index('data-box="c1/fresh"'):]
    page = admin.get("/fleet/c1/silent").get_data(as_text=True)
    assert 'id="waiting-for-model"' in page and "bad signature" in page


def test_the_audit_trail_reads_in_words_and_links_the_alert(console):
    alert_id = _alert(console, "c1", "b1", 1)
    client = _client(console, RADIOLOGIST)
    page = client.get(f"/alerts/{alert_id}").get_data(as_text=True)
    assert client.post(f"/alerts/{alert_id}", {"verdict": "no_action"},
                       token=csrf_token(page)).status_code == 302
    html = _client(console, ADMIN).get("/audit").get_data(as_text=True)
    assert "review started" in html and "verdict given" in html
    assert "no action needed" in html and "server command line" in html
    assert f'href="/alerts/{alert_id}"' in html
    assert ">alert_opened<" not in html and ">cli<" not in html


def test_the_drift_page_shows_thresholds_and_marks_values_over_them(console):
    _box(console, "c1", "b1", last_seen=time.time(), drift=1)
    _set_box(console, "b1", model="clinibox-demo-lesion@1.0.0", psi_confidence=0.4,
             psi_intensity=0.01, disagree_rate=0.05)
    html = _client(console, ADMIN).get("/drift").get_data(as_text=True)
    assert "(threshold 0.25)" in html and "(threshold 20 %)" in html
    assert html.count("over the threshold") == 1 and '<strong class="over">0.4' in html
    assert "5 %" in html and "Demonstration model" in html


def _flashed(client: Any, path: str) -> str:
    html = client.get(path).get_data(as_text=True)
    found = re.search(r'class="flash"[^>]*>(.*?)</div>', html, flags=re.S)
    assert found is not None, html[:2000]
    return found.group(1)


def test_a_verdict_for_a_box_without_key_says_to_phone_before_and_after(console):
    mute = _alert(console, "c1", "old", 1)
    _box(console, "c1", "old", last_seen=time.time())  # software too old: no downlink key
    keyed = _alert(console, "c1", "new", 1)
    _box(console, "c1", "new", last_seen=time.time(), downlink_key="k")
    client = _client(console, RADIOLOGIST)
    for alert_id, can_receive in ((mute, False), (keyed, True)):
        page = client.get(f"/alerts/{alert_id}").get_data(as_text=True)
        assert ('id="no-key-warning"' in page) is not can_receive
        if not can_receive:  # the warning stands above the form, before the verdict
            assert page.index('id="no-key-warning"') < page.index('id="review"')
            assert "This box cannot receive verdicts" in page
        assert client.post(f"/alerts/{alert_id}", {"verdict": "refer"},
                           token=csrf_token(page)).status_code == 302
        flashed = _flashed(client, f"/alerts/{alert_id}")
        assert "Verdict recorded: refer the patient." in flashed
        assert ("It goes to the box." in flashed) is can_receive
        assert ("This box cannot receive it: tell the clinic by phone." in flashed) \
            is not can_receive


def test_the_review_form_warns_against_identifiers_in_the_note(console):
    alert_id = _alert(console, "c1", "b1", 1)
    html = _client(console, RADIOLOGIST).get(f"/alerts/{alert_id}").get_data(as_text=True)
    hint = html.index('id="note-hint"')
    assert html.index('id="note"') < hint < html.index('id="submit-review"')
    assert "Do not write the patient" in html and "the note goes to the clinic" in html
    # the whole image's probability in the study page's own sentence, with the threshold
    assert "Whole image: 80 %, the most suspicious of 1 image analysed" in html
    assert "alert threshold 50 %" in html


def test_a_follow_ups_months_stay_in_the_audit_detail_and_old_rows_still_read(console):
    alert_id = _alert(console, "c1", "b1", 1)
    client = _client(console, RADIOLOGIST)
    page = client.get(f"/alerts/{alert_id}").get_data(as_text=True)
    assert client.post(f"/alerts/{alert_id}", {"verdict": "follow_up", "months": "6"},
                       token=csrf_token(page)).status_code == 302
    html = _client(console, ADMIN).get("/audit").get_data(as_text=True)
    assert 'class="detail">follow up in 6 months<' in html and "follow_up:6" not in html
    with use_locale("en"):
        assert labels.detail("alert_reviewed", "follow_up") == "follow up"  # an old row
        assert labels.detail("alert_reviewed", "refer") == "refer the patient"
        assert labels.detail("alert_reviewed", "follow_up:x") == "follow up"


def test_one_word_for_a_silent_box_and_the_readers_brackets_around_a_reason():
    with use_locale("en"):
        silent = labels.box_state("heartbeat", True)
        assert labels.delivery("waiting") == f"waiting: the box is {silent}"
        assert labels.event("model_rolled_back", "load_failed") == \
            "model rolled back (load failed)"
        assert labels.event("service_failed") == "service failure"


def test_disk_and_disagreement_are_in_the_scores_percent_format(console):
    _box(console, "c1", "b1", last_seen=time.time(), drift=1)
    _drift_point(console, 1, 1_700_000_000, 0.01)
    _drift_point(console, 2, 1_700_003_600, 0.4)
    for language in ("en", "zh_CN"):
        with use_locale(language):
            assert labels.disk(60.0) == formats.percent(0.6) and labels.disk(None) == "–"
    with use_locale("zh_CN"):
        assert labels.disk(60.4) == "60%"
    admin = _client(console, ADMIN)
    assert '<td class="number disk">41 %' in admin.get("/fleet").get_data(as_text=True)
    html = admin.get("/fleet/c1/b1").get_data(as_text=True)
    assert '<dd id="disk">41 %' in html
    psi_conf, _psi_int, disagree = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    ticks = re.findall(r'class="tick">([^<]+)<', disagree)[:-2]  # less the two dates
    assert ticks[:3] == ["0 %", "10 %", "20 %"] and all(t.endswith(" %") for t in ticks)
    assert "threshold 20 %" in disagree
    assert "%" not in "".join(re.findall(r'class="tick">([^<]+)<', psi_conf))
    assert "threshold 0.25" in psi_conf


def test_a_table_with_the_demo_model_says_what_demo_means(console):
    _alert(console, "c1", "b1", 1)
    radiologist = _client(console, RADIOLOGIST)
    assert 'id="demo-legend"' not in radiologist.get("/alerts").get_data(as_text=True)
    _alert(console, "c1", "b1", 2, model="clinibox-demo-lesion@1.0.0")
    html = radiologist.get("/alerts").get_data(as_text=True)
    legend = html.index('id="demo-legend"')
    assert legend < html.index('id="alerts"')
    assert "Demonstration model: trained on procedurally generated phantoms" in html[legend:]
    _box(console, "c1", "b1", last_seen=time.time())
    _set_box(console, "b1", model="clinibox-demo-lesion@1.0.0")
    fleet = _client(console, ADMIN).get("/fleet").get_data(as_text=True)
    assert fleet.index('id="demo-legend"') < fleet.index('id="fleet"')


def test_the_box_page_says_which_finding_threshold_the_box_uses_and_why(console):
    """A box's status says its threshold; the box page says it in words, in both languages."""
    from clinibox_common.contracts.envelope import Header
    from tests.telemetry_payloads import status_payload

    store = console.config["CONSOLE"].store
    _box(console, "c1", "own", last_seen=time.time())
    _box(console, "c1", "plain", last_seen=time.time())
    threshold = {"finding": 0.0412, "package": 0.1293, "state": "calibrated", "lesions": 24,
                 "clear": 31}
    store.store(Header("c1", "own", "status", 1),
                status_payload("heartbeat", threshold=threshold), time.time())
    admin = _client(console, ADMIN)
    page = admin.get("/fleet/c1/own").get_data(as_text=True)
    said = re.search(r'id="finding-threshold">([^<]*)<', page)[1]
    assert "0.041, this clinic&#39;s own: set from 24 confirmed lesions and 31" in said
    assert "(the package&#39;s: 0.129)" in said
    plain = admin.get("/fleet/c1/plain").get_data(as_text=True)
    assert re.search(r'id="finding-threshold">–<', plain)  # an older box claims nothing
    console.config["CONSOLE"].config.web.language = "zh_CN"
    page = _client(console, ADMIN).get("/fleet/c1/own").get_data(as_text=True)
    said = re.search(r'id="finding-threshold">([^<]*)<', page)[1]
    assert "0.041" in said and "24" in said and not re.search(r"[A-Za-z]{3,}", said)
