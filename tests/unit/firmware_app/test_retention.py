"""Retention on a real state folder: spool files, SQLite rows, the telemetry producer's marks.

Objects are landed with the real ``Lander``, results stored with the real
``ResultStore``, alerts and summaries queued by the real ``TelemetryProducer``.
Only arrival times are moved back in SQL (a test cannot wait 30 days), and the
disk's size is a function over the real files so that the disk step can be
driven to chosen percentages; the files it deletes are real.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import namedtuple
from dataclasses import asdict
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from clinibox_common.contracts.reasons import Reason, ReasonCode, decode, encode
from engine.imaging.preview import decode_with_previews
from engine.inference.aggregate import InstanceFindings
from engine.inference.postprocess import Box
from firmware_app.cli import retention as retention_cli
from firmware_app.ingest.landing import Lander
from firmware_app.settings.box import Config
from firmware_app.settings.storage import StorageConfig
from firmware_app.storage import db, event_codes, quarantine, retention
from firmware_app.storage.queue import JobQueue
from firmware_app.storage.results import ResultStore
from firmware_app.storage.spool import Spool, preview_path
from firmware_app.storage.study_completion import mark_completed
from firmware_app.telemetry.identity import load_identity
from firmware_app.telemetry.messages import ModelFacts
from firmware_app.telemetry.service import TelemetryProducer
from tests.corpus import image_dataset, to_bytes

DAY = 86_400.0
MODEL = ModelFacts("clinibox-demo-lesion@1.0.0", ("lesion",), 0.88)
#: the reason an object kept on arrival is quarantined with
NOT_AN_IMAGE = Reason(ReasonCode.NOT_AN_IMAGE_FILE)
Usage = namedtuple("Usage", "total used free")


def dicom_bytes(rows: int = 64, columns: int = 48) -> bytes:
    """A small, valid CT image (rows x columns), a new SOP instance each time."""
    ds = image_dataset("retention", rows, columns, sop_instance_uid=generate_uid())
    ds.PatientName = "RETENTION^TEST"
    return to_bytes(ds)


class StateBox:
    """A real state folder with the box's own writers."""

    def __init__(self, root: Path) -> None:
        self.config = Config(storage=StorageConfig(state_dir=str(root / "state")))
        self.config.telemetry.summary_seconds = 1
        self.conn = db.connect(self.config.database_path)
        db.initialise(self.conn)
        self.spool = Spool(self.config.spool_dir, self.config.quarantine_dir)
        self.lander = Lander(self.spool, self.config.database_path, 64 * 2**20)
        self.results = ResultStore(self.conn)
        self.queue = JobQueue(self.conn)

    def land(self, days_ago: float = 0.0, rows: int = 64) -> int:
        """Land one object (queued) that arrived ``days_ago``."""
        instance = self.lander.land(dicom_bytes(rows), sop_instance_uid=None, source="usb",
                                    origin="test").instance_id
        self.conn.execute("UPDATE instances SET received_at = received_at - ? WHERE id = ?",
                          (days_ago * DAY, instance))
        return instance

    def processed(self, days_ago: float = 0.0, *, probability: float = 0.2,
                  rows: int = 64, study: str | None = None,
                  model_id: str = MODEL.model_id) -> int:
        """Land an object and store its result and display preview as the worker does
        (in its own study unless ``study`` is given)."""
        instance = self.land(days_ago, rows)
        decode_with_previews(str(self.image(instance)), asdict(self.config.limits), 1,
                             str(self.spool.preview_path(self.local_id(instance))))
        alert = probability >= MODEL.alert_threshold
        boxes = [Box(2.0, 2.0, 20.0, 20.0, probability, "lesion")] if probability >= 0.5 else []
        self.results.complete(
            instance_id=instance,
            identity={"study_instance_uid": study or f"1.2.826.0.1.{instance}",
                      "modality": "CT", "patient_name": "RETENTION^TEST"},
            findings=InstanceFindings(probability=probability, finding=probability >= 0.5,
                                      alert=alert, boxes=boxes, heatmap=None, key_frame=0),
            warnings=[], model_id=model_id, backend="onnxruntime/fp32",
            frames_inferred=1, timings={"total": 12.0})
        return instance

    def held(self, days_ago: float = 0.0) -> int:
        """An object quarantined on arrival (file and reason note in quarantine/)."""
        instance = self.lander.land_rejected(b"not a DICOM file" * 64, reasons=[NOT_AN_IMAGE],
                                             source="usb", origin="test")
        self.conn.execute("UPDATE instances SET received_at = received_at - ? WHERE id = ?",
                          (days_ago * DAY, instance))
        return instance

    def report_to_hospital(self, ahead: float = 0.0) -> None:
        """One tick of the real telemetry producer: alerts, and a summary up to now (+ ahead).

        The producer is taken to have started a minute ago, so its first
        summary period is due at once.
        """
        self.conn.execute("INSERT OR IGNORE INTO telemetry_state(name, value)"
                          " VALUES ('summary_end', ?)", (time.time() - 60,))
        self.complete_studies()
        producer = TelemetryProducer(self.config, load_identity(self.config), MODEL)
        try:
            assert producer.tick(now=time.time() + ahead) >= 1
        finally:
            producer.conn.close()

    def complete_studies(self) -> None:
        """Record every study as complete now (as the study completion does once it is stable;
        here objects left waiting on purpose would hold it back)."""
        with db.transaction(self.conn):
            for (study_id,) in self.conn.execute("SELECT id FROM studies").fetchall():
                mark_completed(self.conn, study_id, time.time())

    def local_id(self, instance: int) -> str:
        """The instance's local id."""
        return self.conn.execute("SELECT local_id FROM instances WHERE id = ?",
                                 (instance,)).fetchone()[0]

    def image(self, instance: int) -> Path:
        """Where the instance's spooled file lives."""
        return self.spool.path_for(self.local_id(instance))

    def stored_bytes(self, instance: int) -> int:
        """What the instance holds on disk: its image and its display preview."""
        image = self.image(instance)
        return image.stat().st_size + preview_path(image).stat().st_size

    def row(self, instance: int):
        """The instance's row."""
        return self.conn.execute("SELECT * FROM instances WHERE id = ?", (instance,)).fetchone()

    def run(self, **kwargs) -> retention.RetentionReport:
        """One retention pass on this box (a roomy disk unless told otherwise)."""
        kwargs.setdefault("disk_usage", lambda _path: Usage(100, 10, 90))
        return retention.apply_retention(self.conn, self.config, **kwargs)


@pytest.fixture
def box(tmp_path):
    state = StateBox(tmp_path)
    yield state
    state.conn.close()


def test_old_images_go_recent_stay_results_kept_and_marked(box):
    old = box.processed(days_ago=31, probability=0.95, rows=70)  # an alert study
    recent = box.processed(days_ago=29)
    box.report_to_hospital()
    preview = preview_path(box.image(old))
    size = box.stored_bytes(old)
    before = time.time()
    report = box.run()
    assert report.by_age.images == 1 and report.by_age.bytes == size
    assert report.instance_ids == [old] and report.images == 1 and report.missing == 0
    assert not box.image(old).exists() and box.image(recent).exists()
    assert not preview.exists() and preview_path(box.image(recent)).exists()
    row = box.row(old)
    assert row["image_deleted_at"] >= before and row["status"] == "processed"
    assert (row["image_rows"], row["image_columns"]) == (70, 48)  # for the viewer's words
    assert box.row(recent)["image_deleted_at"] is None
    kept = box.conn.execute("SELECT COUNT(*) FROM results WHERE instance_id IN (?, ?)",
                            (old, recent)).fetchone()[0]
    assert kept == 2
    study = box.conn.execute("SELECT alert, top_instance_id FROM studies WHERE study_key = ?",
                             (row["study_instance_uid"],)).fetchone()
    assert tuple(study) == (1, old)
    assert report.oldest_kept == pytest.approx(box.row(recent)["received_at"])
    event = box.conn.execute("SELECT level, component, message FROM events"
                             " WHERE component = 'retention'").fetchall()
    assert len(event) == 1 and event[0]["level"] == "INFO"
    assert "deleted 1 image(s)" in event[0]["message"]
    assert "RETENTION" not in event[0]["message"] and "1.2.826" not in event[0]["message"]
    again = box.run()  # a second pass finds nothing more
    assert again.images == 0 and again.instance_ids == [] and box.image(recent).exists()
    assert box.conn.execute("SELECT COUNT(*) FROM events WHERE component = 'retention'"
                            ).fetchone()[0] == 2
    assert retention.status_figures(box.conn)["images_deleted_by_retention"] == 1


def test_a_clock_moved_forward_deletes_nothing_early(box):
    """An image received 20 days ago by a clock that was 15 days behind looks 35 days old
    after the hospital's time moved the clock forward (ops/hospital_clock.py): the age limit
    (30 days) is pushed back by the move, so it stays; one really 46 days old still goes."""
    early = box.processed(days_ago=35)
    gone = box.processed(days_ago=46)
    box.report_to_hospital()
    db.record_event(box.conn, "WARNING", "downlink", "clock moved",
                    event_codes.code(event_codes.CLOCK_MOVED, 15 * 24 * 60))
    report = box.run()
    assert report.instance_ids == [gone]
    assert box.image(early).exists()
    assert retention.clock_moved_since(box.conn, time.time() - 60) == 15 * DAY


def test_images_not_yet_safe_are_kept(box):
    processing = box.land(days_ago=40)
    assert box.queue.claim().id == processing  # the worker has it
    queued = box.land(days_ago=40)
    safe = box.processed(days_ago=40)
    box.report_to_hospital()
    alert_not_queued = box.processed(days_ago=40, probability=0.97)
    # a summary period ends now, the alert is not queued yet (the producer does both in
    # one tick; here they are pulled apart)
    box.conn.execute("UPDATE telemetry_state SET value = ? WHERE name = 'summary_end'",
                     (time.time(),))
    not_summarised = box.processed(days_ago=40)  # made after summary_end
    report = box.run()
    assert report.instance_ids == [safe]
    for instance in (processing, queued, alert_not_queued, not_summarised):
        assert box.image(instance).exists(), instance
        assert box.row(instance)["image_deleted_at"] is None
    box.report_to_hospital(ahead=1.0)  # the alert, and a summary covering both
    assert box.conn.execute("SELECT COUNT(*) FROM alerted_studies").fetchone()[0] == 1
    report = box.run()
    assert sorted(report.instance_ids) == sorted([alert_not_queued, not_summarised])
    assert box.image(processing).exists() and box.image(queued).exists()


def test_an_image_waits_for_every_alert_of_its_study(box):
    """A study alerted by one model, then by a second (routing rules, a late series): its
    images wait until the second model's alert is queued too."""
    study = "1.2.826.0.1.4242"
    first = box.processed(days_ago=40, probability=0.97, study=study)
    box.report_to_hospital()  # the first model's alert
    second = box.processed(days_ago=40, probability=0.95, study=study,
                           model_id="clinibox-demo-us@2.0.0")
    box.complete_studies()  # complete again; its alert for the second model not queued yet
    box.conn.execute("UPDATE telemetry_state SET value = ? WHERE name = 'summary_end'",
                     (time.time(),))  # summarised
    assert box.run().instance_ids == []
    assert box.image(first).exists() and box.image(second).exists()
    box.report_to_hospital(ahead=1.0)
    models = box.conn.execute("SELECT model FROM alerted_studies ORDER BY model").fetchall()
    assert [m[0] for m in models] == ["clinibox-demo-lesion", "clinibox-demo-us"]
    assert sorted(box.run().instance_ids) == sorted([first, second])


def test_an_image_of_a_study_not_yet_complete_is_kept(box):
    instance = box.processed(days_ago=40)
    box.conn.execute("INSERT INTO telemetry_state(name, value) VALUES ('summary_end', ?)",
                     (time.time() + 10,))  # summarised
    assert box.run().instance_ids == []  # its study's DICOM results are not made yet
    box.complete_studies()
    assert box.run().instance_ids == [instance]


def test_no_summary_yet_means_nothing_processed_is_safe(box):
    old = box.processed(days_ago=100)
    assert box.run().images == 0 and box.image(old).exists()


def test_process_again_puts_an_object_back_under_protection(box):
    held = box.held(days_ago=200)
    local = box.local_id(held)
    quarantine.process_again(box.conn, box.spool, held, by="tina")
    box.report_to_hospital()
    box.config.retention.image_days = 0.001
    box.config.retention.quarantine_days = 0.001
    report = box.run(disk_usage=lambda _path: Usage(100, 99, 1))  # even a full disk
    assert report.images == 0
    assert box.row(held)["status"] == "queued" and box.spool.path_for(local).exists()


def test_held_objects_go_after_quarantine_days_with_their_note(box):
    old, recent = box.held(days_ago=91), box.held(days_ago=89)
    failed = box.land(days_ago=95)
    box.queue.set_status(failed, "failed", encode([Reason(ReasonCode.PROCESSING_ERROR,
                                                          {"detail": "RuntimeError: x"})]))
    image = box.processed(days_ago=95)  # image_days = 0: kept, whatever its age
    box.config.retention.image_days = 0
    box.report_to_hospital()
    q = box.config.quarantine_dir
    local = box.local_id(old)
    assert (q / f"{local}.dcm").exists() and (q / f"{local}.reason.json").exists()
    report = box.run()
    assert sorted(report.instance_ids) == sorted([old, failed])
    assert report.quarantine.images == 2 and report.by_age.images == 0
    assert not (q / f"{local}.dcm").exists() and not (q / f"{local}.reason.json").exists()
    assert not box.image(failed).exists()
    assert box.row(old)["status"] == "quarantined"
    assert decode(box.row(old)["reason"]) == [NOT_AN_IMAGE]  # the reason stays in the row
    assert box.row(old)["image_deleted_at"] is not None
    recent_local = box.local_id(recent)
    assert (q / f"{recent_local}.dcm").exists() and box.image(image).exists()
    box.config.retention.quarantine_days = 0  # 0 keeps held objects
    assert box.run(now=time.time() + 1000 * DAY).images == 0
    # what retention deleted leaves the technician's quarantine list and cannot come back
    assert {h.id for h in quarantine.held_objects(box.conn)} == {recent}
    with pytest.raises(quarantine.QuarantineError, match="deleted by retention"):
        quarantine.process_again(box.conn, box.spool, old, by="tina")


def _disk(box: StateBox, total: int, base: int):
    """Disk usage as ``base`` plus the real files under the state folder."""
    def usage(_path: Path) -> Usage:
        used = base + sum(p.stat().st_size for p in box.config.state_dir.rglob("*")
                          if p.is_file() and p.suffix in (".dcm", ".json", ".npz"))
        return Usage(total, used, total - used)
    return usage


def test_disk_step_deletes_oldest_safe_first_and_stops_below_the_limit(box):
    box.config.retention.image_days = 0
    held = box.held(days_ago=50)  # older than every image, but held objects go last
    images = [box.processed(days_ago=days) for days in (9, 7, 5, 3)]
    box.report_to_hospital()
    unsafe = box.processed(days_ago=10)  # the oldest, but not yet in a summary
    sizes = [box.stored_bytes(i) for i in images]
    total = 100_000
    on_disk = _disk(box, total, 0)(Path()).used
    usage = _disk(box, total, 85_000 - (on_disk - sizes[0] - sizes[1]))  # two must go
    before = usage(Path()).used
    assert before > 85_000
    report = box.run(disk_usage=usage)
    assert report.instance_ids == images[:2]  # oldest first, exactly enough
    assert report.for_disk.images == 2 and report.for_disk.bytes == sum(sizes[:2])
    assert report.held_for_disk.images == 0 and box.row(held)["image_deleted_at"] is None
    assert box.image(unsafe).exists() and all(box.image(i).exists() for i in images[2:])
    assert report.disk_used_pct_before == pytest.approx(100 * before / total)
    assert report.disk_used_pct_after <= 85.0 and not report.disk_still_full
    assert box.run(disk_usage=usage).images == 0  # below the limit now


def test_disk_step_takes_held_objects_last_and_says_when_it_cannot_reach_the_limit(box):
    box.config.retention.image_days = 0
    box.config.retention.quarantine_days = 0  # "keep them": not even for disk space
    held = box.held(days_ago=50)
    first = box.processed(days_ago=2)
    box.report_to_hospital()
    full = Usage(1000, 990, 10)  # nothing on this box can bring it below 85 %
    report = box.run(disk_usage=lambda _path: full)
    assert report.instance_ids == [first] and report.disk_still_full
    assert box.row(held)["image_deleted_at"] is None
    second = box.processed(days_ago=1)
    box.report_to_hospital(ahead=1.0)
    box.config.retention.quarantine_days = 1000
    report = box.run(disk_usage=lambda _path: full)
    assert report.instance_ids == [second, held]  # the newer image before the older held one
    assert report.for_disk.images == 1 and report.held_for_disk.images == 1
    assert report.disk_still_full and report.disk_used_pct_before == 99.0
    event = box.conn.execute("SELECT level, message FROM events WHERE component='retention'"
                             " ORDER BY id DESC").fetchone()
    assert event["level"] == "WARNING" and "disk still above the limit" in event["message"]


def test_dry_run_deletes_marks_and_records_nothing(box):
    old = [box.processed(days_ago=40), box.processed(days_ago=35)]
    held = box.held(days_ago=120)
    box.report_to_hospital()
    files = [box.image(i) for i in old]
    dry = box.run(dry_run=True, disk_usage=lambda _path: Usage(100, 99, 1))
    assert dry.dry_run and sorted(dry.instance_ids) == sorted([*old, held])
    assert all(f.exists() for f in files)
    assert box.conn.execute("SELECT COUNT(*) FROM instances WHERE image_deleted_at IS NOT NULL"
                            ).fetchone()[0] == 0
    assert box.conn.execute("SELECT COUNT(*) FROM events WHERE component='retention'"
                            ).fetchone()[0] == 0
    assert box.conn.execute("SELECT COUNT(*) FROM retention_passes").fetchone()[0] == 0
    real = box.run(disk_usage=lambda _path: Usage(100, 99, 1))
    assert sorted(real.instance_ids) == sorted(dry.instance_ids)
    assert real.bytes == dry.bytes and not any(f.exists() for f in files)


def test_dry_run_counts_what_the_age_step_would_free_before_the_disk_step(box):
    old = box.processed(days_ago=40)
    young = box.processed(days_ago=2)
    box.report_to_hospital()
    on_disk = _disk(box, 100_000, 0)(Path()).used
    # above 85 % now; deleting the old image alone brings the disk below it
    usage = _disk(box, 100_000, 85_000 - on_disk + box.stored_bytes(old))
    assert usage(Path()).used > 85_000
    dry = box.run(dry_run=True, disk_usage=usage)
    assert dry.instance_ids == [old] and dry.for_disk.images == 0
    assert dry.disk_used_pct_after == pytest.approx(85.0)
    real = box.run(disk_usage=usage)
    assert real.instance_ids == [old] and box.image(young).exists()
    assert real.disk_used_pct_before > 85.0 >= real.disk_used_pct_after


def test_a_missing_file_is_not_an_error(box):
    gone = box.processed(days_ago=40)
    box.report_to_hospital()
    box.image(gone).unlink()
    preview = preview_path(box.image(gone))
    left = preview.stat().st_size  # a preview without its image
    report = box.run()
    assert report.instance_ids == [gone] and report.missing == 1 and report.bytes == left
    assert not preview.exists()
    row = box.row(gone)
    assert row["image_deleted_at"] is not None and row["image_rows"] is None


def test_a_pass_cut_short_is_finished_by_the_next(box):
    marked = box.processed(days_ago=40)
    box.report_to_hospital()
    # a crash after the batch's marks were committed and before its files were unlinked
    with db.transaction(box.conn):
        box.conn.execute("INSERT INTO retention_passes(started_at) VALUES (?)", (time.time(),))
        box.conn.execute("UPDATE instances SET image_deleted_at = ? WHERE id = ?",
                         (time.time() + 0.5, marked))
    assert box.image(marked).exists()
    report = box.run()
    assert report.resumed == 1 and not box.image(marked).exists()
    assert report.images == 0  # it was already counted by the pass that marked it
    assert box.conn.execute("SELECT COUNT(*) FROM retention_passes WHERE finished_at IS NULL"
                            ).fetchone()[0] == 0


def test_one_pass_at_a_time(box):
    with retention._pass_lock(box.config.state_dir), pytest.raises(retention.RetentionBusy):
        box.run()
    assert box.run().images == 0


def _cli(argv: list[str]) -> int:
    """The subcommand as ``clinibox`` registers it (same ``with_config``)."""
    parser = argparse.ArgumentParser(prog="clinibox")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config")
        return p

    retention_cli.add_parsers(sub, with_config)
    args = parser.parse_args(argv)
    return args.func(args)


def test_command_line_dry_run_then_real_pass(box, tmp_path, capsys):
    old = box.processed(days_ago=45)
    box.report_to_hospital()
    config = tmp_path / "box.toml"
    config.write_text(f'[storage]\nstate_dir = "{box.config.state_dir}"\n'
                      "[retention]\nimage_days = 30.0\nmax_disk_used_pct = 100.0\n")
    assert _cli(["retention", "--config", str(config), "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] is True and dry["images"] == 1 and dry["by_age"]["images"] == 1
    assert dry["bytes"] == box.stored_bytes(old) and dry["oldest_kept"] is None
    assert {"disk_used_pct_before", "disk_used_pct_after", "limits"} <= set(dry)
    assert "instance_ids" not in dry and box.image(old).exists()
    assert _cli(["retention", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "retention: deleted 1 image," in text and "oldest image kept: none" in text
    assert "disk used:" in text and "RETENTION" not in text
    assert not box.image(old).exists()
