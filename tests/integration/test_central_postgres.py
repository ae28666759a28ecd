"""The hospital store and receiver on a real PostgreSQL server.

One server runs for the whole session; each test gets its own fresh database.
The store contract of ``tests/unit/central/test_central_store.py`` runs here as is,
then what only a shared server shows: several receivers starting and storing
at once, a bulk ingest, a database that goes away and comes back, and the
broker link through a real Mosquitto.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from central.config import CentralConfig
from central.receiver import MqttService, Receiver
from central.store import Store, StoreError
from clinibox_common.contracts.envelope import Header
from tests.integration.conftest import wait_for
from tests.mqtt_broker import Broker, make_mqtt_pki
from tests.postgres_server import PostgresServer
from tests.telemetry_payloads import Box, alert_payload, hospital_keys, summary_payload
from tests.unit.central.test_central_rollouts import (  # noqa: F401 - fixtures
    RolloutContract,
    archive,
    enrolled_store,
    keys,
)
from tests.unit.central.test_central_store import StoreContract

pytestmark = pytest.mark.integration
_names = itertools.count(1)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A PostgreSQL server for the session."""
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres):
    """A fresh, empty database."""
    return postgres.create_database(f"central_{next(_names)}")


class TestStoreOnPostgres(StoreContract):
    """The store contract on PostgreSQL."""

    @pytest.fixture
    def store_url(self, pg_url):
        return pg_url


class TestRolloutsOnPostgres(RolloutContract):
    """The rollouts on PostgreSQL: the chunks as BYTEA, the advisory locks, RETURNING."""

    @pytest.fixture
    def store_url(self, pg_url):
        return pg_url


def test_receivers_starting_together_create_the_schema_once(pg_url):
    stores: list[Store] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            stores.append(Store(pg_url))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and len(stores) == 4
    with psycopg.connect(pg_url) as conn:
        tables = {row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    assert tables == {"devices", "messages", "alerts", "rejections", "dead_letters",
                      "audit_heads", "schema_version", "clinics", "box_state", "drift_points",
                      "downlinks", "webhook_deliveries", "webhook_verdicts", "console_accounts",
                      "console_sessions", "console_login_failures", "console_audit",
                      "rollouts", "rollout_targets", "rollout_chunks", "intake"}
    for store in stores:
        store.close()


def test_two_receivers_ingest_a_redelivered_stream_exactly_once(pg_url):
    hospital_private, hospital_public = hospital_keys()
    stores = [Store(pg_url), Store(pg_url)]
    receivers = [Receiver(CentralConfig(), s, hospital_private) for s in stores]
    boxes = [Box("clinic-a", f"box-{i}", hospital_public) for i in range(4)]
    for box in boxes:
        stores[0].enrol(box.clinic, box.device, box.pem)
    envelopes = [box.envelope(kind) for box in boxes for kind in ["alert", "summary"] * 25]
    assert len(envelopes) == 200
    outcomes: list[list[str]] = [[], []]

    def ingest(index: int) -> None:
        # both receivers get every envelope (as after a broker redelivery), in different orders
        order = envelopes if index == 0 else list(reversed(envelopes))
        for topic_name, envelope in order:
            outcomes[index].append(receivers[index].handle(topic_name, envelope))

    started = time.monotonic()
    threads = [threading.Thread(target=ingest, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.monotonic() - started
    all_outcomes = outcomes[0] + outcomes[1]
    assert all_outcomes.count("stored") == 200 and all_outcomes.count("duplicate") == 200
    assert stores[0].counts() == {"devices": 4, "messages": 200, "alerts": 100,
                                  "rejections": 0}
    assert elapsed < 60
    for store in stores:
        store.close()


def test_a_store_reconnects_after_the_database_drops_it(pg_url):
    store = Store(pg_url)
    assert store.store(Header("clinic-a", "box-1", "alert", 1), alert_payload(), 1.0)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                      " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    with pytest.raises(StoreError):
        store.store(Header("clinic-a", "box-1", "alert", 2), alert_payload(), 2.0)
    # the failed message was not kept; the next call reconnects and it can be stored
    assert store.ping() is True
    assert store.store(Header("clinic-a", "box-1", "alert", 2), alert_payload(), 2.0) is True
    assert store.counts()["alerts"] == 2
    store.close()


def test_a_database_fault_reaches_the_caller_so_the_message_is_not_acknowledged(pg_url):
    hospital_private, hospital_public = hospital_keys()
    store = Store(pg_url)
    receiver = Receiver(CentralConfig(), store, hospital_private)
    box = Box("clinic-a", "box-1", hospital_public)
    store.enrol(box.clinic, box.device, box.pem)
    topic_name, envelope = box.envelope("summary", summary_payload())
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("ALTER TABLE messages RENAME TO messages_away")
        with pytest.raises(StoreError):
            receiver.handle(topic_name, envelope)
        admin.execute("ALTER TABLE messages_away RENAME TO messages")
    assert store.counts()["rejections"] == 0  # a database fault is not the sender's fault
    assert receiver.handle(topic_name, envelope) == "stored"
    store.close()


# -- through a real broker --------------------------------------------------------

@pytest.fixture
def broker(tmp_path) -> Iterator[Broker]:
    """The test Mosquitto (TLS, client certificates, the clinibox ACL)."""
    pki = make_mqtt_pki(tmp_path / "pki", [("clinic-a", "box-1")])
    with Broker(tmp_path / "broker", pki) as running:
        yield running


class _Running:
    """An MqttService serving in a thread."""

    def __init__(self, config: CentralConfig, store: Store, hospital_key) -> None:
        self.service = MqttService(config, Receiver(config, store, hospital_key),
                                   max_backoff=1.0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.service.serve, args=(self.stop,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def serve():
    """Start receivers (``serve(config, store, key)``); all are stopped at teardown."""
    started: list[_Running] = []

    def start(config: CentralConfig, store: Store, hospital_key) -> _Running:
        running = _Running(config, store, hospital_key)
        started.append(running)
        wait_for(running.service.connected.is_set, 10, "the receiver to subscribe")
        return running

    yield start
    for running in started:
        running.close()


def test_the_broker_link_acknowledges_only_what_is_committed(pg_url, broker, serve, request):
    pki = broker.pki
    hospital_private, hospital_public = hospital_keys()
    store = Store(pg_url)
    request.addfinalizer(store.close)
    box = Box("clinic-a", "box-1", hospital_public)
    store.enrol(box.clinic, box.device, box.pem)
    box_cert = pki.device("clinic-a", "box-1")
    config = CentralConfig()
    config.mqtt.host, config.mqtt.port, config.mqtt.client_id = "localhost", broker.port, "rx-test"
    config.mqtt.ca_file = str(pki.ca_cert)
    config.mqtt.cert_file, config.mqtt.key_file = str(pki.receiver.cert), str(pki.receiver.key)

    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="box-1",
                            protocol=mqtt.MQTTv5)
    publisher.tls_set(ca_certs=str(pki.ca_cert), certfile=str(box_cert.cert),
                      keyfile=str(box_cert.key))
    publisher.connect("localhost", broker.port)
    publisher.loop_start()
    request.addfinalizer(publisher.loop_stop)

    def publish(count: int, kind: str = "alert") -> None:
        for _ in range(count):
            publisher.publish(*box.envelope(kind), qos=1).wait_for_publish(10)

    def stored() -> int:
        return store.counts()["messages"]

    running = serve(config, store, hospital_private)
    publish(3)
    publisher.publish("clinibox/clinic-a/box-1/alert", b"junk", qos=1).wait_for_publish(10)
    wait_for(lambda: stored() == 3 and store.counts()["rejections"] == 1, 10, "3 stored")
    running.close()

    publish(2, "summary")  # the receiver is down: the broker keeps them in its session
    running = serve(config, store, hospital_private)
    wait_for(lambda: stored() == 5, 10, "the messages sent while it was down")

    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("ALTER TABLE messages RENAME TO messages_away")
        publish(1, "status")
        wait_for(lambda: not running.service.connected.is_set(), 10, "the receiver to let go")
        time.sleep(1.0)
        admin.execute("ALTER TABLE messages_away RENAME TO messages")
    wait_for(lambda: stored() == 6, 15, "the unacknowledged message to come again")
    assert store.counts()["rejections"] == 1  # a database fault is no sender's fault
    assert running.service.receiver.counts["stored"] == 3


def test_concurrent_reviews_of_one_box_number_its_downlinks_without_gaps(pg_url):
    """Two consoles (two connections) review one box's alerts at once: each review gets its own
    downlink, numbered 1 … n for that box with no gap and no number twice (the box's watermark
    relies on it)."""
    hospital_private, hospital_public = hospital_keys()
    stores = [Store(pg_url), Store(pg_url)]
    receiver = Receiver(CentralConfig(), stores[0], hospital_private)
    box = Box("clinic-a", "box-1", hospital_public)
    stores[0].enrol(box.clinic, box.device, box.pem)
    for _ in range(40):
        assert receiver.handle(*box.envelope("alert")) == "stored"
    ids = sorted(a["id"] for a in stores[0].alerts())
    halves = [ids[0::2], ids[1::2]]
    failures: list[BaseException] = []

    def review(index: int) -> None:
        try:
            for alert_id in halves[index]:
                stores[index].review_alert(alert_id, "refer", "", f"rad-{index}")
        except BaseException as exc:  # the assertion below names it
            failures.append(exc)

    threads = [threading.Thread(target=review, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    downlinks = stores[0].downlinks("clinic-a", "box-1")
    assert sorted(d["seq"] for d in downlinks) == list(range(1, 41))
    assert sorted(d["alert_id"] for d in downlinks) == ids
    for store in stores:
        store.close()
