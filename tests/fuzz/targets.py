"""The fuzz targets: what one input must never do to the decoder, the landing path, the
telemetry envelope reader and the hospital's receiver.

Each ``check_*`` takes the fuzzer's bytes and raises only for a real bug: an
exception other than the documented refusals, or a broken invariant. The
atheris scripts beside this file and the replay test both call these.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central.config import CentralConfig
from central.receiver import OUTCOMES, Receiver
from central.store import Store
from clinibox_common.contracts.envelope import EnvelopeError, open_envelope, read_header
from clinibox_common.contracts.topics import topic
from engine.imaging import codestream
from engine.imaging.decode import DecodeError, decode
from engine.settings import LimitsConfig
from firmware_app.ingest.landing import Lander, Outcome
from firmware_app.storage import db
from firmware_app.storage.spool import Spool
from tests.envelope_forge import seal_raw
from tests.telemetry_payloads import public_pem

#: small limits, so that a fuzzed header cannot make a legitimate but huge decode
LIMITS = LimitsConfig(max_rows=2048, max_columns=2048, max_frames=16, max_decoded_mb=64,
                      max_megapixels=4.0)

#: the folder a fuzzing process keeps its inputs, spool and database in
WORK_ENV = "CLINIBOX_FUZZ_WORK"


def _work_folder(prefix: str) -> Path:
    """A temporary folder for this process's fuzzing: inside ``$CLINIBOX_FUZZ_WORK`` when
    set (libFuzzer ends its process with ``_exit``, so the test gives it one of pytest's
    temporary folders), else removed when the process ends."""
    if os.environ.get(WORK_ENV):
        return Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ[WORK_ENV]))
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, True)
    return folder


_WORK = _work_folder("clinibox-fuzz-")


def check_decode(data: bytes) -> None:
    """The decoder answers with an image or a DecodeError, nothing else."""
    path = _WORK / "input.dcm"
    path.write_bytes(data)
    try:
        image = decode(path, LIMITS, 2)
    except DecodeError as exc:
        assert exc.reason and isinstance(exc.reason, str)
        return
    assert image.frames.ndim == 3 and image.frames.dtype.name == "float32"
    assert float(image.frames.min(initial=0.0)) >= 0.0
    assert float(image.frames.max(initial=0.0)) <= 1.0


def check_codestream(data: bytes) -> None:
    """Stream-header readers answer with facts or a StreamMismatch, nothing else."""
    for read in (codestream.jpeg_facts, codestream.j2k_facts, codestream.rle_segments):
        with contextlib.suppress(codestream.StreamMismatch):
            read(data)


class LandingBench:
    """One spool and database for a fuzzing run (fresh per process)."""

    def __init__(self, root: Path) -> None:
        database = root / "box.db"
        conn = db.connect(database)
        db.initialise(conn)
        conn.close()
        self.spool = Spool(root / "spool", root / "quarantine")
        self.lander = Lander(self.spool, database, 1 << 20)
        self.database = database

    def counts(self) -> tuple[int, int]:
        """(queue rows, spooled objects)."""
        conn = sqlite3.connect(self.database)
        try:
            rows = conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        finally:
            conn.close()
        return rows, len(list(self.spool.root.glob("??/*.dcm")))


_BENCH: LandingBench | None = None


def check_landing(data: bytes) -> None:
    """Landing stores the object and its row together, or refuses and leaves nothing."""
    global _BENCH
    if _BENCH is None:
        _BENCH = LandingBench(_work_folder("clinibox-fuzz-landing-"))
    bench = _BENCH
    uid = None
    if data[:1] and data[0] % 3:
        uid = data[1:1 + data[0] % 64].decode("latin-1")
    before = bench.counts()
    try:
        landed = bench.lander.land(data, sop_instance_uid=uid, source="fuzz", origin=None)
    except ValueError:  # over the object limit
        assert len(data) > bench.lander.max_object_bytes
        assert bench.counts() == before
        return
    rows, files = bench.counts()
    if landed.outcome is Outcome.ACCEPTED:
        assert (rows, files) == (before[0] + 1, before[1] + 1)
    else:
        assert landed.outcome is Outcome.DUPLICATE and (rows, files) == before
    assert not list(bench.spool.tmp.iterdir())  # no partial file left


#: fixed keys, so that a committed input means the same envelope in every run
DEVICE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
HOSPITAL_KEY = X25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
_EPHEMERAL = X25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
#: bit 7 of the first byte: the rest is ``header \n plaintext``, sealed and signed here
SEALED = 0x80


def envelope_of(data: bytes) -> bytes:
    """The envelope an input stands for: the bytes after the first as they are, or, when
    the first byte has :data:`SEALED`, ``header\nplaintext`` sealed with the fixed keys
    (so that the fuzzer reaches the parsers behind a valid signature)."""
    rest = data[1:]
    if not data[:1] or not data[0] & SEALED:
        return rest
    header, _, plaintext = rest.partition(b"\n")
    return seal_raw(header, plaintext, HOSPITAL_KEY.public_key(), DEVICE_KEY,
                    nonce=b"\0" * 12, ephemeral=_EPHEMERAL)


def check_envelope(data: bytes) -> None:
    """read_header and open_envelope answer with a header/payload or EnvelopeError only."""
    envelope = envelope_of(data)
    try:
        header = read_header(envelope)
    except EnvelopeError as exc:
        assert exc.reason == "malformed"
        return
    assert isinstance(header.clinic, str) and isinstance(header.device, str)
    assert 1 <= header.seq <= 2**63 - 1
    try:
        opened = open_envelope(envelope, DEVICE_KEY.public_key(), HOSPITAL_KEY)
    except EnvelopeError as exc:
        assert exc.reason in ("malformed", "bad-signature", "undecryptable")
        return
    assert isinstance(opened.payload, dict) and opened.header == header


#: the topics an input's first byte picks from (bits 0-2): the enrolled box's four kinds,
#: an unknown box, the same box name in another clinic, a kind that is not one, no topic
RECEIVER_TOPICS = (*(topic("clinic-a", "box-1", kind)
                     for kind in ("alert", "summary", "status", "event")),
                   topic("clinic-a", "box-2", "alert"), topic("clinic-b", "box-1", "alert"),
                   "clinibox/clinic-a/box-1/images", "not-a-topic")


class ReceiverBench:
    """One hospital database with the fixed device enrolled, and a receiver (per process)."""

    def __init__(self, root: Path) -> None:
        self.store = Store(f"sqlite:///{root / 'central.db'}")
        self.store.enrol("clinic-a", "box-1", public_pem(DEVICE_KEY))
        config = CentralConfig()
        config.receiver.dead_letter_max_mb = 1
        self.receiver = Receiver(config, self.store, HOSPITAL_KEY)

    def counts(self) -> tuple[int, int]:
        """(messages, rejections)."""
        counts = self.store.counts()
        return counts["messages"], counts["rejections"]


_RECEIVER: ReceiverBench | None = None


def check_receiver(data: bytes) -> None:
    """Receiver.handle answers one of OUTCOMES and records exactly that, raising nothing."""
    global _RECEIVER
    if _RECEIVER is None:
        _RECEIVER = ReceiverBench(_work_folder("clinibox-fuzz-receiver-"))
    bench = _RECEIVER
    name = RECEIVER_TOPICS[data[0] % len(RECEIVER_TOPICS)] if data else "not-a-topic"
    before, handled = bench.counts(), sum(bench.receiver.counts.values())
    outcome = bench.receiver.handle(name, envelope_of(data), received_at=time.time())
    assert outcome in OUTCOMES and outcome != "internal-error", outcome
    messages, rejections = bench.counts()
    if outcome == "stored":
        assert (messages, rejections) == (before[0] + 1, before[1])
    elif outcome == "duplicate":
        assert (messages, rejections) == before
    else:
        assert (messages, rejections) == (before[0], before[1] + 1)
        assert bench.store.rejections(limit=1)[0]["reason"] == outcome
    assert sum(bench.receiver.counts.values()) == handled + 1


TARGETS = {"decode": check_decode, "codestream": check_codestream, "landing": check_landing,
           "envelope": check_envelope, "receiver": check_receiver}
