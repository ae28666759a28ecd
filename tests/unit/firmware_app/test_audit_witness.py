"""The audit trail witnessed off the box: the head in status heartbeats, the check against the
hospital's witness file (``clinibox audit --verify --witness``), and the rewrite it catches
that the chain alone cannot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clinibox.table import main
from clinibox_common.contracts.egress import EgressRefused, check_message
from firmware_app.storage import audit, audit_witness, db
from firmware_app.storage.audit_chain import verify
from firmware_app.storage.audit_schema import GENESIS_HASH, missing_triggers
from firmware_app.storage.audit_witness_check import (
    CUT_OFF,
    HASH_DIFFERS,
    PRUNED_EARLY,
    ROW_MISSING,
    BadWitnessFile,
    check_witness,
    parse_witness,
)
from firmware_app.storage.outbox import Outbox
from firmware_app.telemetry.messages import build_status
from tests.audit_trail_attack import MODEL, fill_trail, queue_heartbeat, rewrite_without

CLINIC, DEVICE = "clinic-a", "box-1"


def _witness_file(folder: Path, *heartbeats: dict) -> Path:
    """What ``clinibox central audit-heads --witness-file`` writes from these heartbeats."""
    heads = [{"row": h["audit"]["row"], "hash": h["audit"]["hash"], "seq": h["seq"],
              "received_at": h["created_at"], "at": h["audit"]["at"]} for h in heartbeats]
    path = folder / "witness.json"
    path.write_text(json.dumps({"clinic": CLINIC, "device": DEVICE, "heads": heads}))
    return path


def _config(folder: Path, state: Path, extra: str = "") -> str:
    path = folder / "box.toml"
    path.write_text(f'[storage]\nstate_dir = "{state.as_posix()}"\n'
                    f'[telemetry]\nclinic = "{CLINIC}"\ndevice = "{DEVICE}"\n{extra}')
    return str(path)


def test_the_first_heartbeat_witnesses_the_head_and_an_empty_trail_the_anchor(conn):
    first = queue_heartbeat(conn)["audit"]
    assert first == {"row": 0, "hash": GENESIS_HASH, "since_row": 0, "since_hash": GENESIS_HASH,
                     "at": 0}
    fill_trail(conn, 4)
    last = conn.execute("SELECT hash FROM audit WHERE id = 4").fetchone()[0]
    assert queue_heartbeat(conn)["audit"] == {"row": 4, "hash": last, "since_row": 0,
                                              "since_hash": GENESIS_HASH, "at": 1003}
    fill_trail(conn, 2, start=2_000.0)
    newest = conn.execute("SELECT hash FROM audit WHERE id = 6").fetchone()[0]
    assert queue_heartbeat(conn)["audit"] == {"row": 6, "hash": newest, "since_row": 4,
                                              "since_hash": last, "at": 2001}
    offline = build_status(conn, Outbox(conn, 100, {"lesion"}), MODEL, "offline", 1.0)
    assert "audit" not in offline  # the broker's last will is made long before it is sent


def test_a_heartbeat_never_sent_does_not_count_and_the_row_outlives_the_outbox(conn):
    fill_trail(conn, 2)
    assert queue_heartbeat(conn)["audit"]["row"] == 2
    fill_trail(conn, 2, start=2_000.0)
    unsent = queue_heartbeat(conn, sent=False)["audit"]  # superseded: the hospital never saw it
    assert (unsent["row"], unsent["since_row"]) == (4, 2)
    fill_trail(conn, 1, start=3_000.0)
    assert queue_heartbeat(conn)["audit"]["since_row"] == 2
    audit_witness.remember_acknowledged(conn)  # as the service does before each purge
    conn.execute("DELETE FROM outbox")  # purged after [telemetry] audit_days
    field = queue_heartbeat(conn)["audit"]
    assert (field["row"], field["since_row"]) == (5, 5)  # remembered in telemetry_state
    assert audit_witness.acknowledged_row(conn) == 5


def test_the_rewrite_the_chain_cannot_see_the_witness_and_the_next_heartbeat_show(
        conn, tmp_path):
    fill_trail(conn, 6)
    seen = queue_heartbeat(conn)
    assert seen["audit"]["row"] == 6
    witnessed_hash = seen["audit"]["hash"]
    witness = parse_witness(_witness_file(tmp_path, seen).read_bytes())
    assert check_witness(conn, witness).intact

    rewrite_without(conn, 3)
    check = verify(conn)
    assert check.intact and not missing_triggers(conn)  # honest: the chain alone checks
    assert audit_witness.head(conn)[0] == 5
    result = check_witness(conn, witness)
    assert (result.broken_at, result.reason) == (6, CUT_OFF)

    fill_trail(conn, 2, start=5_000.0)  # life goes on: rows 6 and 7 are new ones
    result = check_witness(conn, witness)
    assert (result.intact, result.broken_at, result.reason) == (False, 6, HASH_DIFFERS)
    assert result.witnessed_hash == witnessed_hash and result.chain_hash != witnessed_hash
    after = queue_heartbeat(conn)["audit"]
    assert after["since_row"] == 6 and after["since_hash"] != witnessed_hash


def test_a_heartbeat_after_its_witnessed_row_was_pruned_shows_a_gap(conn):
    fill_trail(conn, 3)
    assert queue_heartbeat(conn)["audit"]["row"] == 3
    fill_trail(conn, 3, start=100_000.0)
    assert audit.prune(conn, keep_days=1, now=100_000.0 + 0.5 * 86_400) == 3
    field = queue_heartbeat(conn)["audit"]  # row 3 is the anchor now: still witnessed
    assert (field["since_row"], field["row"]) == (3, 7)
    assert field["since_hash"] == audit_witness.hash_at(conn, 3)
    fill_trail(conn, 1, start=150_000.0)  # row 8, after the witnessed row 7
    fill_trail(conn, 2, start=300_000.0)
    assert audit.prune(conn, keep_days=1, now=300_000.0 + 0.5 * 86_400) == 5
    field = queue_heartbeat(conn)["audit"]  # row 7 is gone: the witness restarts at the head
    assert (field["since_row"], field["since_hash"]) == (field["row"], field["hash"]) == \
        (11, conn.execute("SELECT hash FROM audit WHERE id = 11").fetchone()[0])


def test_witnessed_rows_before_the_anchor_are_not_checkable_and_deleted_rows_are_found(
        conn, tmp_path):
    fill_trail(conn, 4)
    old = [queue_heartbeat(conn)]
    fill_trail(conn, 2, start=100_000.0)
    old.append(queue_heartbeat(conn))
    audit.prune(conn, keep_days=1, now=100_000.0 + 0.5 * 86_400)  # rows 1-4 go, anchor 4
    first = {**old[0], "audit": {**old[0]["audit"], "row": 2,
                                 "hash": "a" * 64}}  # a head older than the anchor
    witness = parse_witness(_witness_file(tmp_path, first, *old).read_bytes())
    result = check_witness(conn, witness)
    assert result.intact and (result.checked, result.pruned) == (2, 1)

    conn.execute("DROP TRIGGER audit_rows_are_only_pruned")
    conn.execute("DELETE FROM audit WHERE id = 6")
    result = check_witness(conn, witness)
    assert (result.broken_at, result.reason) == (6, ROW_MISSING)


def test_status_payloads_pass_the_gate_with_and_without_the_head_and_bad_ones_do_not(conn):
    fill_trail(conn, 2)
    payload = queue_heartbeat(conn)
    payload.pop("seq")
    check_message("status", payload, None)
    check_message("status", {k: v for k, v in payload.items() if k != "audit"}, None)
    good = payload["audit"]
    for bad in ({**good, "hash": good["hash"].upper()}, {**good, "since_hash": ""},
                {**good, "row": True}, {**good, "row": -1}, {**good, "since_row": 2**63},
                {**good, "extra": 1}, {k: v for k, v in good.items() if k != "since_row"},
                [good], {**good, "hash": good["hash"] + "\n"}):
        with pytest.raises(EgressRefused):
            check_message("status", {**payload, "audit": bad}, None)


@pytest.mark.parametrize("data", [
    b"not json", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000, b"[]", b"null",
    json.dumps({"clinic": CLINIC, "device": DEVICE}).encode(),
    json.dumps({"clinic": CLINIC, "device": DEVICE, "heads": [], "more": 1}).encode(),
    json.dumps({"clinic": "Clinic A", "device": DEVICE, "heads": []}).encode(),
    json.dumps({"clinic": CLINIC, "device": DEVICE, "heads": {}}).encode(),
    json.dumps({"clinic": CLINIC, "device": DEVICE, "heads": [
        {"row": "3", "hash": "a" * 64, "seq": 1, "received_at": 1}]}).encode(),
    json.dumps({"clinic": CLINIC, "device": DEVICE, "heads": [
        {"row": 3, "hash": "A" * 64, "seq": 1, "received_at": 1}]}).encode(),
    json.dumps({"clinic": CLINIC, "device": DEVICE, "heads": [
        {"row": 3, "hash": "a" * 64, "seq": 1, "received_at": [[[[1]]]]}]}).encode(),
    json.dumps({"clinic": CLINIC, "device": DEVICE, "heads": [
        {"row": 2**64, "hash": "a" * 64, "seq": 1, "received_at": 1}]}).encode(),
    b" " * (8 * 2**20 + 1),
])
def test_a_hostile_or_corrupt_witness_file_is_refused_clearly(data):
    with pytest.raises(BadWitnessFile, match="expected what clinibox central audit-heads"):
        parse_witness(data)


def test_clinibox_audit_verify_prints_the_head_and_checks_the_witness(tmp_path, capsys):
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    config = _config(tmp_path, state)
    conn = db.connect(state / "clinibox.db")
    db.initialise(conn)
    fill_trail(conn, 6)
    seen = queue_heartbeat(conn)
    witness = _witness_file(tmp_path, seen)
    assert main(["audit", "--verify", "--witness", str(witness), "--config", config]) == 0
    out = capsys.readouterr().out
    assert f"audit head: row 6, hash {seen['audit']['hash']}" in out
    assert "agrees with 1 head(s) the hospital saw" in out

    rewrite_without(conn, 3)
    fill_trail(conn, 2, start=5_000.0)
    conn.close()
    assert main(["audit", "--verify", "--config", config]) == 0  # the chain alone: intact
    assert "audit chain: intact" in capsys.readouterr().out
    assert main(["audit", "--verify", "--witness", str(witness), "--config", config]) == 1
    out = capsys.readouterr().out
    assert "witness: broken at row 6: the hospital saw another hash at this row" in out
    assert main(["audit", "--verify", "--json", "--witness", str(witness),
                 "--config", config]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["intact"] is False and result["witness"]["reason"] == HASH_DIFFERS
    assert result["head"]["row"] == 10  # each run above added its audit_viewed row

    witness.write_text("[" * 50_000)
    assert main(["audit", "--verify", "--witness", str(witness), "--config", config]) == 2
    err = capsys.readouterr().err
    assert "bad witness file" in err and "Traceback" not in err
    other = json.dumps({"clinic": CLINIC, "device": "box-2", "heads": []})
    witness.write_text(other)
    assert main(["audit", "--verify", "--witness", str(witness), "--config", config]) == 2
    assert "is for clinic-a/box-2, this box is clinic-a/box-1" in capsys.readouterr().err
    assert main(["audit", "--verify", "--witness", str(tmp_path / "none.json"),
                 "--config", config]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_clinibox_status_raises_the_audit_size_alarm(tmp_path, capsys):
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    conn = db.connect(state / "clinibox.db")
    db.initialise(conn)
    fill_trail(conn, 20)
    conn.close()
    assert main(["status", "--config", _config(tmp_path, state)]) == 0
    assert "audit trail takes about" not in capsys.readouterr().out
    tiny = _config(tmp_path, state, "[audit]\nmax_mb = 0.001\n")
    assert main(["status", "--config", tiny]) == 0
    out = capsys.readouterr().out
    assert "more than [audit] max_mb (0.001 MB)" in out and "shorter [audit] keep_days" in out
    assert "  clinibox audit --json > FILE\n  clinibox retention\n" in out
    assert main(["status", "--json", "--config", tiny]) == 0
    figures = json.loads(capsys.readouterr().out)["audit"]
    assert figures["over_limit"] is True and figures["rows"] == 20


def test_the_hospitals_witness_document_and_verdict_fit_the_box(conn):
    """The contract with ``central.audit_witness``: its file parses here, and the box's
    heartbeats get the verdicts they should there."""
    from central.audit_witness import (
        EXTENDS,
        FIRST,
        REWRITTEN,
        audit_head,
        verdict,
        witness_document,
    )

    fill_trail(conn, 6)
    first = queue_heartbeat(conn)
    fill_trail(conn, 1, start=2_000.0)
    second = queue_heartbeat(conn)
    heads = [{"row": h["audit"]["row"], "hash": h["audit"]["hash"], "seq": h["seq"],
              "received_at": 1.5e9} for h in (first, second)]
    document = json.dumps(witness_document(CLINIC, DEVICE, heads)).encode()
    assert check_witness(conn, parse_witness(document)).checked == 2
    heads_seen = [audit_head(h) for h in (first, second)]
    assert verdict(None, heads_seen[0]) == FIRST
    assert verdict((6, first["audit"]["hash"]), heads_seen[1]) == EXTENDS
    rewrite_without(conn, 3)
    fill_trail(conn, 3, start=5_000.0)
    third = audit_head(queue_heartbeat(conn))
    assert third is not None and verdict((7, second["audit"]["hash"]), third) == REWRITTEN


def _forge_prune(conn, through: int, digest: str) -> None:
    """The red team's attack: every row up to ``through`` deleted and the anchor moved onto
    it, as if the retention pass had pruned them (triggers left in place)."""
    conn.execute("UPDATE audit_anchor SET pruning = 1 WHERE id = 1")
    conn.execute("DELETE FROM audit WHERE id <= ?", (through,))
    conn.execute("UPDATE audit_anchor SET last_id = ?, last_hash = ?, pruning = 0 WHERE id = 1",
                 (through, digest))


def test_rows_deleted_from_the_front_dressed_up_as_pruning_show_against_the_witness(
        conn, tmp_path):
    """Rows the hospital saw written less than keep_days ago cannot have been pruned: the
    chain alone checks (the anchor moved onto the witnessed row), the witness does not."""
    now = 1_000_000_000.0
    fill_trail(conn, 6, start=now - 10 * 86400)  # ten days old
    first = queue_heartbeat(conn)
    fill_trail(conn, 4, start=now - 5 * 86400)
    second = queue_heartbeat(conn)
    row, digest = second["audit"]["row"], second["audit"]["hash"]
    assert second["audit"]["at"] == int(now - 5 * 86400 + 3)
    _forge_prune(conn, row, digest)
    assert verify(conn).intact
    witness = parse_witness(_witness_file(tmp_path, first, second).read_bytes())
    result = check_witness(conn, witness, keep_days=365, now=now)
    assert (result.intact, result.broken_at, result.reason) == (False, 6, PRUNED_EARLY)
    assert "deleted, not pruned" in result.describe()
    assert check_witness(conn, witness, keep_days=3, now=now).intact  # older: really prunable
    assert not check_witness(conn, witness, keep_days=0, now=now).intact  # 0: never pruned
