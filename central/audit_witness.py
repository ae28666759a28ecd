"""The hospital as witness of each box's audit trail: what its heartbeats said, and a verdict.

A box's status heartbeat may carry ``"audit": {"row", "hash", "since_row",
"since_hash", "at"}``: the head of its hash-chained audit trail (last row id,
that row's hash and when it was written) and the hash its *current* chain has
at the row its previous heartbeat reported (``since_row``/``since_hash``;
equal to ``row``/``hash`` on its first report). The hospital keeps every head
(``audit_heads``) with one verdict against the head witnessed before it (by
sequence number):

* ``first``     – no earlier head for this device;
* ``extends``   – ``since`` is the last witnessed head, same hash, and the trail grew or stayed;
* ``rewritten`` – ``since_row`` is the last witnessed row but its hash differs: the trail
  was rewritten;
* ``rewound``   – the head is behind the last witnessed row;
* ``gap``       – ``since_row`` is not the last witnessed row: a heartbeat was lost, or the
  box's memory of it altered;
* ``pruned_early`` – the trail now starts after a row the hospital witnessed (the head's
  ``anchor_row``, the last row pruned, is at or past it) although that row was written less
  than the box's ``keep_days`` before this heartbeat (:func:`pruned_early`): rows deleted
  and the anchor moved, not pruned. Checked on every heartbeat that would otherwise
  ``extend`` the trail, so the alarm stays while such a row would still be kept.

The box checks its own trail against :func:`witness_document` (``clinibox
audit --verify --witness FILE``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

FIRST, EXTENDS, REWRITTEN, REWOUND, GAP = "first", "extends", "rewritten", "rewound", "gap"
PRUNED_EARLY = "pruned_early"
#: Every verdict, in the order above.
VERDICTS = (FIRST, EXTENDS, REWRITTEN, REWOUND, GAP, PRUNED_EARLY)
#: The verdicts a person must look at.
ALARMS = (REWRITTEN, REWOUND, GAP, PRUNED_EARLY)
_HASH = re.compile(r"[0-9a-f]{64}")
_MAX_ROW = 2**63 - 1


@dataclass(frozen=True)
class AuditHead:
    """What one heartbeat said about the box's audit trail."""

    row: int
    hash: str
    since_row: int
    since_hash: str
    at: int | None = None
    #: the last row pruned (the trail starts after it); None from boxes that do not say
    anchor_row: int | None = None
    #: the box's ``[audit] keep_days`` (0: nothing is ever pruned); None: not said
    keep_days: float | None = None


def _row(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_ROW


def _hash(value: Any) -> bool:
    return isinstance(value, str) and _HASH.fullmatch(value) is not None


def audit_head(payload: dict[str, Any]) -> AuditHead | None:
    """The ``audit`` field of a status payload, or None when absent or not well formed."""
    audit = payload.get("audit")
    keys = {"row", "hash", "since_row", "since_hash"}
    if not isinstance(audit, dict) or not keys <= set(audit) <= keys | _OPTIONAL_KEYS:
        return None
    if not (_row(audit["row"]) and _row(audit["since_row"]) and _hash(audit["hash"])
            and _hash(audit["since_hash"]) and _row(audit.get("at", 0))
            and _row(audit.get("anchor_row", 0)) and _days(audit.get("keep_days", 0))):
        return None
    keep = audit.get("keep_days")
    return AuditHead(audit["row"], audit["hash"], audit["since_row"], audit["since_hash"],
                     audit.get("at"), audit.get("anchor_row"),
                     None if keep is None else float(keep))


#: what a head may say besides its row and hashes
_OPTIONAL_KEYS = {"at", "anchor_row", "keep_days"}


def _days(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and 0 <= value <= 36500


def pruned_early(head: AuditHead, witnessed: list[tuple[int, int | None]],
                 now: float) -> int | None:
    """The lowest row of ``witnessed`` (``(row, at)`` the hospital saw before) that the
    trail no longer holds although it was written less than ``keep_days`` before ``now``
    (the box's clock, as ``at`` is); None when there is none, or the head does not say
    where the trail starts. ``keep_days`` 0 keeps every row: any witnessed row gone is."""
    if not head.anchor_row or head.keep_days is None:
        return None
    oldest_kept = float("-inf") if head.keep_days == 0 else now - head.keep_days * 86400
    gone = [row for row, at in witnessed
            if 0 < row <= head.anchor_row and at is not None and at > oldest_kept]
    return min(gone, default=None)


def verdict(previous: tuple[int, str] | None, head: AuditHead) -> str:
    """The verdict on ``head`` given the last witnessed ``(row, hash)`` (None: none yet)."""
    if previous is None:
        return FIRST
    last_row, last_hash = previous
    if head.since_row == last_row:
        if head.since_hash != last_hash:
            return REWRITTEN
        return EXTENDS if head.row >= last_row else REWOUND
    return REWOUND if head.row < last_row else GAP


def witness_document(clinic: str, device: str,
                     heads: list[dict[str, Any]]) -> dict[str, Any]:
    """The witness file of one device: its heads, by sequence number.

    ``heads`` are rows with ``row``, ``hash``, ``seq``, ``received_at`` and ``at`` (when
    the head row was written; None from a box that did not say).
    """
    ordered = sorted(heads, key=lambda h: int(h["seq"]))
    return {"clinic": clinic, "device": device,
            "heads": [{"row": int(h["row"]), "hash": str(h["hash"]), "seq": int(h["seq"]),
                       "received_at": float(h["received_at"]),
                       **({"at": int(h["at"])} if h.get("at") is not None else {})}
                      for h in ordered]}
