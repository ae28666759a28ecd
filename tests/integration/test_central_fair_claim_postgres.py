"""The downlink publisher's fair claim (a window over the due rows) on PostgreSQL: at most
PER_BOX rows of one box in a pass, the rows tried least first."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central.downlink_publisher import PER_BOX, claim, resend_wait
from central.store import Store
from firmware_app.contracts import downlink
from firmware_app.contracts.envelope import Header
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
