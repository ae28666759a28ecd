"""The fair claims (windows over the due rows) on PostgreSQL: the downlink publisher's (at most
PER_BOX rows of one box in a pass, the rows tried least first), and the receiver's intake,
the webhook's and the worklist's turns across the boxes (issue 56)."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central.downlink_publisher import PER_BOX, claim, resend_wait
from central.store import Store
from clinibox_common.contracts import downlink
from clinibox_common.contracts.envelope import Header
from tests.postgres_server import PostgresServer
from tests.telemetry_payloads import alert_payload, public_pem, status_payload

pytestmark = pytest.mark.integration
NOW = 1_800_000_000.0
RESEND = 1800.0


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory):
    """A fresh database on a PostgreSQL server of this module's."""
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server.create_database("central_fair")
    server.stop()


def test_the_claim_is_fair_on_postgresql(pg_url):
    store = Store(pg_url)
    for device, alerts in (("busy", 12), ("quiet", 1)):
        store.enrol("clinic-a", device, public_pem(Ed25519PrivateKey.generate()), NOW - 10)
        key = downlink.key_text(X25519PrivateKey.generate().public_key())
        store.store(Header("clinic-a", device, "status", 1),
                    status_payload(downlink_key=key, downlink_seq=0), NOW)
        for i in range(alerts):
            store.store(Header("clinic-a", device, "alert", 100 + i),
                        alert_payload(study_ref=f"{len(device):x}{i:031x}"), NOW)
    for alert in sorted(store.alerts(), key=lambda a: (a["device"] != "busy", a["id"])):
        store.review_alert(alert["id"], "refer", "", "dr-li",
                           now=NOW + (1 if alert["device"] == "quiet" else 0))
    first = claim(store.database, now=NOW + 2, resend_seconds=RESEND)
    devices = [item.device for item in first]
    assert devices.count("busy") == PER_BOX and devices.count("quiet") == 1
    # the six claimed are due again (older, tried once): the busy box's untried ones first
    later = NOW + 3 + resend_wait(1, RESEND)
    second = claim(store.database, now=later, resend_seconds=RESEND, per_box=50)
    assert [item.attempts for item in second] == [1] * 7 + [2] * 6
    store.close()


def test_the_intake_the_webhook_and_the_worklist_take_turns_on_postgresql(pg_url):
    """Issue 56's windows on PostgreSQL: the receiver's intake hands out each box's oldest
    first, the webhook claims in turns across the boxes, and the worklist shows a box's
    first three alerts and how many more."""
    from central.config import NotifyConfig
    from central.intake import Intake
    from central.notify import Notifier
    from central_console.queries import AlertFilters, worklist

    store = Store(pg_url, webhook=True)
    held = Intake(store.database, "central-pg")
    held.put([("clinibox/clinic-f/flood/alert", bytes([i]), float(i)) for i in range(6)])
    held.put([("clinibox/clinic-q/quiet/alert", b"q", 9.0)])
    turn = held.next_turn(per_box=2, limit=10)
    assert [h.payload for h in turn] == [b"\x00", b"q", b"\x01"]
    assert isinstance(turn[0].payload, bytes) and held.waiting() == 7
    for i in range(1, 9):
        store.store(Header("clinic-f", "flood", "alert", i),
                    alert_payload(study_ref=f"f{i:031x}", score=0.99), NOW + i / 100)
    store.store(Header("clinic-q", "quiet", "alert", 1),
                alert_payload(study_ref=f"e{1:031x}", score=0.6), NOW + 1)
    notifier = Notifier(store.database, NotifyConfig(url="http://127.0.0.1:9/"), b"s")
    claimed = [json.loads(d.payload)["device"] for d in notifier.claim(NOW + 2, per_box=3)]
    assert claimed == ["flood", "quiet", "flood", "flood"]
    page = worklist(store.database, AlertFilters(), page=1, escalate_minutes=60,
                    now=NOW + 3)
    assert [(r["device"], r["more_from_box"]) for r in page.rows] == [
        ("flood", 0), ("flood", 0), ("flood", 5), ("quiet", 0)]
    assert page.total == 4
    store.close()
