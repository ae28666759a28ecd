"""The receiver's intake: what it took off the broker, held in the database, handled in turns.

Reading from the broker costs a fraction of a millisecond a message; checking one (signature,
decryption, schema, store) costs milliseconds. So the broker link (:class:`central.receiver.
MqttService`) only *takes in*: each message goes into ``intake`` with its topic's box, in one
transaction a batch, and is acknowledged to the broker once that transaction committed
(nothing acknowledged is ever lost: a receiver stopped or killed finds it there when it
starts again). Then it handles the held messages **in turns across the boxes**
(:meth:`Intake.next_turn`): each box's oldest first, then each box's second, at most
:data:`PER_BOX` of one box a turn, so a box that floods the hospital takes one box's share of
the receiver and every other box's messages are handled within a turn or two of arriving.
What a box sent beyond its share is *held* here, not dropped; a box with more than ``[receiver]
flood_messages`` held is marked on the console's fleet page (:func:`held`).

A box is known by its topic (``clinibox/<clinic>/<device>/<kind>``: the broker's ACL lets a
box publish only on its own); a message on any other topic is held under the empty box.
Each receiver handles the rows it took in (``receiver``: its ``[mqtt] client_id``), as the
broker keeps each receiver's session apart. The table is :mod:`central.schema`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from central.sql import Database
from clinibox_common.contracts import topics

__all__ = ["PER_BOX", "TURN", "Held", "Intake", "box_of", "held"]

#: A box's messages handled in one turn at most.
PER_BOX = 4
#: Messages handled in one turn at most (across all boxes).
TURN = 32

#: The ids of the next turn: each box's oldest first, then each box's second, ...
_TURN = ("SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY clinic, device"
         " ORDER BY id) AS turn FROM intake WHERE receiver = ?) AS held"
         " WHERE turn <= ? ORDER BY turn, id LIMIT ?")


@dataclass(frozen=True)
class Held:
    """One message held in the intake."""

    id: int
    topic: str
    payload: bytes
    received_at: float


def box_of(topic: str) -> tuple[str, str]:
    """The ``(clinic, device)`` a topic belongs to; ``("", "")`` for any other topic."""
    parsed = topics.parse_topic(topic)
    return ("", "") if parsed is None else (parsed[0], parsed[1])


def held(db: Database) -> dict[tuple[str, str], int]:
    """How many messages each box has waiting in the intake (every receiver's)."""
    with db.transaction(write=False) as tx:
        rows = tx.execute("SELECT clinic, device, COUNT(*) FROM intake"
                          " GROUP BY clinic, device").fetchall()
    return {(str(c), str(d)): int(n) for c, d, n in rows}


class Intake:
    """One receiver's intake (rows of ``receiver``) in ``db``."""

    def __init__(self, db: Database, receiver: str) -> None:
        """Hold and hand out the messages of the receiver ``receiver``."""
        self._db = db
        self.receiver = receiver

    def put(self, messages: Iterable[tuple[str, bytes, float]]) -> int:
        """Hold ``(topic, payload, received_at)`` messages, in one transaction; how many.

        Raises :class:`central.sql.StoreError` when the database cannot (nothing is held
        then: the caller must not acknowledge them).
        """
        rows = [(self.receiver, *box_of(topic), topic, float(at), bytes(payload))
                for topic, payload, at in messages]
        if rows:
            with self._db.transaction(write=True) as tx:
                for row in rows:
                    tx.execute("INSERT INTO intake (receiver, clinic, device, topic, received_at,"
                               " payload) VALUES (?, ?, ?, ?, ?, ?)", row)
        return len(rows)

    def next_turn(self, per_box: int = PER_BOX, limit: int = TURN) -> list[Held]:
        """The next messages to handle, in turns across the boxes (see the module's text)."""
        with self._db.transaction(write=False) as tx:
            ids = [int(r[0]) for r in tx.execute(
                _TURN, (self.receiver, int(per_box), int(limit))).fetchall()]
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            rows = {int(r[0]): r for r in tx.execute(
                f"SELECT id, topic, payload, received_at FROM intake WHERE id IN ({marks})",
                ids).fetchall()}
        return [Held(i, str(rows[i][1]), bytes(rows[i][2]), float(rows[i][3]))
                for i in ids if i in rows]

    def done(self, message_id: int) -> None:
        """Let go of a handled message (its outcome is recorded)."""
        with self._db.transaction(write=True) as tx:
            tx.execute("DELETE FROM intake WHERE id = ?", (int(message_id),))

    def waiting(self) -> int:
        """How many messages this receiver holds."""
        with self._db.transaction(write=False) as tx:
            return int(tx.execute("SELECT COUNT(*) FROM intake WHERE receiver = ?",
                                  (self.receiver,)).fetchone()[0])
