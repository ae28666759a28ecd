"""The hospital store's contract, on SQLite here and on PostgreSQL in the integration tests.

``StoreContract`` holds the tests; a subclass supplies the ``store_url``
fixture (a fresh, empty database per test).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central.schema import VERSION
from central.sql import Database, StoreError, sqlite_path
from central.store import EnrolmentConflict, Store
from clinibox_common.contracts.envelope import Header
from clinibox_common.contracts.signing import key_id
from tests.telemetry_payloads import alert_payload, public_pem, status_payload, summary_payload

#: The schema clinibox central wrote before boxes were keyed by (clinic, device).
VERSION_1_SCHEMA = (
    """CREATE TABLE devices (device TEXT PRIMARY KEY, clinic TEXT NOT NULL,
        public_key TEXT NOT NULL, key_id TEXT NOT NULL, enrolled_at DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION)""",
    """CREATE TABLE messages (device TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL,
        clinic TEXT NOT NULL, model TEXT, created_at BIGINT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL, payload TEXT NOT NULL,
        PRIMARY KEY (device, seq))""",
    "CREATE INDEX messages_by_kind ON messages (device, kind, seq)",
    """CREATE TABLE alerts (id {id}, device TEXT NOT NULL, seq BIGINT NOT NULL,
        clinic TEXT NOT NULL, study_ref TEXT NOT NULL, finding TEXT NOT NULL,
        score DOUBLE PRECISION NOT NULL, threshold DOUBLE PRECISION NOT NULL,
        modality TEXT NOT NULL, model TEXT NOT NULL, instances BIGINT NOT NULL,
        processing_ms DOUBLE PRECISION NOT NULL, created_at BIGINT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL, reviewed_at DOUBLE PRECISION,
        UNIQUE (device, seq))""",
    "CREATE INDEX alerts_waiting ON alerts (reviewed_at, id)",
    """CREATE TABLE rejections (id {id}, at DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL,
        topic TEXT NOT NULL, claimed_device TEXT, size_bytes BIGINT NOT NULL)""",
)


def _version_1_database(url: str, pem: str) -> None:
    """A database as clinibox central left it before version 2, with a little of everything."""
    db = Database(url)
    payload = '{"created_at": 1}'
    with db.transaction(write=True) as tx:
        for statement in VERSION_1_SCHEMA:
            tx.execute(db.ddl(statement))
        tx.execute("INSERT INTO devices VALUES ('box-1', 'clinic-a', ?, 'k1', 1.0, NULL)", (pem,))
        tx.execute("INSERT INTO devices VALUES ('box-2', 'clinic-a', ?, 'k2', 2.0, 3.0)", (pem,))
        for seq in (1, 2, 3):
            tx.execute("INSERT INTO messages VALUES ('box-1', ?, 'alert', 'clinic-a', 'm@1', 1,"
                       " ?, ?)", (seq, float(seq), payload))
            tx.execute("INSERT INTO alerts (id, device, seq, clinic, study_ref, finding, score,"
                       " threshold, modality, model, instances, processing_ms, created_at,"
                       " received_at, reviewed_at) VALUES (?, 'box-1', ?, 'clinic-a', 's', 'f',"
                       " 0.9, 0.5, 'CT', 'm@1', 1, 2.0, 1, ?, ?)",
                       (seq * 10, seq, float(seq), 9.0 if seq == 1 else None))
        tx.execute("INSERT INTO rejections (at, reason, topic, claimed_device, size_bytes)"
                   " VALUES (4.0, 'revoked', 'clinibox/clinic-a/box-2/alert', 'box-2', 77)")
    db.close()


def _enrolled(store: Store, clinic: str = "clinic-a", device: str = "box-1") -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    store.enrol(clinic, device, public_pem(key))
    return key


class StoreContract:
    """Store behaviour every database engine must show."""

    @pytest.fixture
    def store(self, store_url):
        store = Store(store_url)
        yield store
        store.close()

    def test_a_message_is_stored_once_and_its_replay_is_a_duplicate(self, store):
        header = Header("clinic-a", "box-1", "status", 7)
        assert store.store(header, status_payload(), 100.0) is True
        assert store.store(header, status_payload(state="offline"), 200.0) is False
        assert store.counts()["messages"] == 1
        latest = store.latest("clinic-a", "box-1", "status")
        assert (latest.seq, latest.received_at, latest.payload["state"]) == (7, 100.0, "online")

    def test_an_alert_gets_its_row_with_the_message(self, store):
        payload = alert_payload(score=0.97, finding="nodule", modality="DX", instances=5)
        assert store.store(Header("clinic-a", "box-1", "alert", 3), payload, 50.0)
        assert store.store(Header("clinic-a", "box-1", "alert", 3), payload, 60.0) is False
        assert store.store(Header("clinic-a", "box-1", "summary", 4), summary_payload(), 61.0)
        [alert] = store.alerts()
        assert (alert["device"], alert["seq"], alert["clinic"]) == ("box-1", 3, "clinic-a")
        assert (alert["finding"], alert["score"], alert["modality"]) == ("nodule", 0.97, "DX")
        assert (alert["instances"], alert["processing_ms"]) == (5, 41.5)
        assert (alert["received_at"], alert["reviewed_at"]) == (50.0, None)
        assert store.counts() == {"devices": 0, "messages": 2, "alerts": 1, "rejections": 0}

    def test_the_same_seq_from_two_boxes_is_two_messages(self, store):
        assert store.store(Header("clinic-a", "box-1", "alert", 1), alert_payload(), 1.0)
        assert store.store(Header("clinic-a", "box-2", "alert", 1), alert_payload(), 1.0)
        assert store.store(Header("clinic-b", "box-1", "alert", 1), alert_payload(), 1.0)
        assert store.store(Header("clinic-b", "box-1", "alert", 1), alert_payload(), 2.0) is False
        assert store.alert_counts() == {("clinic-a", "box-1"): (1, 1),
                                        ("clinic-a", "box-2"): (1, 1),
                                        ("clinic-b", "box-1"): (1, 1)}

    def test_rejections_are_logged_without_the_bytes(self, store):
        store.reject("bad-signature", "clinibox/clinic-a/box-1/alert", ("clinic-a", "box-1"),
                     1234, at=5.0)
        store.reject("bad-topic", "elsewhere/\x00" + "x" * 500, None, 9, at=6.0)
        newest, oldest = store.rejections()
        assert set(oldest) == {"id", "at", "reason", "topic", "claimed_clinic", "claimed_device",
                               "size_bytes"}
        assert (oldest["reason"], oldest["claimed_clinic"], oldest["claimed_device"],
                oldest["size_bytes"]) == ("bad-signature", "clinic-a", "box-1", 1234)
        assert newest["reason"] == "bad-topic" and newest["claimed_device"] is None
        assert "\x00" not in newest["topic"] and len(newest["topic"]) <= 201
        assert store.counts()["messages"] == 0

    def test_enrol_revoke_and_re_enrol(self, store):
        first = _enrolled(store)
        assert key_id(store.device_key("clinic-a", "box-1")) == key_id(first.public_key())
        assert store.revoke("clinic-b", "box-1") is False  # another clinic's box-1
        assert store.revoke("clinic-a", "box-1") is True
        assert store.device_key("clinic-a", "box-1") is None
        assert store.device("clinic-a", "box-1").revoked_at is not None
        assert store.revoke("clinic-a", "box-404") is False
        store.enrol("clinic-a", "box-1", public_pem(first))  # the same key again: lifted
        assert store.device("clinic-a", "box-1").revoked_at is None

    def test_the_same_device_name_in_two_clinics_is_two_boxes(self, store):
        first = _enrolled(store, "clinic-a", "box-1")
        second = _enrolled(store, "clinic-b", "box-1")
        assert key_id(store.device_key("clinic-a", "box-1")) == key_id(first.public_key())
        assert key_id(store.device_key("clinic-b", "box-1")) == key_id(second.public_key())
        assert [(d.clinic, d.device) for d in store.devices()] == [
            ("clinic-a", "box-1"), ("clinic-b", "box-1")]
        store.revoke("clinic-b", "box-1")
        assert store.device_key("clinic-a", "box-1") is not None

    def test_another_key_for_an_enrolled_box_needs_replace(self, store):
        first = _enrolled(store)
        intruder = Ed25519PrivateKey.generate()
        with pytest.raises(EnrolmentConflict, match=r"would replace it .*--replace"):
            store.enrol("clinic-a", "box-1", public_pem(intruder))
        assert key_id(store.device_key("clinic-a", "box-1")) == key_id(first.public_key())
        store.enrol("clinic-a", "box-1", public_pem(intruder), replace=True)  # really replaced
        record = store.device("clinic-a", "box-1")
        assert record.revoked_at is None and record.key_id == key_id(intruder.public_key())
        assert len(store.devices()) == 1

    def test_one_key_cannot_speak_for_two_boxes(self, store):
        key = _enrolled(store, "clinic-a", "box-1")
        for replace in (False, True):
            with pytest.raises(EnrolmentConflict, match=r"already enrolled as clinic-a/box-1"):
                store.enrol("clinic-b", "box-1", public_pem(key), replace=replace)
        store.revoke("clinic-a", "box-1")  # the box really moved: revoke, then enrol
        store.enrol("clinic-b", "box-1", public_pem(key))
        assert store.device_key("clinic-b", "box-1") is not None
        assert store.device_key("clinic-a", "box-1") is None

    @pytest.mark.parametrize(("clinic", "device"), [("Clinic A", "box-1"), ("clinic-a", "box/1"),
                                                    ("clinic-a", "-box"), ("", "box-1")])
    def test_enrol_refuses_ids_that_are_not_topic_levels(self, store, clinic, device):
        with pytest.raises(ValueError, match="lower-case letters"):
            store.enrol(clinic, device, public_pem(Ed25519PrivateKey.generate()))
        assert store.devices() == []

    def test_enrol_refuses_a_key_that_is_not_an_ed25519_public_key(self, store):
        x25519 = X25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        with pytest.raises(ValueError, match="Ed25519"):
            store.enrol("clinic-a", "box-1", x25519)
        with pytest.raises(ValueError, match="PEM"):
            store.enrol("clinic-a", "box-1", "not a key")
        assert store.devices() == []

    def test_review_marks_only_waiting_alerts(self, store):
        for seq in (1, 2, 3):
            store.store(Header("clinic-a", "box-1", "alert", seq), alert_payload(), float(seq))
        ids = sorted(a["id"] for a in store.alerts())
        assert store.review([ids[0], ids[1]], now=10.0) == 2
        assert store.review([ids[0]], now=11.0) == 0
        assert [a["id"] for a in store.alerts(waiting=True)] == [ids[2]]
        assert store.alert_counts() == {("clinic-a", "box-1"): (1, 3)}
        assert store.existing_alert_ids([ids[0], 999_999]) == {ids[0]}
        assert [a["id"] for a in store.alerts(limit=2)] == [ids[2], ids[1]]

    def test_summaries_go_by_sequence_and_status_by_arrival(self, store):
        # a last will is sealed at connect time (seq 4) and published by the broker
        # only when the box vanishes, after heartbeats with higher numbers
        store.store(Header("clinic-a", "box-1", "status", 9), status_payload("heartbeat"), 10.0)
        store.store(Header("clinic-a", "box-1", "status", 4), status_payload("offline"), 20.0)
        for seq in range(10, 16):
            store.store(Header("clinic-a", "box-1", "summary", seq),
                        summary_payload(studies=seq), 30.0 + seq)
        store.store(Header("clinic-a", "box-1", "summary", 16),
                    summary_payload(model="other-model@2.0.0"), 50.0)
        store.store(Header("clinic-b", "box-1", "status", 99), status_payload("online"), 60.0)
        assert store.latest("clinic-a", "box-1", "status").payload["state"] == "offline"
        assert store.last_seen() == {("clinic-a", "box-1"): 50.0, ("clinic-b", "box-1"): 60.0}
        model = alert_payload()["model"]
        first = store.summaries("clinic-a", "box-1", model, limit=2, newest=False)
        last = store.summaries("clinic-a", "box-1", model, limit=2, newest=True)
        assert [m.seq for m in first] == [10, 11] and [m.seq for m in last] == [14, 15]
        assert last[-1].payload["studies"] == 15
        assert store.latest("clinic-a", "box-404", "status") is None
        assert store.summaries("clinic-b", "box-1", model, limit=2, newest=True) == []

    def test_the_schema_is_created_once_and_data_survives_reopening(self, store_url):
        first = Store(store_url)
        first.store(Header("clinic-a", "box-1", "alert", 1), alert_payload(), 1.0)
        first.close()
        again = Store(store_url)
        assert again.counts()["alerts"] == 1
        assert again.ping() is True
        again.close()

    def test_a_version_1_database_is_migrated_keeping_every_row(self, store_url):
        key = Ed25519PrivateKey.generate()
        _version_1_database(store_url, public_pem(key))
        store = Store(store_url)
        assert store.migrated_from == 1
        assert store.counts() == {"devices": 2, "messages": 3, "alerts": 3, "rejections": 1}
        assert store.device("clinic-a", "box-2").revoked_at == 3.0
        assert key_id(store.device_key("clinic-a", "box-1")) == key_id(key.public_key())
        alerts = store.alerts()
        assert [(a["id"], a["clinic"], a["device"], a["seq"]) for a in alerts] == [
            (30, "clinic-a", "box-1", 3), (20, "clinic-a", "box-1", 2),
            (10, "clinic-a", "box-1", 1)]
        assert [a["id"] for a in store.alerts(waiting=True)] == [30, 20]
        [rejection] = store.rejections()
        assert (rejection["claimed_clinic"], rejection["claimed_device"]) == (None, "box-2")
        # what version 1 could not hold: another clinic's box-1, with the same sequence numbers
        store.enrol("clinic-b", "box-1", public_pem(Ed25519PrivateKey.generate()))
        assert store.store(Header("clinic-b", "box-1", "alert", 3), alert_payload(), 5.0)
        assert store.store(Header("clinic-a", "box-1", "alert", 3), alert_payload(), 5.0) is False
        assert max(a["id"] for a in store.alerts()) > 30  # numbering goes on after the old ids
        store.reject("bad-topic", "x", None, 1)
        assert max(r["id"] for r in store.rejections()) > 1
        store.close()
        again = Store(store_url)
        assert again.migrated_from == VERSION and again.counts()["alerts"] == 4
        again.close()

    def test_a_version_4_database_gains_the_rollouts_and_the_wait_for_a_model(self,
                                                                             store_url):
        store = Store(store_url)
        _enrolled(store)
        assert store.store(Header("clinic-a", "box-1", "alert", 1), alert_payload(), 1.0)
        before = (store.counts(), store.alerts(), store.box_states())
        store.close()
        db = Database(store_url)  # back to version 4: no rollouts, no waiting_for_model
        with db.transaction(write=True) as tx:
            for table in ("rollouts", "rollout_targets", "rollout_chunks"):
                tx.execute(f"DROP TABLE {table}")
            tx.execute("ALTER TABLE box_state DROP COLUMN waiting_for_model")
            tx.execute("UPDATE schema_version SET version = 4")
        db.close()
        store = Store(store_url)
        assert store.migrated_from == 4
        assert (store.counts(), store.alerts()) == before[:2]
        assert [dict(b, waiting_for_model=None) for b in before[2]] == store.box_states()
        with store.database.transaction(write=False) as tx:
            assert tx.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0] == 0
        store.close()

    def test_a_version_2_database_gains_the_new_tables_keeping_every_row(self, store_url):
        store = Store(store_url)
        _enrolled(store)
        for seq in (1, 2):
            assert store.store(Header("clinic-a", "box-1", "alert", seq), alert_payload(), 1.0)
        store.reject("malformed", "clinibox/clinic-a/box-1/alert", ("clinic-a", "box-1"), 9)
        before = (store.counts(), store.alerts(), store.rejections(), store.devices())
        store.close()
        db = Database(store_url)  # back to version 2: no dead letters, no audit heads
        with db.transaction(write=True) as tx:
            tx.execute("DROP TABLE dead_letters")
            tx.execute("DROP TABLE audit_heads")
            tx.execute("UPDATE schema_version SET version = 2")
        db.close()
        store = Store(store_url)
        assert store.migrated_from == 2
        assert (store.counts(), store.alerts(), store.rejections(), store.devices()) == before
        assert store.dead_letters() == [] and store.audit_heads() == []
        store.reject("malformed", "t", None, 3, dead_letter=b"\x00\xffabc")
        assert store.dead_letter_bytes(store.dead_letters()[0]["id"]) == b"\x00\xffabc"
        store.close()
        again = Store(store_url)
        assert again.migrated_from == VERSION == 7 and again.dead_letter_totals() == (1, 5)
        again.close()

    def test_dead_letters_keep_bytes_and_drop_the_oldest_beyond_the_bound(self, store):
        for index in range(6):  # each 400 bytes + its row: two fit in 1,400
            store.reject("malformed", "t", ("clinic-a", "box-1"), 400, at=float(index),
                         dead_letter=bytes([index]) * 400, dead_letter_max_bytes=1400)
        kept = store.dead_letters()
        assert [d["received_at"] for d in kept] == [5.0, 4.0]
        assert [store.dead_letter_bytes(d["id"]) for d in kept] == [b"\x05" * 400,
                                                                     b"\x04" * 400]
        assert store.counts()["rejections"] == 6 and store.dead_letter_bytes(10**6) is None

    def test_a_status_with_an_audit_head_is_witnessed_in_its_transaction(self, store):
        def beat(seq: int, row: int, since_row: int, since_hash: str) -> bool:
            audit = {"row": row, "hash": f"{row:064x}", "since_row": since_row,
                     "since_hash": since_hash}
            return store.store(Header("clinic-a", "box-1", "status", seq),
                               status_payload("heartbeat", audit=audit), float(seq))

        assert beat(1, 3, 3, f"{3:064x}") and beat(2, 5, 3, f"{3:064x}")
        assert not beat(2, 5, 3, f"{3:064x}")  # a redelivery witnesses nothing again
        assert beat(3, 6, 5, "f" * 64)
        assert [(x["seq"], x["row"], x["verdict"]) for x in store.audit_heads()] == [
            (1, 3, "first"), (2, 5, "extends"), (3, 6, "rewritten")]
        assert store.latest_audit_heads()["clinic-a", "box-1"]["verdict"] == "rewritten"

    def test_a_newer_schema_is_refused_untouched(self, store_url):
        Store(store_url).close()
        db = Database(store_url)
        with db.transaction(write=True) as tx:
            tx.execute("UPDATE schema_version SET version = ?", (VERSION + 1,))
        db.close()
        with pytest.raises(StoreError, match=f"schema version {VERSION + 1}, newer"):
            Store(store_url)

    def test_two_stores_racing_on_the_same_messages_keep_each_once(self, store_url):
        stores = [Store(store_url), Store(store_url)]
        barrier = threading.Barrier(2)
        results: list[list[bool]] = [[], []]

        def ingest(index: int) -> None:
            for seq in range(1, 31):
                barrier.wait()
                results[index].append(stores[index].store(
                    Header("clinic-a", "box-1", "alert", seq), alert_payload(), float(seq)))

        threads = [threading.Thread(target=ingest, args=(i,)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert [a + b for a, b in zip(*results, strict=True)] == [1] * 30
        assert stores[0].counts() == {"devices": 0, "messages": 30, "alerts": 30,
                                      "rejections": 0}
        for store in stores:
            store.close()


class TestStoreOnSqlite(StoreContract):
    """The contract on SQLite files."""

    @pytest.fixture
    def store_url(self, tmp_path):
        return f"sqlite:///{tmp_path}/central.db"

    def test_sqlite_runs_in_wal_mode_with_full_sync(self, store, store_url):
        store.store(Header("clinic-a", "box-1", "status", 1), status_payload(), 1.0)
        conn = sqlite3.connect(sqlite_path(store_url))
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
        assert store._db._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL

    def test_a_bare_path_and_a_relative_url_are_sqlite(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        Store("sqlite:///rel/central.db").close()
        Store(str(tmp_path / "bare.db")).close()
        assert (tmp_path / "rel" / "central.db").exists() and (tmp_path / "bare.db").exists()

    def test_the_hospital_database_is_private_whatever_the_umask(self, tmp_path):
        previous = os.umask(0)
        try:
            store = Store(f"sqlite:///{tmp_path}/private/central.db")
            store.store(Header("clinic-a", "box-1", "status", 1), status_payload(), 1.0)
            files = [tmp_path / "private" / f"central.db{s}" for s in ("", "-wal", "-shm")]
            assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
            assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o750
            store.close()
        finally:
            os.umask(previous)


def test_a_second_opener_waits_while_the_first_creates_the_database(tmp_path):
    """``central user add`` started beside ``central serve`` on a new SQLite file: switching
    to WAL gets no busy handler from SQLite ("database is locked" at once while another
    connection writes), so the opener tries again instead of failing."""
    import sqlite3
    import threading

    path = tmp_path / "central.db"
    first = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    first.execute("CREATE TABLE creating(x)")
    first.execute("BEGIN IMMEDIATE")
    first.execute("INSERT INTO creating VALUES (1)")
    timer = threading.Timer(0.5, lambda: first.execute("COMMIT"))
    timer.start()
    try:
        store = Store(f"sqlite:///{path}")
        assert store.counts()["devices"] == 0
        store.close()
    finally:
        timer.join()
        first.close()
