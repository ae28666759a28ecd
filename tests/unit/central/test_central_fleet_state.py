"""box_state and drift_points, written with each stored message; rebuilt after a migration."""

from __future__ import annotations

import sqlite3

import pytest

from central.config import HealthConfig
from central.schema import VERSION
from central.store import Store
from clinibox_common.contracts import downlink
from clinibox_common.contracts.envelope import Header
from tests.telemetry_payloads import status_payload, summary_payload

NOW = 1_800_000_000.0
KEY = downlink.key_text(downlink.parse_key_text("CQ" + "A" * 41 + "="))  # u = 9


@pytest.fixture
def store(tmp_path):
    """A store whose drift windows are 2 summaries."""
    health = HealthConfig(baseline_summaries=2, recent_summaries=2)
    s = Store(f"sqlite:///{tmp_path}/db/central.db", health=health)
    yield s
    s.close()


def test_status_sets_state_keeps_the_downlink_key_and_the_audit_head(store):
    head = {"row": 12, "hash": "ab" * 32, "since_row": 12, "since_hash": "ab" * 32, "at": 5}
    store.store(Header("clinic-a", "box-1", "status", 1),
                status_payload(queue_depth=4, outbox_pending=2, downlink_key=KEY,
                               downlink_seq=3, audit=head), NOW)
    store.store(Header("clinic-a", "box-1", "status", 2), status_payload("offline"), NOW + 60)
    state = store.box_state("clinic-a", "box-1")
    assert (state["state"], state["state_at"], state["last_seen"]) == ("offline", NOW + 60,
                                                                        NOW + 60)
    assert (state["queue_depth"], state["outbox_pending"]) == (0, 0)
    assert (state["downlink_key"], state["downlink_seq"]) == (KEY, 3)  # kept when left out
    assert (state["audit_row"], state["audit_hash"], state["audit_verdict"]) == (
        12, "ab" * 32, "first")


def test_a_status_sets_the_runtime_and_its_fallback_and_the_console_says_so(store):
    from central import labels

    store.store(Header("clinic-a", "box-1", "status", 1),
                status_payload("heartbeat", runtime="openvino", runtime_fallback=1), NOW)
    state = store.box_state("clinic-a", "box-1")
    assert (state["runtime"], state["runtime_fallback"]) == ("openvino", 1)
    store.store(Header("clinic-a", "box-1", "status", 2), status_payload("heartbeat"), NOW + 5)
    state = store.box_state("clinic-a", "box-1")  # an older box says nothing: nothing claimed
    assert (state["runtime"], state["runtime_fallback"]) == (None, None)
    store.store(Header("clinic-a", "box-1", "status", 3),
                status_payload("heartbeat", runtime="onnxruntime", runtime_fallback=1), NOW + 9)
    state = store.box_state("clinic-a", "box-1")
    assert labels.runtime(state["runtime"], state["runtime_fallback"]).startswith(
        "onnxruntime (a fallback")
    assert labels.runtime("onnxruntime", 0) == "onnxruntime"
    assert labels.runtime(None, None) == "–"


def test_last_seen_never_goes_backwards_and_events_are_kept(store):
    store.store(Header("clinic-a", "box-1", "status", 2), status_payload(), NOW + 100)
    event = {"schema": 1, "created_at": int(NOW), "event": "rolled_back",
             "reason": "golden_cases_failed", "unit": "clinibox",
             "model": "clinibox-demo-lesion@1.0.0", "subject_model": "clinibox-demo-lesion@1.1.0"}
    store.store(Header("clinic-a", "box-1", "event", 1), event, NOW)  # arrives late
    state = store.box_state("clinic-a", "box-1")
    assert state["last_seen"] == NOW + 100
    assert (state["last_event"], state["last_event_reason"], state["last_event_at"]) == (
        "rolled_back", "golden_cases_failed", NOW)


def test_summaries_set_disk_and_append_drift_points(store):
    shifted = [1, 2, 4, 8, 10, 20, 30, 40, 50, 60]
    for seq in (1, 2, 3):
        store.store(Header("clinic-a", "box-1", "summary", seq), summary_payload(), NOW + seq)
    store.store(Header("clinic-a", "box-1", "summary", 4),
                summary_payload(confidence_histogram=shifted, disk_used_pct=93.0,
                                feedback={"agree": 2, "disagree": 10, "unsure": 0}), NOW + 4)
    with store.database.transaction(write=False) as tx:
        points = tx.execute("SELECT seq, psi_confidence, psi_intensity, disagree_rate, reviews,"
                            " drift FROM drift_points ORDER BY seq").fetchall()
    assert [p[0] for p in points] == [1, 2, 3, 4]
    # no whole baseline before the recent window yet (central.drift.windows): not compared
    assert points[0][1] is None and points[2][1] is None and points[0][5] == 0
    assert points[0][3] is None and points[0][4] == 0
    _seq, psi_confidence, psi_intensity, rate, reviews, drift = points[3]
    assert psi_confidence > 0.25 and psi_intensity == pytest.approx(0.0)
    assert (rate, reviews, drift) == (pytest.approx(10 / 12), 12, 1)
    state = store.box_state("clinic-a", "box-1")
    assert (state["disk_used_pct"], state["drift"]) == (93.0, 1)
    assert state["psi_confidence"] == pytest.approx(psi_confidence)


def test_a_version_3_database_gets_its_box_state(tmp_path):
    url = f"sqlite:///{tmp_path}/db/central.db"
    store = Store(url)
    store.store(Header("clinic-a", "box-1", "status", 1), status_payload(queue_depth=7), NOW)
    store.store(Header("clinic-a", "box-1", "summary", 2), summary_payload(), NOW + 5)
    store.close()
    conn = sqlite3.connect(tmp_path / "db" / "central.db")  # back to what version 3 had
    conn.execute("DELETE FROM box_state")
    conn.execute("UPDATE schema_version SET version = 3")
    conn.commit()
    conn.close()
    again = Store(url)
    assert again.migrated_from == 3
    [state] = again.box_states()
    # the queue of the message the box numbered last: the summary's, after the status
    assert (state["clinic"], state["state"], state["queue_depth"], state["last_seen"],
            state["disk_used_pct"], state["queue_seq"]) == ("clinic-a", "online", 0, NOW + 5,
                                                            41.5, 2)
    again.close()
    assert Store(url).migrated_from == VERSION


def test_each_figure_is_the_latest_the_box_measured_with_when_it_measured_it(store):
    made = int(NOW) - 180  # made three minutes before it arrived (it waited in the outbox)
    store.store(Header("clinic-a", "box-1", "summary", 5),
                summary_payload(created_at=made - 3000, queue_depth=6, disk_used_pct=73.2),
                NOW - 2000)
    head = {"row": 52, "hash": "ab" * 32, "since_row": 52, "since_hash": "ab" * 32, "at": 5}
    store.store(Header("clinic-a", "box-1", "status", 7),
                status_payload("heartbeat", created_at=made, queue_depth=0, audit=head), NOW)
    # a summary the box numbered before that heartbeat arrives late: its queue is older
    store.store(Header("clinic-a", "box-1", "summary", 6),
                summary_payload(created_at=made - 60, queue_depth=6), NOW + 1)
    state = store.box_state("clinic-a", "box-1")
    assert (state["queue_depth"], state["queue_at"], state["queue_seq"]) == (0, made, 7)
    assert state["audit_row"] == 52 and state["audit_at"] == made
    # the disk is the last summary's, as old as the box made it
    assert state["disk_at"] == made - 60
    # a box whose clock is a year ahead: its figures are as old as their arrival
    store.store(Header("clinic-a", "box-1", "status", 8),
                status_payload("heartbeat", created_at=int(NOW) + 86400 * 365, queue_depth=2),
                NOW + 10)
    state = store.box_state("clinic-a", "box-1")
    assert (state["queue_depth"], state["queue_at"]) == (2, NOW + 10)
    assert state["audit_row"] == 52 and state["audit_at"] == made  # kept: none reported


def test_clinics_are_named_and_refused_when_bad(store):
    store.set_clinic("clinic-a", "Town clinic", "North county")
    store.set_clinic("clinic-a", "Town clinic", "South county")
    assert store.clinics() == [{"clinic": "clinic-a", "name": "Town clinic",
                                "county": "South county"}]
    with pytest.raises(ValueError, match="clinic"):
        store.set_clinic("Clinic A", "x", "y")
    with pytest.raises(ValueError, match="county"):
        store.set_clinic("clinic-b", "x", "line\nbreak")


def test_cli_clinic_set_and_list(tmp_path, capsys):
    from clinibox import central_command as cli

    config = tmp_path / "central.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/db/central.db"\n')
    args = ["--config", str(config)]
    assert cli.main(["clinic", "set", "clinic-a", "--name", "镇卫生院", "--county", "北县",
                     *args]) == 0
    capsys.readouterr()
    assert cli.main(["clinic", "list", *args]) == 0
    assert "镇卫生院" in capsys.readouterr().out
