"""The downlink publisher's claim: what it sends, however old, and how its resends slow down."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central.downlink_publisher import MAX_RESEND_SECONDS, claim, release, resend_wait
from central.store import Store
from clinibox_common.contracts import downlink
from clinibox_common.contracts.envelope import Header
from tests.telemetry_payloads import alert_payload, public_pem, status_payload

NOW = 1_800_000_000.0
DAY = 86_400.0
RESEND = 1800.0
BOX_KEY = X25519PrivateKey.generate()
KEY = downlink.key_text(BOX_KEY.public_key())


@pytest.fixture
def store(tmp_path):
    """clinic-a/box-1 enrolled, one alert reviewed 90 days ago (never sent: the box had not
    reported its downlink key), the box now reporting its key and nothing kept."""
    s = Store(f"sqlite:///{tmp_path}/db/central.db")
    s.enrol("clinic-a", "box-1", public_pem(Ed25519PrivateKey.generate()), NOW - 100 * DAY)
    s.store(Header("clinic-a", "box-1", "alert", 3), alert_payload(study_ref="c" * 32),
            NOW - 91 * DAY)
    [alert] = s.alerts()
    s.review_alert(alert["id"], "refer", "", "dr-li", now=NOW - 90 * DAY)
    _status(s, 4, seq=0)
    yield s
    s.close()


def _status(store: Store, message_seq: int, seq: int) -> None:
    store.store(Header("clinic-a", "box-1", "status", message_seq),
                status_payload(downlink_key=KEY, downlink_seq=seq), NOW)


def _claim(store: Store, now: float) -> list[tuple[int, int]]:
    return [(p.seq, p.attempts) for p in claim(store.database, now=now, resend_seconds=RESEND)]


def test_an_old_unsent_verdict_is_still_claimed_and_sealable(store):
    [sent] = store.downlinks("clinic-a", "box-1")
    assert sent["created_at"] == NOW - 90 * DAY and sent["sent_at"] is None
    [pending] = claim(store.database, now=NOW, resend_seconds=RESEND)
    assert (pending.seq, pending.attempts, pending.box_key) == (1, 1, KEY)
    signing = Ed25519PrivateKey.generate()
    envelope = downlink.seal_downlink(pending.clinic, pending.device, pending.seq,
                                      pending.payload, downlink.parse_key_text(KEY), signing)
    # the box opens it as authentic but stale: it keeps it late
    header, payload, stale = downlink.open_downlink(
        envelope, clinic="clinic-a", device="box-1", hospital_key=signing.public_key(),
        box_key=BOX_KEY, now=NOW, accept_stale=True)
    assert (header.seq, payload["verdict"], stale) == (1, "refer", True)


def test_the_resend_wait_doubles_up_to_a_day():
    assert [resend_wait(n, RESEND) for n in range(1, 8)] == [
        1800.0, 3600.0, 7200.0, 14_400.0, 28_800.0, 57_600.0, DAY]
    assert resend_wait(1000, RESEND) == MAX_RESEND_SECONDS == DAY
    assert resend_wait(1, 2 * DAY) == resend_wait(5, 2 * DAY) == 2 * DAY  # longer: as set


def test_an_unconfirmed_verdict_is_sent_again_less_and_less_often_until_confirmed(store):
    sent_at = NOW
    assert _claim(store, sent_at) == [(1, 1)]
    for attempts in range(1, 12):
        wait = resend_wait(attempts, RESEND)
        assert _claim(store, sent_at + wait - 1) == [], f"too early after attempt {attempts}"
        sent_at += wait + 1
        assert _claim(store, sent_at) == [(1, attempts + 1)]
    assert wait == DAY
    _status(store, 5, seq=1)  # the box kept it (late): the watermark covers it
    assert _claim(store, sent_at + 30 * DAY) == []


def test_a_claim_released_unpublished_is_retried_at_once(store):
    [pending] = claim(store.database, now=NOW, resend_seconds=RESEND)
    release(store.database, pending, "no PUBACK from the broker")
    assert _claim(store, NOW + 1) == [(1, 2)]
