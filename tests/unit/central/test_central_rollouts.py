"""The hospital's rollouts (``central/rollouts.py``): the package checked as a box would, the
waves, the steps boxes report, pausing, resuming and rolling back — on a real SQLite store
(PostgreSQL runs the same SQL in ``tests/integration/test_rollouts_e2e.py``).

The package is a real signed copy of the demo package in the one archive format.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from central import rollouts
from central.store import Store
from clinibox_common.contracts import downlink, signing
from clinibox_common.contracts.envelope import Header
from clinibox_common.contracts.package_archive import pack
from tests.model_packages import make_package
from tests.telemetry_payloads import Box, alert_payload, hospital_keys, status_payload

NOW = 1_800_000_000.0
BOXES = [("clinic-a", "box-1"), ("clinic-a", "box-2"), ("clinic-b", "box-1")]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    """The hospital's model-signing key pair (private, public) as PEM files."""
    folder = tmp_path_factory.mktemp("keys")
    signing.generate_key_pair(folder / "h.pem", folder / "h.pub")
    return folder / "h.pem", folder / "h.pub"


@pytest.fixture(scope="module")
def archive(tmp_path_factory, keys) -> Path:
    folder = tmp_path_factory.mktemp("package")
    root = make_package(folder / "p", "1.1.0", key=keys[0])
    return pack(root, folder / "clinibox-demo-lesion-1.1.0.tar.gz").path


@pytest.fixture(name="store")
def enrolled_store(store_url) -> Store:
    """The hospital's store with the three boxes enrolled."""
    s = Store(store_url)
    public = hospital_keys()[1]
    for clinic, device in BOXES:
        s.enrol(clinic, device, Box(clinic, device, public).pem)
    yield s
    s.close()


def start(store: Store, archive: Path, keys, **options) -> int:
    package = rollouts.check_package(archive, [keys[1]])
    settings = {"canary": 1, "wave_size": 10, "pause_on_failure": False, "chunk_kib": 64,
                **options}
    with store.database.transaction(write=True) as tx:
        return rollouts.create(tx, package, BOXES, by="admin", now=NOW, **settings)


def event(store: Store, box: tuple[str, str], seq: int, **payload) -> None:
    """A device event from ``box``, stored by the receiver's store (``fleet.record`` notes the
    rollout step in the same transaction)."""
    body = {"schema": 1, "created_at": int(NOW), "unit": "clinibox",
            "subject_model": "clinibox-demo-lesion@1.1.0", "reason": "hospital", **payload}
    assert store.store(Header(box[0], box[1], "event", seq), body, NOW)


def status(store: Store, box: tuple[str, str], seq: int, model: str, digest: str) -> None:
    """A heartbeat from ``box`` saying it runs ``model`` whose manifest digest is ``digest``."""
    body = status_payload("heartbeat", created_at=int(NOW), model=model, model_digest=digest)
    assert store.store(Header(box[0], box[1], "status", seq), body, NOW)


def runs_package(store: Store, archive: Path, keys, seq: int, *which: int) -> None:
    """The boxes numbered ``which`` report they run the rolled-out package (name, version,
    digest)."""
    digest = rollouts.check_package(archive, [keys[1]]).manifest_digest
    for i in which:
        status(store, BOXES[i], seq, "clinibox-demo-lesion@1.1.0", digest)


def boxes(store: Store, rollout_id: int) -> dict[tuple[str, str], str]:
    with store.database.transaction(write=False) as tx:
        return {(t["clinic"], t["device"]): t["step"] for t in rollouts.targets(tx, rollout_id)}


def downlinks(store: Store, kind: str) -> list[tuple[str, str, int]]:
    with store.database.transaction(write=False) as tx:
        return [tuple(r) for r in tx.execute(
            "SELECT clinic, device, seq FROM downlinks WHERE kind = ? ORDER BY clinic, device",
            (kind,)).fetchall()]


def advance(store: Store) -> int:
    with store.database.transaction(write=True) as tx:
        return rollouts.advance(tx, NOW + 1)


def state(store: Store, rollout_id: int) -> tuple[str, str]:
    with store.database.transaction(write=False) as tx:
        row = rollouts.rollout(tx, rollout_id)
    assert row is not None
    return row["state"], row["state_reason"]


class RolloutContract:
    """The rollout tests; a subclass gives the ``store_url`` (SQLite here, PostgreSQL in
    ``tests/integration/test_central_postgres.py``)."""

    def test_only_a_package_signed_by_a_trusted_key_is_rolled_out(self, tmp_path, archive, keys):
        signing.generate_key_pair(tmp_path / "o.pem", tmp_path / "o.pub")
        with pytest.raises(rollouts.RolloutError, match="not signed by a key of"):
            rollouts.check_package(archive, [tmp_path / "o.pub"])
        with pytest.raises(rollouts.RolloutError, match="trusted_keys"):
            rollouts.check_package(archive, [])
        checked = rollouts.check_package(archive, [keys[1]])
        assert (checked.archive.name, checked.archive.version) == ("clinibox-demo-lesion", "1.1.0")

    def test_canary_first_then_the_rest_once_it_runs_the_package(self, store, archive, keys):
        rollout_id = start(store, archive, keys)
        assert boxes(store, rollout_id) == {BOXES[0]: "sent", BOXES[1]: "waiting",
                                            BOXES[2]: "waiting"}
        (offer,) = downlinks(store, downlink.KIND_ROLLOUT)
        assert offer == (*BOXES[0], 1)
        with store.database.transaction(write=False) as tx:
            (payload,) = tx.execute("SELECT payload FROM downlinks").fetchone()
        body = json.loads(payload)
        downlink.check_rollout(body)  # what the box will check, chunk list included
        with store.database.transaction(write=False) as tx:
            stored = b"".join(data for _i, data in rollouts.chunks(tx, body["archive_sha256"]))
        assert stored == archive.read_bytes()
        assert advance(store) == 0  # the canary has not installed it yet
        event(store, BOXES[0], 1, event="rollout", step="downloading", rollout=rollout_id)
        assert advance(store) == 0
        event(store, BOXES[0], 2, event="model_installed", rollout=rollout_id,
              model="clinibox-demo-lesion@1.1.0")
        assert advance(store) == 0  # said, not yet seen: its status reports no such model
        runs_package(store, archive, keys, 10, 0)
        assert advance(store) == 2
        assert set(boxes(store, rollout_id).values()) == {"on_trial", "sent"}
        # a late event never takes a box back
        event(store, BOXES[0], 3, event="rollout", step="downloaded", rollout=rollout_id)
        assert boxes(store, rollout_id)[BOXES[0]] == "on_trial"
        for box in BOXES[1:]:
            event(store, box, 4, event="model_kept", reason="trial_passed", rollout=rollout_id)
        event(store, BOXES[0], 5, event="model_kept", reason="trial_passed", rollout=rollout_id)
        advance(store)
        assert state(store, rollout_id) == ("active", "")  # two of them not seen running it
        runs_package(store, archive, keys, 11, 1, 2)
        advance(store)
        assert state(store, rollout_id) == ("done", "")

    def test_a_kept_whose_status_reports_another_model_leaves_the_step_waiting(
            self, store, archive, keys):
        rollout_id = start(store, archive, keys)
        digest = rollouts.check_package(archive, [keys[1]]).manifest_digest
        status(store, BOXES[0], 1, "clinibox-demo-lesion@1.0.0", "0" * 64)  # the old model
        event(store, BOXES[0], 2, event="model_kept", reason="trial_passed", rollout=rollout_id)
        assert advance(store) == 0 and boxes(store, rollout_id)[BOXES[0]] == "kept"
        # the right name and version, another manifest: not the package either
        status(store, BOXES[0], 3, "clinibox-demo-lesion@1.1.0", "f" * 64)
        assert advance(store) == 0
        with store.database.transaction(write=False) as tx:
            canary = rollouts.targets(tx, rollout_id)[0]
        assert (canary["seen"], canary["running"], canary["package"]) == (
            False, "clinibox-demo-lesion@1.1.0", "clinibox-demo-lesion@1.1.0")
        status(store, BOXES[0], 4, "clinibox-demo-lesion@1.1.0", digest)
        assert advance(store) == 2

    def test_a_canary_whose_golden_cases_fail_pauses_the_rollout(self, store, archive, keys):
        rollout_id = start(store, archive, keys)
        event(store, BOXES[0], 1, event="model_refused", reason="golden_cases_failed",
              rollout=rollout_id)
        advance(store)
        assert state(store, rollout_id) == ("paused", "canary_failed")
        assert boxes(store, rollout_id)[BOXES[0]] == "golden_failed"
        assert advance(store) == 0 and len(downlinks(store, downlink.KIND_ROLLOUT)) == 1
        with store.database.transaction(write=True) as tx:  # a person looked and goes on
            assert rollouts.resume(tx, rollout_id, "admin", NOW + 2) == 2
        assert state(store, rollout_id) == ("active", "")

    def test_pause_on_failure_stops_after_any_wave(self, store, archive, keys):
        rollout_id = start(store, archive, keys, canary=0, wave_size=2, pause_on_failure=True)
        assert sorted(b for b, s in boxes(store, rollout_id).items() if s == "sent") == BOXES[:2]
        event(store, BOXES[1], 1, event="rollout", step="refused", reason="no_space",
              rollout=rollout_id)
        advance(store)
        assert state(store, rollout_id) == ("paused", "failure")

    def test_rollback_sends_an_order_to_each_box_that_has_the_package(self, store, archive, keys):
        rollout_id = start(store, archive, keys, canary=0)
        for box in BOXES[:2]:
            event(store, box, 1, event="model_installed", rollout=rollout_id)
        event(store, BOXES[2], 1, event="model_refused", reason="signature", rollout=rollout_id)
        with store.database.transaction(write=True) as tx:
            assert rollouts.rollback(tx, "admin", boxes=[BOXES[0]], now=NOW + 3) == 1
        assert downlinks(store, downlink.KIND_ROLLBACK) == [(*BOXES[0], 2)]
        with store.database.transaction(write=True) as tx:  # the rest: not twice, not the refused
            assert rollouts.rollback(tx, "admin", rollout_id=rollout_id, now=NOW + 4) == 1
        assert downlinks(store, downlink.KIND_ROLLBACK) == [(*BOXES[0], 2), (*BOXES[1], 2)]
        assert state(store, rollout_id) == ("rolled_back", "by_person")
        event(store, BOXES[1], 3, event="model_rolled_back", reason="hospital", rollout=rollout_id)
        assert boxes(store, rollout_id)[BOXES[1]] == "rolled_back"
        with store.database.transaction(write=True) as tx, \
                pytest.raises(rollouts.RolloutError, match="runs no package"):
            rollouts.rollback(tx, "admin", boxes=[BOXES[2]])

    def test_a_rollout_needs_enrolled_boxes_and_numbers_downlinks_after_the_verdicts(self,
            store, archive, keys):
        package = rollouts.check_package(archive, [keys[1]])
        with pytest.raises(rollouts.RolloutError, match="not an enrolled box"), \
                store.database.transaction(write=True) as tx:
            rollouts.create(tx, package, [("clinic-z", "box-9")], canary=1, wave_size=1,
                            pause_on_failure=False, chunk_kib=64, by="admin")
        store.store(Header("clinic-a", "box-1", "alert", 50), alert_payload(), NOW)
        (alert,) = store.alerts()
        store.review_alert(alert["id"], "refer", "", "dr")
        start(store, archive, keys)
        assert downlinks(store, downlink.KIND_ROLLOUT) == [(*BOXES[0], 2)]

    def test_the_same_archive_rolled_out_twice_is_cut_the_same_way(self, store, archive, keys):
        first = start(store, archive, keys, chunk_kib=64)
        second = start(store, archive, keys, chunk_kib=128)
        with store.database.transaction(write=False) as tx:
            one, two = rollouts.rollout(tx, first), rollouts.rollout(tx, second)
            stored = b"".join(data for _i, data in rollouts.chunks(tx, one["archive_sha256"]))
        assert one["chunk_bytes"] == two["chunk_bytes"] == 64 * 1024
        assert one["chunk_sha256"] == two["chunk_sha256"] and stored == archive.read_bytes()

    def test_a_newer_rollout_of_the_package_replaces_an_older_one_on_the_way(
            self, store, archive, keys):
        first = start(store, archive, keys, canary=0)
        second = start(store, archive, keys, canary=0)
        assert set(boxes(store, first).values()) == set(boxes(store, second).values()) == {
            "sent"}
        # each box closes the older offer as it keeps the newer one, and says so
        for seq, box in enumerate(BOXES, 1):
            event(store, box, seq, event="rollout", step="refused", reason="replaced",
                  rollout=first)
        with store.database.transaction(write=False) as tx:
            assert {t["reason"] for t in rollouts.targets(tx, first)} == {"replaced"}
        advance(store)
        assert state(store, first)[0] == "done" and state(store, second)[0] == "active"

    def test_a_box_not_offered_anything_cannot_move_itself(self, store, archive, keys):
        rollout_id = start(store, archive, keys)
        event(store, BOXES[1], 1, event="model_kept", reason="trial_passed", rollout=rollout_id)
        event(store, BOXES[2], 1, event="rollout", step="refused", reason="invalid",
              rollout=rollout_id)
        assert boxes(store, rollout_id)[BOXES[1]] == boxes(store, rollout_id)[BOXES[2]] == "waiting"
        advance(store)
        assert state(store, rollout_id) == ("active", "")

    def test_a_box_that_never_answers_times_out_and_lets_the_next_wave_go(
            self, store, archive, keys):
        rollout_id = start(store, archive, keys, canary=0, wave_size=1)
        with store.database.transaction(write=True) as tx:
            assert rollouts.advance(tx, NOW + 3600, box_timeout_s=7200) == 0  # still in time
            assert rollouts.advance(tx, NOW + 7201, box_timeout_s=7200) == 1
        assert boxes(store, rollout_id) == {BOXES[0]: "timed_out", BOXES[1]: "sent",
                                            BOXES[2]: "waiting"}
        store.revoke(*BOXES[1])
        with store.database.transaction(write=True) as tx:
            rollouts.advance(tx, NOW + 7202, box_timeout_s=7200)
        with store.database.transaction(write=False) as tx:
            second = next(t for t in rollouts.targets(tx, rollout_id)
                          if (t["clinic"], t["device"]) == BOXES[1])
        assert (second["step"], second["reason"]) == ("timed_out", "revoked")
        # the box that was silent installs after all: the hospital hears it
        event(store, BOXES[0], 1, event="model_installed", rollout=rollout_id)
        assert boxes(store, rollout_id)[BOXES[0]] == "on_trial"

    def test_a_stalled_download_is_shown_and_cleared_when_it_moves_on(self, store, archive, keys):
        rollout_id = start(store, archive, keys)
        event(store, BOXES[0], 1, event="rollout", step="downloading", rollout=rollout_id)
        event(store, BOXES[0], 2, event="rollout", step="downloading", reason="transfer",
              rollout=rollout_id)
        with store.database.transaction(write=False) as tx:
            target = rollouts.targets(tx, rollout_id)[0]
        assert (target["step"], target["reason"]) == ("downloading", "transfer")
        event(store, BOXES[0], 3, event="rollout", step="downloaded", rollout=rollout_id)
        with store.database.transaction(write=False) as tx:
            target = rollouts.targets(tx, rollout_id)[0]
        assert (target["step"], target["reason"]) == ("downloaded", "")

    def test_a_rollback_the_box_did_not_carry_out_leaves_it_installed(self, store, archive, keys):
        rollout_id = start(store, archive, keys, canary=0)
        event(store, BOXES[0], 1, event="model_kept", reason="trial_passed", rollout=rollout_id)
        with store.database.transaction(write=True) as tx:
            assert rollouts.rollback(tx, "admin", boxes=[BOXES[0]], now=NOW + 5) == 1
        event(store, BOXES[0], 2, event="rollout", step="refused", reason="invalid",
              rollout=rollout_id)
        assert boxes(store, rollout_id)[BOXES[0]] == "kept"

    def test_a_package_larger_than_an_offer_carries_is_refused_before_anything(self, store, archive,
                                                                                keys, monkeypatch):
        monkeypatch.setattr(downlink, "MAX_UNPACKED_BYTES", 1000)
        with pytest.raises(rollouts.RolloutError, match="larger than a rollout carries"):
            rollouts.check_package(archive, [keys[1]])


class TestRolloutsOnSqlite(RolloutContract):
    """The rollout tests on SQLite."""

    @pytest.fixture
    def store_url(self, tmp_path) -> str:
        return f"sqlite:///{tmp_path}/central.db"


def test_a_database_from_before_digests_gains_their_columns_and_its_rollouts_count_by_name(
        tmp_path, archive, keys):
    """A rollout started before the hospital kept its package's digest counts a box whose
    status names the package's name and version."""
    import sqlite3

    url = f"sqlite:///{tmp_path}/central.db"
    store = Store(url)
    public = hospital_keys()[1]
    for clinic, device in BOXES:
        store.enrol(clinic, device, Box(clinic, device, public).pem)
    rollout_id = start(store, archive, keys)
    store.close()
    conn = sqlite3.connect(tmp_path / "central.db")
    conn.execute("ALTER TABLE rollouts DROP COLUMN manifest_sha256")
    conn.execute("ALTER TABLE box_state DROP COLUMN model_digest")
    conn.commit()
    conn.close()
    store = Store(url)
    try:
        status(store, BOXES[0], 1, "clinibox-demo-lesion@1.1.0", "0" * 64)
        event(store, BOXES[0], 2, event="model_kept", reason="trial_passed", rollout=rollout_id)
        with store.database.transaction(write=False) as tx:
            assert rollouts.rollout(tx, rollout_id)["manifest_sha256"] is None
        assert advance(store) == 2
    finally:
        store.close()
