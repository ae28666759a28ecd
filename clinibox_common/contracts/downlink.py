"""The hospital's downlink: a radiologist's verdict on an alert, sent back to the box.

Wire format: the telemetry envelope (``contracts/envelope.py``) with the roles turned
round, and its own HKDF ``info`` (:data:`HKDF_INFO`), so an uplink envelope never opens
as a downlink one:

* signed with the hospital's Ed25519 **downlink signing key** (the box trusts its
  public half: ``[telemetry] hospital_signing_key``, from the enrolment bundle);
* encrypted to the box's own X25519 **downlink key**, made on the box on first start
  and reported (public half only) in its signed status messages (``downlink_key``);
* the header names the box it is for (``clinic``, ``device``), the kind (``review``: a
  verdict; ``rollout``: an offer of a hospital-signed model package; ``rollback``: go back to
  the package that ran before a rollout's; ``link_check``: the hospital's test that both
  directions work, answered at once by a status that confirms it; ``clock``: the hospital's
  time, to a box whose status showed its clock behind) and the hospital's sequence number
  for that box (1, 2, 3 …); the box keeps each sequence number once. A message from the
  future is refused, except by the box: its clock is the one that may be wrong, and it moves
  its clock forward to the hospital's signed time. A message built more than
  :data:`MAX_AGE_DAYS` ago is refused as ``stale`` by default, but an authentic one (signed,
  for this box, schema ok) is still the radiologist's verdict: the box asks for it with
  ``accept_stale=True``, keeps it marked late and lets its sequence number settle the
  watermark, so a box offline for over a month is never left with a gap.

Topic: ``clinibox-downlink/<clinic>/<device>``, a root of its own (the receiver's
``clinibox/+/+/+`` never sees it). The broker's ACL lets a box read only its own::

    pattern read clinibox-downlink/%u
    user central-receiver
    topic write clinibox-downlink/#

A rollout's package itself is not in the offer: it waits, retained, in chunks on
``clinibox-packages/<archive sha256>/<index>`` (:func:`chunk_topic`), which every box may
read and only the hospital write. The offer, signed and sealed like a verdict, lists each
chunk's SHA-256, so a chunk is checked on arrival and nothing unsigned is ever kept; the
box takes one chunk at a time, at its own pace (``[updates] max_kbps``).

Nothing identifying goes down: the study is named by the box's own keyed reference
(``study_ref``), the alert by the box's own message sequence number; the verdict is a
word (:class:`HospitalVerdict`) and the note a short free text (at most
:data:`MAX_NOTE` characters) written by the hospital, which never holds identifiers.
"""

from __future__ import annotations

import base64
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Literal, overload

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from clinibox_common.contracts.egress import (
    MAX_SECONDS,
    SHA256_HEX,
    STUDY_REF,
    EgressRefused,
    Int,
    ListOf,
    Obj,
    OneOf,
    Optional,
    Pattern,
    check_identity,
)
from clinibox_common.contracts.envelope import EnvelopeError, Header, open_envelope, seal
from clinibox_common.contracts.words import Word
from clinibox_common.i18n import N_, gettext, ngettext

ROOT = "clinibox-downlink"
#: the root of a rollout's package chunks (``clinibox-packages/<archive sha256>/<index>``)
PACKAGE_ROOT = "clinibox-packages"
#: a radiologist's verdict on an alert
KIND_REVIEW = "review"
#: an offer of a hospital-signed model package (``rollout_payload``)
KIND_ROLLOUT = "rollout"
#: an order to go back to the package that ran before a rollout's (``rollback_payload``)
KIND_ROLLBACK = "rollback"
#: the hospital's test of the link (``link_check_payload``): the box keeps it and answers
#: with a status at once, whose ``downlink_seq`` confirms it (``clinibox central check-box``)
KIND_LINK_CHECK = "link_check"
#: the hospital's time, sent when a box's status shows its clock behind (``clock_payload``):
#: the box moves its clock forward to the message's ``created_at`` (``central/box_clock.py``)
KIND_CLOCK = "clock"
SCHEMA_VERSION = 1
#: HKDF info of downlink envelopes (the uplink's is ``clinibox telemetry v1``)
HKDF_INFO = b"clinibox downlink v1"
#: characters of a radiologist's note (the envelope's string bound is 256)
MAX_NOTE = 256
#: months a follow-up may be asked for
MAX_FOLLOW_UP_MONTHS = 60
#: the box refuses a downlink built longer ago than this (days), or this far in the future
MAX_AGE_DAYS = 30.0
FUTURE_SKEW_SECONDS = 86_400.0
#: a box whose clock is behind the hospital's by more than this (seconds) takes the hospital's
#: signed time; the hospital sends its time to a box whose status is behind by more than this
CLOCK_TOLERANCE_SECONDS = 120.0
_RAW_KEY_BYTES = 32
#: a package's chunks are listed in the offer, one hash each: at most the envelope's list bound
MAX_CHUNKS = 256
#: the smallest and largest chunk a rollout sends (bytes)
MIN_CHUNK_BYTES, MAX_CHUNK_BYTES = 4096, 8 * 2**20
#: the largest package archive a rollout offers (bytes), and its unpacked size
MAX_ARCHIVE_BYTES = MAX_CHUNKS * MAX_CHUNK_BYTES
MAX_UNPACKED_BYTES = 4 * 2**30
PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
PACKAGE_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+-]{0,31}$")


class HospitalVerdict(Word):
    """What the hospital's radiologist advises for an alert's patient."""

    REFER = "refer"
    """Refer the patient to the hospital."""
    FOLLOW_UP = "follow_up"
    """Image the patient again in ``follow_up_months`` months."""
    NO_ACTION = "no_action"
    """Nothing needs doing."""
    SEND_CASE = "send_case"
    """The clinic should send the case, de-identified, for a second read."""


class AlertState(Word):
    """Where an alert stands at the hospital."""

    NEW = "new"
    """Received; nobody has opened it."""
    UNDER_REVIEW = "under_review"
    """A radiologist has it open."""
    REVIEWED = "reviewed"
    """A verdict was given (and sent to the box)."""


VERDICTS = tuple(verdict.value for verdict in HospitalVerdict)
#: Each verdict in words (English, for the catalog): the one wording the console, the box's
#: pages and its command line show (``follow_up`` with its months: ``follow up in N months``).
VERDICT_WORDS: dict[str, str] = {
    HospitalVerdict.REFER: N_("refer the patient"),
    HospitalVerdict.FOLLOW_UP: N_("follow up"),
    HospitalVerdict.NO_ACTION: N_("no action needed"),
    HospitalVerdict.SEND_CASE: N_("send the case, de-identified, for a second read"),
}


def verdict_words(word: str | None, months: int | None = None) -> str:
    """A hospital verdict in the reader's language, with its months for a follow-up:
    "refer the patient", "follow up in 6 months" (an unknown word is shown as it is)."""
    if word is None or word == "":
        return ""
    if word == HospitalVerdict.FOLLOW_UP and months:
        return ngettext("follow up in %(num)s month", "follow up in %(num)s months", months)
    english = VERDICT_WORDS.get(word)
    return gettext(english) if english else word.replace("_", " ")


class ReviewProblem(Word):
    """Why a verdict cannot go to the box: the one rule (:func:`review_problem`) that the
    console's review form, ``clinibox central review``, the message builder
    (:func:`review_payload`) and the box (:func:`open_downlink`) share. A code, not a
    sentence: each side says it in its own words (the console's page, the command's
    refusal) or refuses (:class:`ReviewRefused`)."""

    NO_VERDICT = "no_verdict"
    """The verdict is not one of :data:`VERDICTS`."""
    NOTE_TOO_LONG = "note_too_long"
    """The note is longer than :data:`MAX_NOTE` characters."""
    NOTE_NOT_TEXT = "note_not_text"
    """The note is not printable text (a control character; a line break is text)."""
    MONTHS_MISSING = "months_missing"
    """A ``follow_up`` verdict without its months."""
    MONTHS_NOT_FOLLOW_UP = "months_not_follow_up"
    """Months given with a verdict other than ``follow_up``."""
    MONTHS_OUT_OF_RANGE = "months_out_of_range"
    """Months outside 1 to :data:`MAX_FOLLOW_UP_MONTHS`."""


def _text_problem(value: Any, limit: int) -> ReviewProblem | None:
    """Whether ``value`` is printable text of at most ``limit`` characters (line breaks
    allowed): None, or the problem with it."""
    if isinstance(value, str) and len(value) > limit:
        return ReviewProblem.NOTE_TOO_LONG
    if not isinstance(value, str) or any(not (c.isprintable() or c == "\n") for c in value):
        return ReviewProblem.NOTE_NOT_TEXT
    return None


def review_problem(verdict: Any, note: Any, follow_up_months: Any) -> ReviewProblem | None:
    """What is wrong with a verdict, its note and its follow-up months, first problem first;
    None when the box would take them. The one place this rule is decided."""
    if verdict not in VERDICTS:
        return ReviewProblem.NO_VERDICT
    problem = _text_problem(note, MAX_NOTE)
    if problem is not None:
        return problem
    follow_up = verdict == HospitalVerdict.FOLLOW_UP
    if follow_up and follow_up_months is None:
        return ReviewProblem.MONTHS_MISSING
    if not follow_up and follow_up_months is not None:
        return ReviewProblem.MONTHS_NOT_FOLLOW_UP
    if follow_up_months is not None and (
            isinstance(follow_up_months, bool) or not isinstance(follow_up_months, int)
            or not 1 <= follow_up_months <= MAX_FOLLOW_UP_MONTHS):
        return ReviewProblem.MONTHS_OUT_OF_RANGE
    return None


class ReviewRefused(EgressRefused):
    """A review payload refused by :func:`review_problem`; ``problem`` says why (a code)."""

    def __init__(self, problem: ReviewProblem) -> None:
        super().__init__(f"{KIND_REVIEW}: {problem}")
        self.problem = problem


@dataclass(frozen=True)
class Text:
    """A printable free text of at most ``limit`` characters (no control characters)."""

    limit: int

    def check(self, value: Any, where: str, labels: frozenset[str] | None) -> None:
        """Refuse anything but a printable string within the limit."""
        problem = _text_problem(value, self.limit)
        if problem is ReviewProblem.NOTE_TOO_LONG or not isinstance(value, str):
            raise EgressRefused(f"{where}: must be text of at most {self.limit} characters")
        if problem is not None:
            raise EgressRefused(f"{where}: control characters are not allowed")


#: The closed schema of each downlink kind (what the box accepts, nothing else).
SCHEMAS: dict[str, Obj] = {
    KIND_REVIEW: Obj({
        #: the schema version (:data:`SCHEMA_VERSION`); the box refuses any other
        "schema": Int(SCHEMA_VERSION, SCHEMA_VERSION),
        #: when the hospital built the message (epoch seconds, the hospital's clock)
        "created_at": Int(0, MAX_SECONDS),
        #: the study, as the box's own keyed reference from the alert
        "study_ref": Pattern(STUDY_REF, "study reference (keyed hash)"),
        #: the box's sequence number of the alert message reviewed
        "alert_seq": Int(1, 2**63 - 1),
        #: the radiologist's verdict
        "verdict": OneOf(VERDICTS),
        #: months until the follow-up (``follow_up`` only)
        "follow_up_months": Optional(Int(1, MAX_FOLLOW_UP_MONTHS)),
        #: the radiologist's note ("" for none)
        "note": Text(MAX_NOTE),
        #: when the verdict was given (epoch seconds, the hospital's clock)
        "reviewed_at": Int(0, MAX_SECONDS),
    }),
    KIND_ROLLOUT: Obj({
        "schema": Int(SCHEMA_VERSION, SCHEMA_VERSION),
        "created_at": Int(0, MAX_SECONDS),
        #: the hospital's rollout number (the box's device events name it)
        "rollout": Int(1, 2**63 - 1),
        #: the package offered: its name (the box runs only its own ``[models] name``) and
        #: version; the box checks both again in the package's signed manifest
        "name": Pattern(PACKAGE_NAME, "package name"),
        "version": Pattern(PACKAGE_VERSION, "package version"),
        #: the archive (``contracts/package_archive.py``): its SHA-256, size and unpacked size
        "archive_sha256": Pattern(SHA256_HEX, "SHA-256"),
        "archive_bytes": Int(1, MAX_ARCHIVE_BYTES),
        "unpacked_bytes": Int(1, MAX_UNPACKED_BYTES),
        #: the size of every chunk but the last, and each chunk's SHA-256 in order
        "chunk_bytes": Int(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES),
        "chunk_sha256": ListOf(Pattern(SHA256_HEX, "SHA-256"), MAX_CHUNKS),
    }),
    KIND_ROLLBACK: Obj({
        "schema": Int(SCHEMA_VERSION, SCHEMA_VERSION),
        "created_at": Int(0, MAX_SECONDS),
        #: the rollout being undone
        "rollout": Int(1, 2**63 - 1),
        #: the package to leave: the box goes back only while it runs this one
        "name": Pattern(PACKAGE_NAME, "package name"),
        "version": Pattern(PACKAGE_VERSION, "package version"),
    }),
    KIND_LINK_CHECK: Obj({
        "schema": Int(SCHEMA_VERSION, SCHEMA_VERSION),
        "created_at": Int(0, MAX_SECONDS),
    }),
    KIND_CLOCK: Obj({
        "schema": Int(SCHEMA_VERSION, SCHEMA_VERSION),
        #: the hospital's time when it built the message: the box's clock is at least this
        "created_at": Int(0, MAX_SECONDS),
        #: how far behind the hospital's clock the box's status was (seconds), as seen then
        "behind_s": Int(0, MAX_SECONDS),
    }),
}


class DownlinkRefused(EnvelopeError):
    """A downlink message the box refuses; ``reason`` is a short machine word."""

    kind = "downlink refused"


def topic(clinic: str, device: str) -> str:
    """The topic the hospital publishes a box's downlink on (the box reads only its own)."""
    return f"{ROOT}/{check_identity(clinic, 'clinic')}/{check_identity(device, 'device')}"


def review_payload(*, study_ref: str, alert_seq: int, verdict: str, note: str,
                   reviewed_at: float, follow_up_months: int | None = None,
                   created_at: float | None = None) -> dict[str, Any]:
    """A checked ``review`` payload: ReviewRefused (its ``problem`` a :class:`ReviewProblem`)
    for a verdict, note or follow-up :func:`review_problem` refuses, EgressRefused when
    another field breaks the schema."""
    problem = review_problem(verdict, note, follow_up_months)
    if problem is not None:
        raise ReviewRefused(problem)
    payload: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "created_at": int(time.time() if created_at is None else created_at),
        "study_ref": study_ref, "alert_seq": int(alert_seq), "verdict": str(verdict),
        "note": note, "reviewed_at": int(reviewed_at)}
    if follow_up_months is not None:
        payload["follow_up_months"] = int(follow_up_months)
    check_review(payload)
    return payload


def check_review(payload: dict[str, Any]) -> None:
    """EgressRefused unless ``payload`` is a review the box takes: the schema, then
    :func:`review_problem` (ReviewRefused: a follow-up's months given with it, and only
    then)."""
    SCHEMAS[KIND_REVIEW].check(payload, KIND_REVIEW, None)
    problem = review_problem(payload["verdict"], payload["note"],
                             payload.get("follow_up_months"))
    if problem is not None:
        raise ReviewRefused(problem)


def link_check_payload(created_at: float | None = None) -> dict[str, Any]:
    """A checked ``link_check`` payload: nothing but when it was made."""
    payload = {"schema": SCHEMA_VERSION,
               "created_at": int(time.time() if created_at is None else created_at)}
    SCHEMAS[KIND_LINK_CHECK].check(payload, KIND_LINK_CHECK, None)
    return payload


def clock_payload(behind_s: float, created_at: float | None = None) -> dict[str, Any]:
    """A checked ``clock`` payload: the hospital's time, and how far behind the box was."""
    payload = {"schema": SCHEMA_VERSION,
               "created_at": int(time.time() if created_at is None else created_at),
               "behind_s": int(max(0.0, behind_s))}
    SCHEMAS[KIND_CLOCK].check(payload, KIND_CLOCK, None)
    return payload


def chunk_count(archive_bytes: int, chunk_bytes: int) -> int:
    """How many chunks an archive of ``archive_bytes`` is sent in."""
    return max(1, math.ceil(archive_bytes / chunk_bytes))


def chunk_size_for(archive_bytes: int, wanted: int) -> int:
    """The chunk size a rollout uses: ``wanted``, raised so the chunks fit :data:`MAX_CHUNKS`."""
    size = max(MIN_CHUNK_BYTES, min(MAX_CHUNK_BYTES, wanted))
    return max(size, math.ceil(archive_bytes / MAX_CHUNKS))


def check_rollout(payload: dict[str, Any]) -> None:
    """EgressRefused unless ``payload`` is a rollout offer whose chunk list fits its sizes."""
    SCHEMAS[KIND_ROLLOUT].check(payload, KIND_ROLLOUT, None)
    if len(payload["chunk_sha256"]) != chunk_count(payload["archive_bytes"],
                                                   payload["chunk_bytes"]):
        raise EgressRefused("rollout.chunk_sha256: one hash per chunk of the archive")


def chunk_topic(archive_sha256: str, index: int) -> str:
    """The retained topic of one chunk of a rollout's package."""
    if not SHA256_HEX.fullmatch(archive_sha256) or not 0 <= index < MAX_CHUNKS:
        raise ValueError("not a package chunk")
    return f"{PACKAGE_ROOT}/{archive_sha256}/{index}"


def seal_downlink(clinic: str, device: str, seq: int, payload: dict[str, Any],
                  box_key: X25519PublicKey, hospital_signing_key: Ed25519PrivateKey,
                  kind: str = KIND_REVIEW) -> bytes:
    """Check ``payload``, encrypt it to the box and sign it with the hospital's key."""
    SCHEMAS[kind].check(payload, kind, None)
    if kind == KIND_ROLLOUT:
        check_rollout(payload)
    if kind == KIND_REVIEW:
        check_review(payload)
    return seal(Header(clinic, device, kind, seq), payload, box_key, hospital_signing_key,
                info=HKDF_INFO)


@overload
def open_downlink(envelope: bytes, *, clinic: str, device: str,
                  hospital_key: Ed25519PublicKey, box_key: X25519PrivateKey,
                  now: float | None = ..., accept_stale: Literal[False] = ...,
                  trust_hospital_clock: bool = ...) -> tuple[Header, dict[str, Any]]: ...


@overload
def open_downlink(envelope: bytes, *, clinic: str, device: str,
                  hospital_key: Ed25519PublicKey, box_key: X25519PrivateKey,
                  now: float | None = ..., accept_stale: Literal[True],
                  trust_hospital_clock: bool = ...) -> tuple[Header, dict[str, Any], bool]: ...


def open_downlink(envelope: bytes, *, clinic: str, device: str,
                  hospital_key: Ed25519PublicKey, box_key: X25519PrivateKey,
                  now: float | None = None, accept_stale: bool = False,
                  trust_hospital_clock: bool = False
                  ) -> tuple[Header, dict[str, Any]] | tuple[Header, dict[str, Any], bool]:
    """Verify, decrypt and check a downlink for this box; DownlinkRefused with a reason.

    Reasons: the envelope's (``malformed``, ``bad-signature``, ``undecryptable``),
    ``not-for-this-box``, ``unknown-kind``, ``schema``, ``stale``, ``future``.

    With ``accept_stale=True`` a message that is only too old is not refused: the call
    returns ``(header, payload, stale)``, ``stale`` True when it was built more than
    :data:`MAX_AGE_DAYS` ago. Every other check still refuses.

    With ``trust_hospital_clock=True`` (the box: its own clock may be behind, a flat clock
    battery and no network time) a message built "in the future" is not refused: the
    hospital's signed ``created_at`` is a lower bound of the real time, and the box moves its
    clock forward to it (``firmware_app/ops/hospital_clock.py``).
    """
    try:
        opened = open_envelope(envelope, hospital_key, box_key, info=HKDF_INFO)
    except EnvelopeError as exc:
        raise DownlinkRefused(exc.reason, str(exc)) from exc
    header, payload = opened.header, opened.payload
    if (header.clinic, header.device) != (clinic, device):
        raise DownlinkRefused("not-for-this-box", "the downlink names another box")
    if header.kind not in SCHEMAS:
        raise DownlinkRefused("unknown-kind", "unknown downlink kind")
    try:
        SCHEMAS[header.kind].check(payload, header.kind, None)
        if header.kind == KIND_ROLLOUT:
            check_rollout(payload)
        if header.kind == KIND_REVIEW:
            check_review(payload)
    except EgressRefused as exc:
        raise DownlinkRefused("schema", str(exc)) from exc
    now = time.time() if now is None else now
    if payload["created_at"] > now + FUTURE_SKEW_SECONDS and not trust_hospital_clock:
        raise DownlinkRefused("future", "built in the future (clock skew over a day)")
    stale = payload["created_at"] < now - MAX_AGE_DAYS * 86_400
    if accept_stale:
        return header, payload, stale
    if stale:
        raise DownlinkRefused("stale", f"built more than {MAX_AGE_DAYS:g} days ago")
    return header, payload


def key_text(key: X25519PublicKey) -> str:
    """The box's downlink public key as the status message carries it (base64, 44 chars)."""
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw,
                                             serialization.PublicFormat.Raw)).decode("ascii")


#: A fixed private key for the trial exchange of :func:`parse_key_text` (not a secret: the
#: exchange only asks whether the public key can be used at all).
_TRIAL_KEY = X25519PrivateKey.from_private_bytes(bytes(range(1, _RAW_KEY_BYTES + 1)))


def parse_key_text(text: str) -> X25519PublicKey:
    """The X25519 public key of :func:`key_text`; ValueError for anything else.

    A key no X25519 exchange accepts is refused too: before returning, the key goes
    through a trial exchange with a fixed private key (:data:`_TRIAL_KEY`), which fails
    for the all-zero key and every other low-order point (the shared secret would be all
    zeros, whatever the private key), so nothing can be sealed to such a key later.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError("not base64") from exc
    if len(raw) != _RAW_KEY_BYTES:
        raise ValueError("not a 32-byte X25519 key")
    key = X25519PublicKey.from_public_bytes(raw)
    try:
        _TRIAL_KEY.exchange(key)
    except ValueError as exc:
        raise ValueError("an X25519 key no exchange accepts (a low-order point)") from exc
    return key


def new_box_key() -> bytes:
    """A new X25519 private key for a box's downlink, as PEM (PKCS#8, unencrypted)."""
    return X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
