"""The hospital's report (health states, figures, table), its config and its command line."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import config as central_config
from central.config import HealthConfig
from central.report import build_report, format_duration, render_table
from central.store import Store
from clinibox import central_command as cli
from clinibox_common.contracts.envelope import Header
from tests.telemetry_payloads import alert_payload, public_pem, status_payload, summary_payload

NOW = 1_700_100_000.0
REVERSED = [1, 2, 4, 6, 8, 10, 20, 30, 40, 50]


class Fleet:
    """A store with enrolled devices and a helper to file their messages."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seq: dict[tuple[str, str], int] = {}

    def enrol(self, device: str, clinic: str = "clinic-a") -> None:
        self.store.enrol(clinic, device, public_pem(Ed25519PrivateKey.generate()), now=NOW - 1e5)

    def send(self, device: str, kind: str, payload: dict, ago: float = 60.0,
             clinic: str = "clinic-a") -> None:
        self.seq[clinic, device] = self.seq.get((clinic, device), 0) + 1
        header = Header(clinic, device, kind, self.seq[clinic, device])
        assert self.store.store(header, payload, NOW - ago)


@pytest.fixture
def fleet(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/central.db")
    yield Fleet(store)
    store.close()


def _row(rows: list[dict], device: str) -> dict:
    [row] = [r for r in rows if r["device"] == device]
    return row


def test_a_healthy_device_is_ok_with_its_latest_figures(fleet):
    fleet.enrol("box-1")
    fleet.send("box-1", "status", status_payload("online"), ago=3000)
    fleet.send("box-1", "summary", summary_payload(studies=3), ago=2000)
    fleet.send("box-1", "summary", summary_payload(studies=12, queue_depth=4), ago=120)
    fleet.send("box-1", "alert", alert_payload(), ago=100)
    fleet.send("box-1", "alert", alert_payload(), ago=90)
    fleet.store.review([fleet.store.alerts()[0]["id"]])
    row = _row(build_report(fleet.store, HealthConfig(), NOW), "box-1")
    assert (row["health"], row["state"], row["reasons"], row["drift"]) == ("ok", "online", [], [])
    assert (row["studies"], row["findings"], row["queue_depth"], row["disk_used_pct"]) == (
        12, 3, 4, 41.5)
    assert (row["latency_p90_ms"], row["quarantined"]) == (55.0, 0)
    assert (row["alerts_waiting"], row["alerts_total"]) == (1, 2)
    assert row["last_seen"] == NOW - 90
    assert row["model"] == "clinibox-demo-lesion@1.0.0"


def test_heartbeat_means_online_and_the_newest_model_is_shown(fleet):
    fleet.enrol("box-1")
    fleet.send("box-1", "status", status_payload("offline"))
    fleet.send("box-1", "status", status_payload("heartbeat", model="lesion-v2@2.0.0"))
    row = _row(build_report(fleet.store, HealthConfig(), NOW), "box-1")
    assert (row["state"], row["health"], row["model"]) == ("online", "ok", "lesion-v2@2.0.0")
    assert row["studies"] is None  # no summary yet


def test_a_box_that_said_offline_is_offline(fleet):
    fleet.enrol("box-1")
    fleet.send("box-1", "summary", summary_payload(disk_used_pct=99.0))
    fleet.send("box-1", "status", status_payload("offline"), ago=30)
    row = _row(build_report(fleet.store, HealthConfig(), NOW), "box-1")
    assert (row["health"], row["state"]) == ("offline", "offline")
    assert row["reasons"][0].startswith("the box said it was going offline")
    assert any("disk 99% full" in r for r in row["reasons"])  # still listed


def test_a_last_will_sealed_before_the_heartbeats_still_means_offline(fleet):
    fleet.enrol("box-1")
    fleet.send("box-1", "status", status_payload("online"), ago=600)
    will_seq = fleet.seq["clinic-a", "box-1"] + 1  # sealed at connect time, held by the broker
    fleet.seq["clinic-a", "box-1"] += 1
    fleet.send("box-1", "status", status_payload("heartbeat"), ago=300)
    fleet.store.store(Header("clinic-a", "box-1", "status", will_seq),
                      status_payload("offline"), NOW - 30)  # the box vanished
    row = _row(build_report(fleet.store, HealthConfig(), NOW), "box-1")
    assert (row["state"], row["health"]) == ("offline", "offline")


def test_a_quiet_device_is_silent(fleet):
    fleet.enrol("box-1")
    fleet.enrol("box-2")
    fleet.send("box-1", "status", status_payload("online"), ago=4 * 3600 + 120)
    rows = build_report(fleet.store, HealthConfig(stale_seconds=900), NOW)
    assert _row(rows, "box-1")["health"] == "silent"
    assert _row(rows, "box-1")["reasons"] == ["no message for 4 h 2 min"]
    assert (_row(rows, "box-2")["health"], _row(rows, "box-2")["last_seen"]) == ("silent", None)
    assert _row(rows, "box-2")["reasons"] == ["never heard from since enrolment"]


def test_a_full_disk_a_long_queue_and_a_dropping_outbox_are_warnings(fleet):
    fleet.enrol("box-1")
    fleet.send("box-1", "summary", summary_payload(disk_used_pct=93.4, disk_free_mb=800,
                                                   queue_depth=750, outbox_dropped=3))
    row = _row(build_report(fleet.store, HealthConfig(), NOW), "box-1")
    assert row["health"] == "warning"
    assert row["reasons"] == ["disk 93% full (800 MB free)",
                              "750 objects waiting in the box's queue",
                              "the box's outbox dropped 3 messages"]


def test_drift_against_the_first_summaries_is_a_warning(fleet):
    health = HealthConfig(baseline_summaries=3, recent_summaries=2)
    fleet.enrol("box-1")
    for _ in range(3):
        fleet.send("box-1", "summary", summary_payload())
    fleet.send("box-1", "summary", summary_payload(confidence_histogram=REVERSED))
    # 4 summaries < 3 baseline + 2 recent: not enough history to judge yet
    assert _row(build_report(fleet.store, health, NOW), "box-1")["health"] == "ok"
    fleet.send("box-1", "summary", summary_payload(confidence_histogram=REVERSED))
    row = _row(build_report(fleet.store, health, NOW), "box-1")
    assert row["health"] == "warning"
    assert len(row["drift"]) == 1 and row["drift"][0].startswith("model confidence has shifted")
    assert row["reasons"] == row["drift"]


def test_a_new_model_starts_a_new_baseline(fleet):
    health = HealthConfig(baseline_summaries=1, recent_summaries=1)
    fleet.enrol("box-1")
    fleet.send("box-1", "summary", summary_payload())
    fleet.send("box-1", "summary", summary_payload(model="lesion-v2@2.0.0",
                                                   confidence_histogram=REVERSED))
    assert _row(build_report(fleet.store, health, NOW), "box-1")["drift"] == []


def _event(event: str, reason: str, model: str, subject: str, unit: str = "clinibox") -> dict:
    return {"schema": 1, "created_at": int(NOW - 300), "event": event, "reason": reason,
            "unit": unit, "model": model, "subject_model": subject}


def test_a_rollback_or_a_failed_service_is_a_warning_for_a_while(fleet):
    old, new = "clinibox-demo-lesion@1.0.0", "clinibox-demo-lesion@1.1.0"
    fleet.enrol("box-1")
    fleet.send("box-1", "status", status_payload("heartbeat"), ago=400)
    fleet.send("box-1", "event", _event("model_installed", "technician", new, new), ago=350)
    row = _row(build_report(fleet.store, HealthConfig(), NOW), "box-1")
    assert (row["health"], row["model"]) == ("ok", new)
    fleet.send("box-1", "event", _event("model_rolled_back", "worker_crashed", old, new), ago=300)
    row = _row(build_report(fleet.store, HealthConfig(), NOW), "box-1")
    assert row["health"] == "warning" and row["model"] == old
    assert row["reasons"] == [f"model {new} rolled back to {old} (worker crashed) at "
                              f"{row['reasons'][0].rsplit(' at ', 1)[1]}"]
    # three days later it is history, not a warning
    later = build_report(fleet.store, HealthConfig(stale_seconds=10**6), NOW + 73 * 3600)
    assert _row(later, "box-1")["reasons"] == []
    fleet.send("box-1", "event", _event("service_failed", "unit_failed", old, old,
                                        unit="clinibox-web"), ago=10)
    row = _row(build_report(fleet.store, HealthConfig(), NOW), "box-1")
    assert row["reasons"][0].startswith("service clinibox-web failed (unit failed) at ")


def test_a_routed_model_that_is_not_running_is_a_warning(fleet):
    running = "clinibox-demo-lesion@1.0.0"
    fleet.enrol("box-1")
    fleet.send("box-1", "status", status_payload("heartbeat"), ago=400)
    fleet.send("box-1", "event", _event("model_unavailable", "not_installed", running,
                                        "clinibox-demo-us"), ago=300)
    row = _row(build_report(fleet.store, HealthConfig(), NOW), "box-1")
    assert row["health"] == "warning" and row["model"] == running
    assert row["reasons"][0].startswith("model clinibox-demo-us named by the routing rules is "
                                        "not running (not installed) at ")


def test_a_revoked_device_is_shown_as_revoked(fleet):
    fleet.enrol("box-1")
    fleet.send("box-1", "status", status_payload())
    fleet.store.revoke("clinic-a", "box-1", now=NOW)
    row = _row(build_report(fleet.store, HealthConfig(), NOW), "box-1")
    assert row["health"] == "revoked" and row["reasons"][0].startswith("enrolment revoked on")


def test_two_clinics_box_1_are_two_rows_with_their_own_figures(fleet):
    for clinic in ("clinic-a", "clinic-b"):
        fleet.enrol("box-1", clinic)
    fleet.send("box-1", "summary", summary_payload(studies=3), clinic="clinic-a")
    fleet.send("box-1", "alert", alert_payload(), clinic="clinic-b", ago=5000)
    fleet.store.revoke("clinic-b", "box-1", now=NOW)
    first, second = build_report(fleet.store, HealthConfig(), NOW)
    assert (first["clinic"], first["health"], first["studies"], first["alerts_total"]) == (
        "clinic-a", "ok", 3, 0)
    assert (second["clinic"], second["health"], second["studies"], second["alerts_total"]) == (
        "clinic-b", "revoked", None, 1)


def test_rows_are_ordered_by_clinic_then_device(fleet):
    for clinic, device in [("clinic-b", "box-1"), ("clinic-a", "box-3"), ("clinic-a", "box-2")]:
        fleet.enrol(device, clinic)
    rows = build_report(fleet.store, HealthConfig(), NOW)
    assert [(r["clinic"], r["device"]) for r in rows] == [
        ("clinic-a", "box-2"), ("clinic-a", "box-3"), ("clinic-b", "box-1")]
    json.dumps(rows)  # the CLI's --json output must serialise


def test_the_table_is_aligned_and_lists_reasons_under_it(fleet):
    fleet.enrol("box-1")
    fleet.enrol("a-much-longer-device-name")
    fleet.send("box-1", "summary", summary_payload(disk_used_pct=95.0))
    text = render_table(build_report(fleet.store, HealthConfig(), NOW))
    lines = text.splitlines()
    heading, rule, first, second = lines[:4]
    assert heading.startswith("CLINIC") and set(rule) <= {"-", " "}
    column = heading.index("HEALTH")
    assert first[column:].startswith("silent") and second[column:].startswith("warning")
    assert heading.index("DISK %") + len("DISK %") == len(heading)
    assert second.endswith("95.0")
    assert "clinic-a/a-much-longer-device-name: never heard from since enrolment" in lines
    assert "clinic-a/box-1: disk 95% full (52000 MB free)" in lines
    assert lines[-1] == "1 silent, 1 warning (2 devices)"
    assert render_table([]).startswith("no devices enrolled")


@pytest.mark.parametrize(("seconds", "text"), [(5, "5 s"), (600, "10 min"), (7200, "2 h"),
                                               (90_000, "1 d 1 h"), (-3, "0 s")])
def test_durations_read_like_people_write_them(seconds, text):
    assert format_duration(seconds) == text


# -- configuration ------------------------------------------------------------

def test_the_config_defaults_and_a_file(tmp_path):
    default = central_config.load(None)
    assert (default.mqtt.port, default.mqtt.group, default.database.url) == (
        8883, "clinibox-central", "sqlite:///central.db")
    assert default.mqtt.resolved_client_id().startswith("central-")
    path = tmp_path / "central.toml"
    path.write_text('[database]\nurl = "postgresql://central@db:5432/clinibox"\n'
                    '[health]\nstale_seconds = 60\ndrift_psi = 0.1\n[mqtt]\nclient_id = "rx-1"\n')
    config = central_config.load(path)
    assert (config.health.stale_seconds, config.health.drift_psi) == (60, 0.1)
    assert central_config.database_kind(config.database.url) == "postgresql"
    assert config.mqtt.resolved_client_id() == "rx-1"


@pytest.mark.parametrize(("text", "message"), [
    ("[health]\ndrift_ps = 1\n", "unknown key [health] drift_ps (did you mean 'drift_psi'?)"),
    ("[halth]\n", "unknown section [halth] (did you mean 'health'?)"),
    ("[mqtt]\nport = 0\n", "[mqtt] port: must be between 1 and 65535, got 0"),
    ("[mqtt]\nport = \"x\"\n", "[mqtt] port: must be an integer"),
    ("[database]\nurl = \"mysql://db/x\"\n", "[database] url: must be sqlite:///PATH"),
    ("[mqtt]\ngroup = \"a/b\"\n", "[mqtt] group: must be a non-empty name"),
    ("[mqtt]\ncert_file = \"c.pem\"\n", "[mqtt] cert_file: a client certificate needs both"),
])
def test_bad_config_is_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "central.toml"
    path.write_text(text)
    with pytest.raises(central_config.ConfigError) as caught:
        central_config.load(path)
    assert str(caught.value).startswith(message)


# -- command line ----------------------------------------------------------------

@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "central.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/central.db"\n')
    return path


def test_enrol_report_alerts_review_revoke(tmp_path, config_file, capsys):
    key = Ed25519PrivateKey.generate()
    (tmp_path / "box.pub").write_text(public_pem(key))
    args = ["--config", str(config_file)]
    assert cli.main(["enrol", *args, "--clinic", "clinic-a", "--device", "box-1",
                     "--key", str(tmp_path / "box.pub")]) == 0
    assert capsys.readouterr().out.startswith("enrolled clinic-a/box-1 with key ")
    store = Store(f"sqlite:///{tmp_path}/central.db")
    for seq in (1, 2):
        store.store(Header("clinic-a", "box-1", "alert", seq), alert_payload(), NOW)
    store.close()

    assert cli.main(["report", *args, "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["device"], row["alerts_waiting"]) == ("box-1", 2)
    assert cli.main(["report", *args]) == 0
    assert "box-1" in capsys.readouterr().out

    assert cli.main(["alerts", *args, "--waiting", "--json"]) == 0
    ids = sorted(a["id"] for a in json.loads(capsys.readouterr().out))
    assert len(ids) == 2
    assert cli.main(["review", *args, str(ids[0])]) == 2  # a verdict is required
    capsys.readouterr()
    assert cli.main(["review", *args, "--verdict", "refer", "--note", "ward 3",
                     "--as", "dr-li", str(ids[0])]) == 0
    assert capsys.readouterr().out == "reviewed 1 alert: refer (sent back to the box)\n"
    assert cli.main(["alerts", *args, "--waiting"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 2 and listing[1].split()[0] == str(ids[1])
    assert cli.main(["alerts", *args]) == 0
    reviewed = next(line for line in capsys.readouterr().out.splitlines()
                    if line.split()[0] == str(ids[0]))
    assert "reviewed" in reviewed.split() and "refer" in reviewed.split()
    assert cli.main(["review", *args, "--verdict", "follow_up", str(ids[1])]) == 2
    assert "months" in capsys.readouterr().err
    assert cli.main(["review", *args, "--verdict", "follow_up", "--months", "6",
                     str(ids[1]), "4242"]) == 1
    assert "no such alert: 4242" in capsys.readouterr().err
    store = Store(f"sqlite:///{tmp_path}/central.db")
    assert [d["seq"] for d in store.downlinks("clinic-a", "box-1")] == [1, 2]
    assert store.alert(ids[1])["follow_up_months"] == 6
    store.close()

    assert cli.main(["revoke", *args, "--clinic", "clinic-b", "--device", "box-1"]) == 1
    assert "'clinic-b/box-1' is not enrolled" in capsys.readouterr().err
    assert cli.main(["revoke", *args, "--clinic", "clinic-a", "--device", "box-1"]) == 0
    assert capsys.readouterr().out.startswith("revoked clinic-a/box-1")


def test_cli_usage_and_config_errors_exit_2_with_one_line(tmp_path, config_file, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[health]\nstale_second = 5\n")
    assert cli.main(["report", "--config", str(bad)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "clinibox central: config error: unknown key [health] stale_second "
        "(did you mean 'stale_seconds'?)"]
    assert cli.main(["report", "--config", str(tmp_path / "missing.toml")]) == 2
    assert cli.main(["frobnicate"]) == 2
    assert cli.main(["serve", "--config", str(config_file)]) == 2
    assert "[keys] hospital_key" in capsys.readouterr().err
    (tmp_path / "box.pub").write_text(public_pem(Ed25519PrivateKey.generate()))
    assert cli.main(["enrol", "--config", str(config_file), "--clinic", "Clinic A",
                     "--device", "box-1", "--key", str(tmp_path / "box.pub")]) == 2
    assert "clinic must be 1-32 lower-case letters" in capsys.readouterr().err
    assert cli.main(["enrol", "--config", str(config_file), "--clinic", "clinic-a",
                     "--device", "box-1", "--key", str(tmp_path / "none.pub")]) == 2


def test_the_queue_is_the_one_the_box_reported_last_as_on_the_console(fleet):
    health = HealthConfig(queue_warn=5)
    fleet.enrol("box-1")
    fleet.send("box-1", "summary", summary_payload(queue_depth=6), ago=600)
    row = _row(build_report(fleet.store, health, NOW), "box-1")
    assert row["queue_depth"] == 6 and "6 objects waiting in the box's queue" in row["reasons"]
    # the box then analysed everything: its next heartbeat says so
    fleet.send("box-1", "status", status_payload("heartbeat", queue_depth=0), ago=60)
    row = _row(build_report(fleet.store, health, NOW), "box-1")
    assert row["queue_depth"] == 0 and row["health"] == "ok"
    assert fleet.store.box_state("clinic-a", "box-1")["queue_depth"] == row["queue_depth"]
