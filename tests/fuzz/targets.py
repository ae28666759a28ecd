"""The fuzz targets: what one input must never do to the decoder and the landing path.

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
from pathlib import Path

from firmware_app.imaging import codestream
from firmware_app.imaging.decode import DecodeError, decode
from firmware_app.ingest.landing import Lander, Outcome
from firmware_app.settings.box import LimitsConfig
from firmware_app.storage import db
from firmware_app.storage.spool import Spool

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


TARGETS = {"decode": check_decode, "codestream": check_codestream, "landing": check_landing}
