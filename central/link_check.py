"""The hospital's test of a box's link: a signed ``link_check`` sent down, confirmed by the box.

``clinibox central check-box CLINIC/BOX`` and the console's "test the link" button queue a
``link_check`` downlink (``contracts/downlink.py``) under the box's next downlink sequence
number, as a verdict is queued. ``central serve``'s downlink publisher seals it to the box and
publishes it; the box keeps it and sends a status at once, whose ``downlink_seq`` (the
watermark of every downlink kept) covers it. So a confirmed check proves both directions on
the day a box is enrolled, before the first patient: the broker, the box's certificate and
ACL, the box's trust in the hospital's downlink signing key, the box's downlink key reported
up, and its status read back here.

:func:`refusal` says, before anything is queued, why a check cannot work (and the fix);
:func:`progress` says where a queued check stands; :func:`diagnosis` says what to look at when
it is not confirmed in time. Each is a code (:class:`LinkCheckState`, :class:`LinkCheckProblem`)
that the console and the command word in the reader's language.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from central.config import CentralConfig
from central.reviews import audit, queue_downlink
from central.sql import Database
from clinibox_common.contracts import downlink
from clinibox_common.contracts.words import Word
from clinibox_common.i18n import N_, gettext

#: the console's audit action of a link check
AUDIT_ACTION = "link_check"


class LinkCheckState(Word):
    """Where a queued link check stands."""

    QUEUED = "queued"
    """Waiting for ``central serve``'s downlink publisher to send it."""
    SENT = "sent"
    """The broker took it; the box has not confirmed it yet."""
    CONFIRMED = "confirmed"
    """The box's status covers it: both directions work."""


class LinkCheckProblem(Word):
    """Why a link check cannot be made, or was not confirmed."""

    NOT_ENROLLED = "not_enrolled"
    """The box is not enrolled here (``central enrol-code``)."""
    REVOKED = "revoked"
    """The box's enrolment was revoked."""
    NO_SIGNING_KEY = "no_signing_key"
    """``[keys] hospital_signing_key`` is not set: nothing can be signed for the boxes."""
    NO_DOWNLINK_KEY = "no_downlink_key"
    """The box never reported its downlink key: it was given no downlink signing key in its
    bundle, or has not sent a status since it was enrolled."""
    NOT_SENT = "not_sent"
    """Not published: ``central serve`` is not running, or cannot reach the broker."""
    NOT_CONFIRMED = "not_confirmed"
    """Published, but the box has not confirmed it: the box is offline, or trusts another
    hospital downlink signing key than the one ``central serve`` signs with."""


#: The commands and settings the words name, never translated: ``%(name)s`` in the words
#: (the console shows each as code, marked not to be translated; the command line as it is).
LITERALS: dict[str, str] = {
    "serve": "clinibox central serve",
    "enrol": "clinibox central enrol-code CODE",
    "generate": "clinibox keys generate --kind hospital-signing --out "
                "/etc/clinibox-central/hospital-signing",
    "setting": "[keys] hospital_signing_key",
    "option": "--hospital-signing-key",
    "provision": "clinibox provision --force",
}
#: Each state in words (English, for the catalog): the console and ``check-box`` say the same.
STATE_WORDS: dict[str, str] = {
    LinkCheckState.QUEUED: N_("waiting to be sent: the receiver (%(serve)s) sends it within "
                              "seconds"),
    LinkCheckState.SENT: N_("sent to the box; waiting for its answer"),
    LinkCheckState.CONFIRMED: N_("the box answered: the link works both ways"),
}
#: Each problem with its fix, in words (English, for the catalog).
PROBLEM_WORDS: dict[str, str] = {
    LinkCheckProblem.NOT_ENROLLED: N_(
        "This box is not enrolled here. Enrol the code its provisioning printed: %(enrol)s."),
    LinkCheckProblem.REVOKED: N_(
        "This box's enrolment was revoked; nothing is sent to it. Enrol it again if it is "
        "back in service."),
    LinkCheckProblem.NO_SIGNING_KEY: N_(
        "The receiver has no downlink signing key, so nothing can go down to the boxes. Make "
        "it once (%(generate)s), set %(setting)s to the file it makes that ends in .pem, and "
        "restart %(serve)s."),
    LinkCheckProblem.NO_DOWNLINK_KEY: N_(
        "The box has never said it takes the hospital's messages. Either its bundle was made "
        "without %(option)s (make a new bundle with it, then run %(provision)s on the box), "
        "or it has not connected since it was enrolled (check it is running and reaches the "
        "broker)."),
    LinkCheckProblem.NOT_SENT: N_(
        "The test has not been sent: %(serve)s is not running, or it cannot reach the broker. "
        "Start it and look at its log."),
    LinkCheckProblem.NOT_CONFIRMED: N_(
        "The test was sent but the box has not answered. Check that the box is on and "
        "connected (its last status time), and that its bundle's %(option)s is the public half "
        "of this receiver's %(setting)s (the box's event log then says a hospital message was "
        "refused)."),
}


def _said(words: str, literal: Callable[[str], str]) -> str:
    """``words`` in the reader's language with each literal (``LITERALS``) put in by
    ``literal`` (the console marks them as code; the command line prints them as they are)."""
    return gettext(words) % {name: literal(text) for name, text in LITERALS.items()}


def state_words(state: str, literal: Callable[[str], str] = str) -> str:
    """A check's state in the reader's language."""
    return _said(STATE_WORDS[state], literal)


def problem_words(problem: str, literal: Callable[[str], str] = str) -> str:
    """A problem and its fix in the reader's language."""
    return _said(PROBLEM_WORDS[problem], literal)


@dataclass(frozen=True)
class LinkCheck:
    """One queued check and where it stands."""

    clinic: str
    device: str
    seq: int
    queued_at: float
    sent_at: float | None
    confirmed: bool
    box_last_seen: float | None

    @property
    def state(self) -> LinkCheckState:
        """Queued, sent or confirmed."""
        if self.confirmed:
            return LinkCheckState.CONFIRMED
        return LinkCheckState.SENT if self.sent_at is not None else LinkCheckState.QUEUED


def refusal(database: Database, config: CentralConfig, clinic: str,
            device: str) -> LinkCheckProblem | None:
    """Why a check of ``clinic/device`` cannot work at all, or None."""
    with database.transaction(write=False) as tx:
        enrolled = tx.execute("SELECT revoked_at FROM devices WHERE clinic = ? AND device = ?",
                              (clinic, device)).fetchone()
        box = tx.execute("SELECT downlink_key FROM box_state WHERE clinic = ? AND device = ?",
                         (clinic, device)).fetchone()
    if enrolled is None:
        return LinkCheckProblem.NOT_ENROLLED
    if enrolled[0] is not None:
        return LinkCheckProblem.REVOKED
    if not config.keys.hospital_signing_key:
        return LinkCheckProblem.NO_SIGNING_KEY
    if box is None or not box[0]:
        return LinkCheckProblem.NO_DOWNLINK_KEY
    return None


def queue(database: Database, clinic: str, device: str, *, account: str, address: str = "",
          now: float | None = None) -> int:
    """Queue a link check for the box and audit it (one transaction); its sequence number."""
    now = time.time() if now is None else now
    with database.transaction(write=True) as tx:
        seq = queue_downlink(tx, clinic, device, downlink.KIND_LINK_CHECK,
                             downlink.link_check_payload(now), now)
        audit(tx, account, address, AUDIT_ACTION, f"box:{clinic}/{device}", str(seq), now)
    return seq


def progress(database: Database, clinic: str, device: str, seq: int) -> LinkCheck | None:
    """Where the check ``seq`` of the box stands, or None when there is no such check."""
    with database.transaction(write=False) as tx:
        row = tx.execute(
            "SELECT d.created_at, d.sent_at, b.downlink_seq, b.last_seen FROM downlinks d"
            " LEFT JOIN box_state b ON b.clinic = d.clinic AND b.device = d.device"
            " WHERE d.clinic = ? AND d.device = ? AND d.seq = ? AND d.kind = ?",
            (clinic, device, int(seq), downlink.KIND_LINK_CHECK)).fetchone()
    if row is None:
        return None
    queued_at, sent_at, watermark, last_seen = row
    return LinkCheck(clinic, device, int(seq), float(queued_at),
                     None if sent_at is None else float(sent_at),
                     watermark is not None and int(watermark) >= int(seq),
                     None if last_seen is None else float(last_seen))


def latest(database: Database, clinic: str, device: str) -> LinkCheck | None:
    """The box's most recent link check, or None."""
    with database.transaction(write=False) as tx:
        row = tx.execute("SELECT MAX(seq) FROM downlinks WHERE clinic = ? AND device = ?"
                         " AND kind = ?", (clinic, device, downlink.KIND_LINK_CHECK)).fetchone()
    if row is None or row[0] is None:
        return None
    return progress(database, clinic, device, int(row[0]))


def diagnosis(check: LinkCheck) -> LinkCheckProblem | None:
    """What is wrong with a check not confirmed (None once confirmed)."""
    if check.state is LinkCheckState.CONFIRMED:
        return None
    return LinkCheckProblem.NOT_SENT if check.sent_at is None \
        else LinkCheckProblem.NOT_CONFIRMED


def wait(database: Database, clinic: str, device: str, seq: int, *, timeout: float,
         poll: float = 0.5, clock: Any = time) -> LinkCheck:
    """Poll until the check is confirmed or ``timeout`` seconds have passed; where it stands."""
    deadline = clock.monotonic() + timeout
    while True:
        found = progress(database, clinic, device, seq)
        assert found is not None, "the check was queued by the caller"
        if found.confirmed or clock.monotonic() >= deadline:
            return found
        clock.sleep(poll)
