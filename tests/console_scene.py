"""A hospital console's day, as its store holds it after real messages: a clinic in Chinese
words, a box that reported an alert with lesions (and a second box with an overdue and a
routine one), heartbeats, a summary, a rollout whose download it reported five times (at
each tenth of the package), a model install and the restart that loads it, and an audit trail
that names a box and a rollout.

Every box message goes through :meth:`central.store.Store.store`, as the receiver stores a
verified message, so the pages read what the receiver made of it (``box_state``, the drift
points, the rollout's step).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import reviews
from central.store import Store
from clinibox_common.contracts import downlink
from clinibox_common.contracts.envelope import Header
from tests.telemetry_payloads import alert_payload, public_pem, status_payload, summary_payload

CLINIC, DEVICE, QUIET = "qingshan-1", "box-1", "box-2"
MODEL = "chest-lesion@2.1.0"
#: the box's downlink key (it takes the hospital's verdicts and rollouts)
KEY = downlink.key_text(downlink.parse_key_text("CQ" + "A" * 41 + "="))
HEAD = {"row": 52, "hash": "ab" * 32, "since_row": 52, "since_hash": "ab" * 32, "at": 5}


@dataclass
class Scene:
    """What :func:`build` made: the alert's id and the rollout's."""

    alert_id: int
    rollout_id: int
    now: float


def _send(store: Store, seq: list[int], kind: str, payload: dict[str, Any], at: float,
          device: str = DEVICE) -> None:
    seq[0] += 1
    assert store.store(Header(CLINIC, device, kind, seq[0]), payload, at)


def _event(event: str, reason: str, made: float, **extra: Any) -> dict[str, Any]:
    return {"schema": 1, "created_at": int(made), "event": event, "reason": reason,
            "unit": "clinibox", "subject_model": MODEL, "model": "chest-lesion@2.0.0", **extra}


#: the main box's finding threshold: its clinic's own, from its confirmed cases
THRESHOLD = {"finding": 0.0412, "package": 0.1293, "state": "calibrated", "lesions": 24,
             "clear": 31}


def build(store: Store, *, restarting: bool = True, now: float | None = None) -> Scene:
    """Fill ``store`` with the day; ``restarting``: the box's last word is the ``offline`` of
    the restart that loads the model it has just installed (else it is back online)."""
    now = time.time() if now is None else now
    store.set_clinic(CLINIC, "青山乡卫生院", "河西县")
    for device in (DEVICE, QUIET):
        store.enrol(CLINIC, device, public_pem(Ed25519PrivateKey.generate()), now=now - 86400)
    with store.database.transaction(write=True) as tx:  # a rollout of the new model to it
        row = tx.execute(
            "INSERT INTO rollouts (name, version, archive_sha256, archive_bytes, unpacked_bytes,"
            " chunk_bytes, chunk_sha256, signer, canary, wave_size, state, created_by,"
            " created_at, updated_at) VALUES ('chest-lesion', '2.1.0', ?, 4700000, 9000000,"
            " 65536, '[]', 'hospital', 1, 10, 'active', 'it1', ?, ?) RETURNING id",
            ("c" * 64, now - 3600, now - 3600)).fetchone()
        rollout_id = int(row[0])
        tx.execute("INSERT INTO rollout_targets (rollout_id, clinic, device, wave, offer_seq,"
                   " offered_at, step, updated_at) VALUES (?, ?, ?, 0, 1, ?, 'sent', ?)",
                   (rollout_id, CLINIC, DEVICE, now - 3500, now - 3500))
        reviews.audit(tx, "it1", "10.0.0.5", "rollout_started", f"rollout:{rollout_id}",
                      f"{MODEL} to 1 boxes", now - 3600)
        reviews.audit(tx, "it1", "10.0.0.5", "drift_decision", f"box:{CLINIC}/{DEVICE}",
                      f"hold_rollout:{rollout_id}", now - 3000)
        reviews.audit(tx, "it1", "10.0.0.5", "rollback_sent", f"box:{CLINIC}/{QUIET}",
                      f"rollout {rollout_id}: {MODEL}", now - 2900)
    seq = [0]
    made = now - 3000
    # the hourly summary: the queue was 6 then, and the disk 73.2 %
    _send(store, seq, "summary", summary_payload(
        created_at=int(made), period_start=int(made) - 3600, period_end=int(made),
        model="chest-lesion@2.0.0", queue_depth=6, disk_used_pct=73.2), made + 5)
    _send(store, seq, "alert", alert_payload(
        created_at=int(made) + 60, model="chest-lesion@2.0.0", score=0.9995, threshold=0.88,
        finding="lesion", assessment="finding", instances=3, modality="CT",
        study_ref="5f" * 16, lesions=[{"label": "lesion", "score": 0.77, "size_mm": 12.3}]),
        made + 65)
    for step, tenths in (("offered", None), *(("downloading", n) for n in range(1, 6)),
                         ("downloaded", None), ("verified", None), ("golden_passed", None)):
        made += 60
        progress = {} if tenths is None else {"received_bytes": 470_000 * tenths,
                                              "total_bytes": 4_700_000}
        _send(store, seq, "event", _event("rollout", "hospital", made, rollout=rollout_id,
                                          step=step, **progress), made + 2)
    # heartbeats: the box has analysed everything
    for _ in range(3):
        made += 300
        _send(store, seq, "status", status_payload(
            "heartbeat", created_at=int(made), model="chest-lesion@2.0.0", queue_depth=0,
            audit=HEAD, downlink_key=KEY, downlink_seq=0, threshold=THRESHOLD), made + 1)
    made = now - 240
    _send(store, seq, "event", _event("model_installed", "hospital", made, rollout=rollout_id,
                                      model=MODEL), made + 1)
    _send(store, seq, "status", status_payload("offline", created_at=int(made) + 20, model=MODEL,
                                               queue_depth=0), made + 21)
    if not restarting:
        _send(store, seq, "status", status_payload(
            "online", created_at=int(made) + 80, model=MODEL, queue_depth=0, audit=HEAD),
            made + 81)
    # a second box that has sent only a heartbeat: no summary, so no disk yet; its alert has
    # waited two hours (overdue), a third one is routine
    quiet = [0]
    for score, ago in ((0.62, 7200), (0.71, 600)):
        _send(store, quiet, "alert", alert_payload(
            created_at=int(now - ago) - 5, model=MODEL, score=score, threshold=0.5,
            finding="lesion", assessment="finding", instances=1, modality="US",
            study_ref=f"{int(ago):032x}", lesions=[{"label": "lesion", "score": score}]),
            now - ago, device=QUIET)
    _send(store, quiet, "status", status_payload("heartbeat", created_at=int(now) - 100,
                                                 model=MODEL, queue_depth=2, downlink_key=KEY,
                                                 downlink_seq=0), now - 99, device=QUIET)
    with store.database.transaction(write=False) as tx:
        alert_id = int(tx.execute("SELECT id FROM alerts WHERE device = ?",
                                  (DEVICE,)).fetchone()[0])
    return Scene(alert_id=alert_id, rollout_id=rollout_id, now=now)
