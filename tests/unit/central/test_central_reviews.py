"""Reviews at the hospital: states, verdicts, the downlink queued with each, the audit trail."""

from __future__ import annotations

import getpass
import json

import pytest

from central.reviews import ReviewError
from central.store import Store
from clinibox_common.contracts import downlink
from clinibox_common.contracts.envelope import Header
from tests.telemetry_payloads import alert_payload

NOW = 1_800_000_000.0


@pytest.fixture
def store(tmp_path):
    """A fresh store with two alerts of clinic-a/box-1 and one of clinic-b/box-1."""
    s = Store(f"sqlite:///{tmp_path}/db/central.db")
    s.store(Header("clinic-a", "box-1", "alert", 5), alert_payload(study_ref="a" * 32), NOW)
    s.store(Header("clinic-a", "box-1", "alert", 6), alert_payload(study_ref="b" * 32), NOW)
    s.store(Header("clinic-b", "box-1", "alert", 5), alert_payload(), NOW)
    yield s
    s.close()


def _ids(store: Store) -> dict[tuple[str, int], int]:
    return {(a["clinic"], a["seq"]): a["id"] for a in store.alerts()}


def test_open_moves_new_to_under_review_once(store):
    alert_id = _ids(store)[("clinic-a", 5)]
    assert store.alert(alert_id)["state"] == "new"
    assert store.open_alert(alert_id, "dr-li", now=NOW + 1) is True
    assert store.open_alert(alert_id, "dr-wang", now=NOW + 2) is False
    alert = store.alert(alert_id)
    assert (alert["state"], alert["opened_by"], alert["opened_at"]) == (
        "under_review", "dr-li", NOW + 1)


def test_review_sets_the_verdict_and_queues_a_checked_downlink(store):
    ids = _ids(store)
    alert = store.review_alert(ids[("clinic-a", 6)], "follow_up", "CT again", "dr-li",
                               follow_up_months=6, now=NOW + 60)
    assert (alert["state"], alert["verdict"], alert["follow_up_months"], alert["note"],
            alert["reviewed_by"], alert["reviewed_at"]) == (
        "reviewed", "follow_up", 6, "CT again", "dr-li", NOW + 60)
    [sent] = store.downlinks("clinic-a", "box-1")
    assert (sent["seq"], sent["kind"], sent["alert_id"], sent["sent_at"]) == (
        1, "review", ids[("clinic-a", 6)], None)
    assert sent["payload"] == downlink.review_payload(
        study_ref="b" * 32, alert_seq=6, verdict="follow_up", note="CT again",
        reviewed_at=NOW + 60, follow_up_months=6, created_at=NOW + 60)
    assert store.alerts(waiting=True) and ids[("clinic-a", 6)] not in {
        a["id"] for a in store.alerts(waiting=True)}


def test_sequence_numbers_are_per_box_and_a_second_review_amends(store):
    ids = _ids(store)
    store.review_alert(ids[("clinic-a", 5)], "refer", "", "dr-li", now=NOW)
    store.review_alert(ids[("clinic-b", 5)], "no_action", "", "dr-li", now=NOW)
    amended = store.review_alert(ids[("clinic-a", 5)], "send_case", "please", "dr-wang",
                                 now=NOW + 5)
    assert (amended["verdict"], amended["reviewed_by"]) == ("send_case", "dr-wang")
    assert [(d["seq"], d["payload"]["verdict"]) for d in store.downlinks("clinic-a", "box-1")
            ] == [(1, "refer"), (2, "send_case")]
    assert [d["seq"] for d in store.downlinks("clinic-b", "box-1")] == [1]


@pytest.mark.parametrize(("verdict", "note", "months", "word"), [
    ("maybe", "", None, "verdict"),
    ("refer", "x" * (downlink.MAX_NOTE + 1), None, "note"),
    ("refer", "bell\x07", None, "control"),
    ("follow_up", "", None, "months"),
    ("refer", "", 3, "months"),
    ("follow_up", "", downlink.MAX_FOLLOW_UP_MONTHS + 1, "months"),
])
def test_refused_reviews_change_nothing(store, verdict, note, months, word):
    alert_id = _ids(store)[("clinic-a", 5)]
    with pytest.raises(ReviewError, match=word):
        store.review_alert(alert_id, verdict, note, "dr-li", follow_up_months=months)
    assert store.alert(alert_id)["state"] == "new"
    assert store.downlinks("clinic-a", "box-1") == []


def test_unknown_alert_is_refused(store):
    with pytest.raises(ReviewError, match="no such alert"):
        store.review_alert(4242, "refer", "", "dr-li")
    assert isinstance(ReviewError("x"), ValueError)


def test_a_review_is_audited_in_its_transaction_and_audit_is_callable(store):
    alert_id = _ids(store)[("clinic-a", 5)]
    store.review_alert(alert_id, "refer", "", "dr-li", now=NOW, address="10.0.0.7")
    store.audit("admin", "10.0.0.8", "login", now=NOW + 1)
    with store.database.transaction(write=False) as tx:
        rows = tx.execute("SELECT at, account, address, action, target, detail"
                          " FROM console_audit ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [
        (NOW, "dr-li", "10.0.0.7", "alert_reviewed", f"alert:{alert_id}", "refer"),
        (NOW + 1, "admin", "10.0.0.8", "login", "", "")]


def test_a_follow_ups_audit_row_keeps_its_months(store):
    alert_id = _ids(store)[("clinic-a", 5)]
    store.review_alert(alert_id, "follow_up", "", "dr-li", follow_up_months=6, now=NOW)
    with store.database.transaction(write=False) as tx:
        (detail,) = tx.execute("SELECT detail FROM console_audit WHERE action ="
                               " 'alert_reviewed'").fetchone()
    assert detail == "follow_up:6"


def test_cli_review_defaults_to_the_unix_user(tmp_path, store, capsys):
    from clinibox import central_command as cli

    config = tmp_path / "central.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/db/central.db"\n')
    alert_id = _ids(store)[("clinic-a", 5)]
    assert cli.main(["review", "--config", str(config), "--verdict", "no_action",
                     str(alert_id)]) == 0
    assert store.alert(alert_id)["reviewed_by"] == f"cli:{getpass.getuser()}"
    assert cli.main(["alerts", "--config", str(config), "--json"]) == 0
    listed = {a["id"]: a for a in json.loads(capsys.readouterr().out.split("\n", 1)[1])}
    assert listed[alert_id]["verdict"] == "no_action"
