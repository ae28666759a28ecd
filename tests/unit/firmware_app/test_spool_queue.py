"""Spool durability rules and the SQLite job queue's state machine."""

from __future__ import annotations

import pytest

from clinibox_common.contracts.reasons import Reason, ReasonCode, decode, encode
from firmware_app.storage.queue import DuplicateInstance, JobQueue
from firmware_app.storage.spool import Spool, SpoolFull, new_local_id


def test_database_is_wal_with_full_sync(conn):
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_spool_writes_under_local_id_and_leaves_no_temp(tmp_path):
    spool = Spool(tmp_path / "spool", tmp_path / "q")
    local_id = new_local_id()
    path = spool.write(local_id, b"abc" * 1000)
    assert path.read_bytes() == b"abc" * 1000
    assert path.name == f"{local_id}.dcm"
    assert list(spool.tmp.iterdir()) == []


def test_spool_refuses_names_that_are_not_local_ids(tmp_path):
    spool = Spool(tmp_path / "spool", tmp_path / "q")
    for bad in ("../../etc/passwd", "1.2.3/../../x", "A" * 32, ""):
        with pytest.raises(ValueError):
            spool.path_for(bad)


def test_spool_refuses_below_free_space_floor(tmp_path):
    spool = Spool(tmp_path / "spool", tmp_path / "q", min_free_bytes=2**62)
    with pytest.raises(SpoolFull, match="disk nearly full"):
        spool.write(new_local_id(), b"x")
    assert list(spool.root.rglob("*.dcm")) == []


def test_spool_removes_partial_files_after_crash(tmp_path):
    spool = Spool(tmp_path / "spool", tmp_path / "q")
    (spool.tmp / "deadbeef.part").write_bytes(b"half")
    assert spool.clean_temporary() == 1
    assert not any(spool.tmp.iterdir())


def test_spool_removes_objects_no_queue_row_names(tmp_path):
    # renamed into place, then a crash before the queue row committed: never acknowledged
    spool = Spool(tmp_path / "spool", tmp_path / "q")
    kept, orphan = new_local_id(), new_local_id()
    spool.write(kept, b"kept")
    spool.write(orphan, b"orphan")
    assert spool.remove_orphans({kept}) == 1
    assert spool.path_for(kept).exists() and not spool.path_for(orphan).exists()
    assert spool.remove_orphans({kept}) == 0


def test_previews_go_with_their_object(tmp_path):
    """A display preview sits beside its object and never outlives it."""
    spool = Spool(tmp_path / "spool", tmp_path / "q")
    kept, orphan, held = new_local_id(), new_local_id(), new_local_id()
    for local_id in (kept, orphan, held):
        spool.write(local_id, b"image")
        spool.preview_path(local_id).write_bytes(b"preview")
    assert spool.preview_path(kept) == spool.path_for(kept).with_name(f"{kept}.preview.npz")
    assert spool.preview_path(kept) in spool.object_files(kept)
    half = spool.preview_path(kept).with_name(f".{kept}.preview.npz.part")
    half.write_bytes(b"half")  # a crash while the worker wrote a preview
    assert spool.clean_temporary() == 1 and not half.exists()
    spool.quarantine(held, "bad")
    assert not spool.preview_path(held).exists() and spool.held_path(held).exists()
    assert spool.remove_orphans({kept, held}) == 1
    assert not spool.preview_path(orphan).exists() and spool.preview_path(kept).exists()


def test_quarantine_keeps_object_and_reason(tmp_path):
    spool = Spool(tmp_path / "spool", tmp_path / "q")
    local_id = new_local_id()
    spool.write(local_id, b"bad")
    target = spool.quarantine(local_id, "pixel data too short")
    assert target.read_bytes() == b"bad"
    assert "pixel data too short" in (tmp_path / "q" / f"{local_id}.reason.json").read_text()
    assert not spool.path_for(local_id).exists()


def _enqueue(queue, uid, tmp_path):
    local_id = new_local_id()
    return queue.enqueue(local_id=local_id, spool_path=tmp_path / local_id, size_bytes=1,
                         source="dicom", origin="CT1", sop_instance_uid=uid)


def test_claim_is_fifo_and_marks_processing(conn, tmp_path):
    queue = JobQueue(conn)
    first = _enqueue(queue, "1.2.3", tmp_path)
    second = _enqueue(queue, "1.2.4", tmp_path)
    job = queue.claim()
    assert job.id == first and job.attempts == 1
    assert queue.counts()["processing"] == 1
    assert queue.claim().id == second
    assert queue.claim() is None


def test_duplicate_sop_instance_uid_is_refused(conn, tmp_path):
    queue = JobQueue(conn)
    first = _enqueue(queue, "1.2.3", tmp_path)
    with pytest.raises(DuplicateInstance) as excinfo:
        _enqueue(queue, "1.2.3", tmp_path)
    assert excinfo.value.instance_id == first
    assert queue.counts()["queued"] == 1


def test_recover_requeues_interrupted_and_fails_poison(conn, tmp_path):
    queue = JobQueue(conn)
    good = _enqueue(queue, "1.2.3", tmp_path)
    poison = _enqueue(queue, "1.2.4", tmp_path)
    # as after a crash: both in progress, the poison one already on its third try
    conn.execute("UPDATE instances SET status='processing', attempts=1 WHERE id=?", (good,))
    conn.execute("UPDATE instances SET status='processing', attempts=3 WHERE id=?", (poison,))
    requeued, failed = queue.recover(max_attempts=3)
    assert (requeued, failed) == (1, 1)
    rows = dict(conn.execute("SELECT id, status FROM instances").fetchall())
    assert rows == {good: "queued", poison: "failed"}
    reason = conn.execute("SELECT reason FROM instances WHERE id=?", (poison,)).fetchone()[0]
    assert reason == encode([Reason(ReasonCode.INTERRUPTED, {"attempts": 3})])  # SQL = Python


def test_retry_later_fails_after_max_attempts(conn, tmp_path):
    queue = JobQueue(conn)
    job_id = _enqueue(queue, "1.2.3", tmp_path)
    queue.claim()
    boom = Reason(ReasonCode.PROCESSING_ERROR, {"detail": "RuntimeError: boom"})
    assert queue.retry_later(job_id, boom, max_attempts=2) == "queued"
    queue.claim()
    assert queue.retry_later(job_id, boom, max_attempts=2) == "failed"
    assert queue.counts()["failed"] == 1
    stored = conn.execute("SELECT reason FROM instances WHERE id=?", (job_id,)).fetchone()[0]
    assert decode(stored) == [boom]
    event = conn.execute("SELECT message FROM events ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert event == f"instance {job_id}: processing error: RuntimeError: boom"  # English


def test_an_empty_sop_instance_uid_is_no_uid_not_a_lasting_error(tmp_path):
    """Found by fuzzing the landing path: two objects whose file meta has an empty SOP
    Instance UID made the second one fail with IntegrityError (a USB import retried it
    forever); both are landed, as objects without a UID are."""
    from firmware_app.ingest.landing import Lander, Outcome
    from firmware_app.storage import db

    database = tmp_path / "box.db"
    conn = db.connect(database)
    db.initialise(conn)
    lander = Lander(Spool(tmp_path / "spool", tmp_path / "quarantine"), database, 2**20)
    first = lander.land(b"@", sop_instance_uid="", source="usb", origin=None)
    second = lander.land(b"@@", sop_instance_uid="", source="usb", origin=None)
    assert first.outcome is second.outcome is Outcome.ACCEPTED
    rows = conn.execute("SELECT sop_instance_uid FROM instances").fetchall()
    assert [r[0] for r in rows] == [None, None]
    conn.close()
