"""Check the audit chain against the heads the hospital witnessed (``clinibox audit --verify
--witness FILE``).

FILE is what ``clinibox central audit-heads --device CLINIC/DEVICE --witness-file OUT.json``
writes at the hospital::

    {"clinic": "c", "device": "d",
     "heads": [{"row": R, "hash": H, "seq": S, "received_at": T}, ...]}

Each witnessed (row, hash) is checked against the chain as it is now:

* a row in the trail must have that hash (``hash_differs``: the chain was rewritten);
* a row past the trail's last row means rows were cut off its end (``cut_off``);
* a row after the anchor that is not in the trail was deleted (``row_missing``);
* a row before the anchor was pruned: only the anchor's own row can still be checked;
  the others are counted as not checkable (``pruned``), not as a failure.

The file is read as untrusted input: at most :data:`MAX_BYTES`, nesting at most
:data:`MAX_DEPTH`, at most :data:`MAX_HEADS` heads, exactly these keys with these
types; anything else is refused with :class:`BadWitnessFile` (a clear message, no
traceback).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinibox_common.errors import EXIT_USAGE, CliniboxError
from clinibox_common.i18n import N_, gettext
from firmware_app.storage.audit_chain import anchor, read_snapshot
from firmware_app.storage.audit_witness import head

MAX_BYTES = 8 * 2**20
MAX_DEPTH = 4
MAX_HEADS = 100_000
MAX_ROW = 2**63 - 1
HASH = re.compile(r"[0-9a-f]{64}")
IDENTITY = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
FILE_KEYS = frozenset({"clinic", "device", "heads"})
HEAD_KEYS = frozenset({"row", "hash", "seq", "received_at"})
#: a head may also say when its row was written (``at``, from boxes that send it)
OPTIONAL_HEAD_KEYS = frozenset({"at"})

#: why a witnessed head disagrees with the chain (codes a program reads back)
HASH_DIFFERS = "hash_differs"
CUT_OFF = "cut_off"
ROW_MISSING = "row_missing"
PRUNED_EARLY = "pruned_early"
REASONS = {
    HASH_DIFFERS: N_("the hospital saw another hash at this row (the chain was rewritten)"),
    CUT_OFF: N_("the hospital saw this row, but the trail now ends before it (rows cut off)"),
    ROW_MISSING: N_("the hospital saw this row, but it is no longer in the trail (deleted)"),
    PRUNED_EARLY: N_("the hospital saw this row written less than [audit] keep_days ago, but "
                     "the trail now starts after it (deleted, not pruned)"),
}


class BadWitnessFile(CliniboxError, ValueError):
    """A witness file that cannot be read, is too large, or is not the hospital's format."""

    kind = N_("bad witness file")
    exit_status = EXIT_USAGE


@dataclass(frozen=True)
class WitnessedHead:
    """One head the hospital received: the row, its hash, the message's seq and when."""

    row: int
    hash: str
    seq: int
    received_at: float
    at: int | None = None


@dataclass(frozen=True)
class Witness:
    """A parsed witness file."""

    clinic: str
    device: str
    heads: tuple[WitnessedHead, ...]


@dataclass(frozen=True)
class WitnessCheck:
    """The chain against the witness: how many heads were checked, how many could not be
    (pruned), and the first witnessed row that disagrees (None: none does)."""

    checked: int
    pruned: int
    broken_at: int | None = None
    reason: str = ""
    witnessed_hash: str = ""
    chain_hash: str = ""

    @property
    def intact(self) -> bool:
        """Whether every checkable witnessed head agrees with the chain."""
        return self.broken_at is None

    def describe(self) -> str:
        """One line for a person, in the current language."""
        if self.intact:
            return gettext("agrees with %(checked)s head(s) the hospital saw "
                           "(%(pruned)s older one(s) pruned, not checkable)",
                           checked=self.checked, pruned=self.pruned)
        return gettext("broken at row %(row)s: %(reason)s", row=self.broken_at,
                       reason=gettext(REASONS[self.reason]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``reason`` is a code of :data:`REASONS`, or "")."""
        return {"intact": self.intact, "checked": self.checked, "pruned": self.pruned,
                "broken_at": self.broken_at, "reason": self.reason,
                "witnessed_hash": self.witnessed_hash, "chain_hash": self.chain_hash}


def _too_deep(value: Any, level: int = 1) -> bool:
    """Whether ``value`` nests deeper than :data:`MAX_DEPTH` (stops descending there)."""
    if level > MAX_DEPTH:
        return True
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) \
        else ()
    return any(isinstance(v, (dict, list)) and _too_deep(v, level + 1) for v in items)


def _refuse(what: str) -> BadWitnessFile:
    return BadWitnessFile(gettext("%(what)s (expected what clinibox central audit-heads "
                                  "--witness-file writes)", what=what))


def _count(value: Any, top: float) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top


def _head(value: Any, index: int) -> WitnessedHead:
    if not isinstance(value, dict) or not HEAD_KEYS <= set(value) <= HEAD_KEYS | \
            OPTIONAL_HEAD_KEYS:
        raise _refuse(gettext("heads[%(i)s] must be an object with exactly row, hash, seq and "
                              "received_at", i=index))
    row, digest, seq, received = (value[k] for k in ("row", "hash", "seq", "received_at"))
    if not _count(row, MAX_ROW) or not _count(seq, MAX_ROW):
        raise _refuse(gettext("heads[%(i)s]: row and seq must be whole numbers from 0 to 2**63-1",
                              i=index))
    if not isinstance(digest, str) or not HASH.fullmatch(digest):
        raise _refuse(gettext("heads[%(i)s]: hash must be 64 lower-case hexadecimal digits",
                              i=index))
    if isinstance(received, bool) or not isinstance(received, (int, float)) \
            or not 0 <= received < 2**40:
        raise _refuse(gettext("heads[%(i)s]: received_at must be epoch seconds", i=index))
    written = value.get("at")
    if written is not None and not _count(written, 2**40):
        raise _refuse(gettext("heads[%(i)s]: at must be epoch seconds", i=index))
    return WitnessedHead(row, digest, seq, float(received), written)


def parse_witness(data: bytes) -> Witness:
    """The witness in ``data`` (the file's bytes); raises BadWitnessFile."""
    if len(data) > MAX_BYTES:
        raise _refuse(gettext("the file is larger than %(mb)s MB", mb=MAX_BYTES // 2**20))
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _refuse(gettext("not a JSON file in UTF-8")) from None
    if _too_deep(value):
        raise _refuse(gettext("nested too deep"))
    if not isinstance(value, dict) or set(value) != FILE_KEYS:
        raise _refuse(gettext("the file must be an object with exactly clinic, device and heads"))
    clinic, device, heads = value["clinic"], value["device"], value["heads"]
    if not all(isinstance(v, str) and IDENTITY.fullmatch(v) for v in (clinic, device)):
        raise _refuse(gettext("clinic and device must be ids (lower-case letters, digits, "
                              "dashes)"))
    if not isinstance(heads, list) or len(heads) > MAX_HEADS:
        raise _refuse(gettext("heads must be a list of at most %(n)s heads", n=MAX_HEADS))
    return Witness(clinic, device, tuple(_head(h, i) for i, h in enumerate(heads)))


def read_witness(path: Path) -> Witness:
    """Read and parse the witness file at ``path``; raises BadWitnessFile."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise BadWitnessFile(gettext("cannot read %(path)s: %(why)s", path=str(path),
                                     why=exc.strerror or type(exc).__name__)) from None
    return parse_witness(data)


def check_witness(conn: sqlite3.Connection, witness: Witness, *,
                  keep_days: float | None = None, now: float | None = None) -> WitnessCheck:
    """Check every witnessed head against the chain as it is now (in one read snapshot);
    the result names the lowest witnessed row that disagrees.

    With ``keep_days`` (``[audit] keep_days``; 0: nothing is ever pruned), a witnessed row
    the trail no longer holds because its anchor moved past it must have been written more
    than ``keep_days`` before ``now``, as the retention pass only prunes such rows; a
    younger one was deleted (rows cut off the front, dressed up as pruning). Heads without
    ``at`` cannot say. (A keep_days lengthened since the rows were pruned reads as this.)"""
    with read_snapshot(conn):
        return _check(conn, witness, keep_days, time.time() if now is None else now)


def _kept_seconds(keep_days: float) -> float:
    """How long rows are kept (``keep_days`` 0: for ever, nothing is pruned)."""
    return float("inf") if keep_days == 0 else keep_days * 86400


def _check(conn: sqlite3.Connection, witness: Witness, keep_days: float | None,
           now: float) -> WitnessCheck:
    anchor_id, anchor_hash = anchor(conn)
    last_id, _last_hash = head(conn)
    checked = pruned = 0
    for seen in sorted(witness.heads, key=lambda h: (h.row, h.seq)):
        if (keep_days is not None and anchor_id > 0 and seen.row <= anchor_id
                and seen.at is not None and seen.at > now - _kept_seconds(keep_days)):
            return WitnessCheck(checked, pruned, seen.row, PRUNED_EARLY, seen.hash, "")
        if seen.row < anchor_id:
            pruned += 1
            continue
        if seen.row > last_id:
            return WitnessCheck(checked, pruned, seen.row, CUT_OFF, seen.hash, "")
        if seen.row == anchor_id:
            now = anchor_hash
        else:
            row = conn.execute("SELECT hash FROM audit WHERE id = ?", (seen.row,)).fetchone()
            if row is None:
                return WitnessCheck(checked, pruned, seen.row, ROW_MISSING, seen.hash, "")
            now = str(row[0])
        if now != seen.hash:
            return WitnessCheck(checked, pruned, seen.row, HASH_DIFFERS, seen.hash, now)
        checked += 1
    return WitnessCheck(checked, pruned)
