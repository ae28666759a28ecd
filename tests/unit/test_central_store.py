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

from central.sql import sqlite_path
from central.store import EnrolmentConflict, Store
from firmware_app.signing import key_id
from firmware_app.telemetry.envelope import Header
from tests.telemetry_payloads import alert_payload, public_pem, status_payload, summary_payload


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
        latest = store.latest("box-1", "status")
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

    def test_the_same_seq_from_two_devices_is_two_messages(self, store):
        assert store.store(Header("clinic-a", "box-1", "alert", 1), alert_payload(), 1.0)
        assert store.store(Header("clinic-a", "box-2", "alert", 1), alert_payload(), 1.0)
        assert store.alert_counts() == {"box-1": (1, 1), "box-2": (1, 1)}

    def test_rejections_are_logged_without_the_bytes(self, store):
        store.reject("bad-signature", "clinibox/clinic-a/box-1/alert", "box-1", 1234, at=5.0)
        store.reject("bad-topic", "elsewhere/\x00" + "x" * 500, None, 9, at=6.0)
        newest, oldest = store.rejections()
        assert set(oldest) == {"id", "at", "reason", "topic", "claimed_device", "size_bytes"}
        assert (oldest["reason"], oldest["claimed_device"], oldest["size_bytes"]) == (
            "bad-signature", "box-1", 1234)
        assert newest["reason"] == "bad-topic" and newest["claimed_device"] is None
        assert "\x00" not in newest["topic"] and len(newest["topic"]) <= 201
        assert store.counts()["messages"] == 0

    def test_enrol_revoke_and_re_enrol(self, store):
        first = _enrolled(store)
        clinic, key = store.device_key("box-1")
        assert clinic == "clinic-a" and key_id(key) == key_id(first.public_key())
        assert store.revoke("box-1") is True
        assert store.device_key("box-1") is None
        assert store.device("box-1").revoked_at is not None
        assert store.revoke("box-404") is False
        store.enrol("clinic-a", "box-1", public_pem(first))  # the same key again: lifted
        assert store.device("box-1").revoked_at is None
        intruder = Ed25519PrivateKey.generate()
        for clinic in ("clinic-b", "clinic-a"):  # another clinic's box-1, or another key
            with pytest.raises(EnrolmentConflict, match=r"would replace it .*--replace"):
                store.enrol(clinic, "box-1", public_pem(intruder))
        assert key_id(store.device_key("box-1")[1]) == key_id(first.public_key())
        second = Ed25519PrivateKey.generate()
        store.enrol("clinic-b", "box-1", public_pem(second), replace=True)  # really moved
        record = store.device("box-1")
        assert record.revoked_at is None and record.clinic == "clinic-b"
        assert record.key_id == key_id(second.public_key()) != key_id(first.public_key())
        assert [d.device for d in store.devices()] == ["box-1"]

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
        assert store.alert_counts() == {"box-1": (1, 3)}
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
        assert store.latest("box-1", "status").payload["state"] == "offline"
        assert store.last_seen() == {"box-1": 50.0}
        first = store.summaries("box-1", alert_payload()["model"], limit=2, newest=False)
        last = store.summaries("box-1", alert_payload()["model"], limit=2, newest=True)
        assert [m.seq for m in first] == [10, 11] and [m.seq for m in last] == [14, 15]
        assert last[-1].payload["studies"] == 15
        assert store.latest("box-404", "status") is None

    def test_the_schema_is_created_once_and_data_survives_reopening(self, store_url):
        first = Store(store_url)
        first.store(Header("clinic-a", "box-1", "alert", 1), alert_payload(), 1.0)
        first.close()
        again = Store(store_url)
        assert again.counts()["alerts"] == 1
        assert again.ping() is True
        again.close()

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
