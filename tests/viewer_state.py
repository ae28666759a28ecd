"""A box state for the viewer's tests: phantom studies processed by the real worker and model.

``build_viewer_state`` lands phantoms through the real ``Lander`` and runs
the real ``Worker`` with the bundled demo model (trained on procedurally
generated phantoms, not for clinical use), so the viewer reads exactly what
the appliance writes:

* an alert study: a CT phantom with a lesion whose PatientName and PatientID
  carry script-injection canaries (they must render as text, never run);
* a clear study: a CT phantom without a lesion;
* a multi-frame ultrasound sweep with a lesion mid-sweep;
* an ultrasound image far too dark: not assessable (rescan suggested), never "no finding";
* a real CT scan (pydicom's CT_small): outside the demo model's validated range;
* a truncated DICOM file: quarantined with its reason;
* an NM image (pydicom's JPEG-LL.dcm): not analysed, no model here is meant for it;
* one object landed but not processed: waiting.

Two accounts are made: a technician and a clinician.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.data import get_testdata_file

from engine.inference.runner import ModelRunner
from firmware_app.ingest.landing import Lander
from firmware_app.service.worker import Worker
from firmware_app.settings.box import Config
from firmware_app.settings.storage import StorageConfig
from firmware_app.storage import db
from firmware_app.storage.accounts import Accounts
from firmware_app.storage.spool import make_spool
from phantoms.dicom import ct_dataset, us_dataset, us_multiframe_dataset, write_dicom
from phantoms.images import generate, generate_sweep

TECHNICIAN = ("tina", "keeps-the-box-running")
CLINICIAN = ("carl", "reads-the-worklist")
#: Script-injection canaries in DICOM strings: shown as text, never executed.
XSS_NAME = '<script>window.__xss = 1</script>^Evil"Name'
XSS_ID = '<img src=x onerror="window.__xss=2">'


@dataclass
class ViewerState:
    """The config of a populated box and the ids the tests look for."""

    config: Config
    studies: dict[str, int] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)


@dataclass
class LocalBox:
    """A box's state folder with its own database, spool, lander and worker (no service)."""

    config: Config
    conn: sqlite3.Connection
    lander: Lander
    worker: Worker


def local_box(config: Config, state_dir: Path, runner: ModelRunner, **more) -> LocalBox:
    """The box of ``config`` with its state in ``state_dir``, analysing with ``runner``
    (``more``: the worker's other models, see ``Worker``)."""
    config.storage = StorageConfig(state_dir=str(state_dir))
    conn = db.connect(config.database_path)
    db.initialise(conn)
    spool = make_spool(config)
    lander = Lander(spool, config.database_path, 64 * 2**20)
    return LocalBox(config, conn, lander, Worker(config, spool, runner, **more))


def _land(lander: Lander, path: Path) -> int:
    return lander.land(path.read_bytes(), sop_instance_uid=None, source="dicom",
                       origin="TEST").instance_id


def ct_phantom(runner: ModelRunner, path: Path, *, lesion: bool, alert: bool,
                identity: dict[str, str]) -> Path:
    """The first CT phantom (by seed) on which the demo model alerts (or finds nothing)."""
    from engine.imaging.decode import decode

    limits = Config().limits
    for seed in range(40):
        phantom = generate("ct", np.random.default_rng(seed), lesion=lesion)
        write_dicom(ct_dataset(phantom, identity), path)
        found = runner.analyse(decode(path, limits, 8), 64).findings
        if (found.alert if alert else not found.finding):
            return path
    raise AssertionError(f"no CT phantom (lesion={lesion}) gives alert={alert} in 40 seeds")


def build_viewer_state(root: Path, runner: ModelRunner, config: Config | None = None,
                       ) -> ViewerState:
    """Populate a box state under ``root`` (see the module docstring)."""
    box = local_box(config or Config(), root / "state", runner)
    config, conn, lander, worker = box.config, box.conn, box.lander, box.worker
    folder = root / "phantoms"
    folder.mkdir(parents=True, exist_ok=True)
    state = ViewerState(config)

    alert = ct_phantom(runner, folder / "alert.dcm", lesion=True, alert=True, identity={
        "PatientName": XSS_NAME, "PatientID": XSS_ID, "StudyDescription": "CT CHEST PHANTOM"})
    clear = ct_phantom(runner, folder / "clear.dcm", lesion=False, alert=False, identity={
        "PatientName": "CLEAR^PHANTOM", "PatientID": "CLEAR-1",
        "StudyDescription": "CT ABDOMEN PHANTOM"})
    sweep = write_dicom(
        us_multiframe_dataset(generate_sweep(np.random.default_rng(7), frames=6),
                              {"PatientName": "SWEEP^PHANTOM", "PatientID": "SWEEP-1",
                               "StudyDescription": "US SWEEP PHANTOM"}), folder / "sweep.dcm")
    dark = write_dicom(
        us_dataset(generate("us", np.random.default_rng(3), lesion=False).image * 0.12,
                   {"PatientName": "DARK^PHANTOM", "StudyDescription": "US DARK PHANTOM"}),
        folder / "dark.dcm")
    real_ct = Path(get_testdata_file("CT_small.dcm"))
    truncated = folder / "truncated.dcm"
    truncated.write_bytes(clear.read_bytes()[:-5000])
    for name, path in (("alert", alert), ("clear", clear),
                       ("sweep", sweep), ("dark", dark), ("real_ct", real_ct),
                       ("truncated", truncated),
                       ("nm", Path(get_testdata_file("JPEG-LL.dcm")))):  # NM: not analysed
        state.instances[name] = _land(lander, path)
        assert worker.run_once()
    waiting = write_dicom(ct_dataset(generate("ct", np.random.default_rng(5), lesion=False)),
                          folder / "waiting.dcm")
    state.instances["waiting"] = _land(lander, waiting)
    for name in ("alert", "clear", "sweep", "dark", "real_ct"):
        row = conn.execute(
            "SELECT s.id FROM studies s JOIN instances i ON i.study_instance_uid = s.study_key"
            " WHERE i.id = ?", (state.instances[name],)).fetchone()
        state.studies[name] = row[0]
    accounts = Accounts(conn)
    accounts.add(*TECHNICIAN, "technician")
    accounts.add(*CLINICIAN, "clinician")
    conn.close()
    return state


def copy_viewer_state(template: ViewerState, root: Path) -> ViewerState:
    """A private copy of a populated box under ``root`` (the template stays untouched).

    Builds once per test run cost a worker pass per phantom; a copy costs a
    folder copy. The database is copied through SQLite's backup, not as files:
    the build's Lander and Worker keep their connections (in WAL mode) until the
    garbage collector closes them, whose checkpoint would otherwise remove the
    ``-wal`` file in the middle of a copy. The database stores the spool's
    absolute paths, so they are rewritten to the copy's.
    """
    source = template.config.state_dir
    database = template.config.database_path
    config = copy.deepcopy(template.config)
    config.storage = dataclasses.replace(template.config.storage, state_dir=str(root / "state"))
    shutil.copytree(source, config.state_dir, symlinks=True, ignore=lambda folder, names: [
        n for n in names if Path(folder) == source and n.startswith(database.name)])
    conn = db.connect(config.database_path)
    original = sqlite3.connect(database)
    try:
        original.backup(conn)
    finally:
        original.close()
    conn.execute("UPDATE instances SET spool_path = ? || substr(spool_path, ?)"
                 " WHERE substr(spool_path, 1, ?) = ?",
                 (str(config.state_dir), len(str(source)) + 1, len(str(source)), str(source)))
    conn.close()
    return ViewerState(config, dict(template.studies), dict(template.instances))


#: the CT phantom series study (``add_ct_series``): slices, mm apart
SERIES_SLICES, SERIES_SPACING_MM = 10, 2.0


@dataclass
class SeriesStudy:
    """A CT phantom series added to a box: its study, instance ids by slice, the slices its
    one lesion lies on, and that lesion's truth (``phantoms/series.py``)."""

    study_id: int
    ids: dict[int, int]
    on: list[int]
    truth: object


def lesion_record(box: tuple[float, float, float, float], area_mm2: float,
                  pixel_mm: float) -> dict:
    """A cross-section with its box (source pixels) as a stored lesion record
    (``Lesion.to_dict()``), sizes from the box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    width, height = (x1 - x0) * pixel_mm, (y1 - y0) * pixel_mm
    return {"label": "malignant", "probability": 0.9, "box": [x0, y0, x1, y1], "frame": 0,
            "long_axis_px": max(x1 - x0, y1 - y0), "short_axis_px": min(x1 - x0, y1 - y0),
            "area_px2": area_mm2 / pixel_mm**2, "long_axis_mm": max(width, height),
            "short_axis_mm": min(width, height), "area_mm2": area_mm2, "units": "mm",
            "size_from": "box", "class_probabilities": {"benign": 0.1, "malignant": 0.9},
            "contour": [], "frames": [0]}


def add_ct_series(state: ViewerState, runner: ModelRunner, root: Path) -> SeriesStudy:
    """Land a CT phantom series (one sphere on six contiguous slices of ten, landed shuffled)
    through the real Lander and Worker, then write the phantom's own cross-sections as each
    slice's lesion records and boxes: the demo model, trained on 2-D phantoms, misses most
    of such a lesion's end slices (bench/results/*/volume_lesions.json), and what is tested
    with it is how the box counts and says a lesion across slices."""
    from firmware_app.storage.study_rollup import update_study
    from phantoms.series import generate_series, write_series

    series = generate_series(np.random.default_rng(7), slices=SERIES_SLICES, size=128,
                             spacing_mm=SERIES_SPACING_MM, lesions=1,
                             diameters_mm=(17.0, 19.0))
    (truth,) = series.lesions
    paths = write_series(series, root / "series", {"PatientName": "张^伟",
                                                   "PatientID": "SERIES-1",
                                                   "StudyDescription": "CT CHEST SERIES"})
    box = local_box(state.config, state.config.state_dir, runner)
    ids = {k: _land(box.lander, paths[k]) for k in (3, 0, 7, 9, 5, 1, 8, 6, 2, 4)}
    while box.worker.run_once():  # any object waiting in the box too
        pass
    pixel_mm = series.pixel_spacing[0]
    conn = box.conn
    for k in range(SERIES_SLICES):
        records = [lesion_record(t.box, t.area_mm2, pixel_mm) for t in series.slices[k].lesions]
        boxes = [{"x0": r["box"][0], "y0": r["box"][1], "x1": r["box"][2], "y1": r["box"][3],
                  "score": r["probability"], "label": r["label"]} for r in records]
        conn.execute("UPDATE results SET assessment = ?, finding = ?, alert = 0,"
                     " probability = ?, lesions_json = ?, findings_json = ?"
                     " WHERE instance_id = ?",
                     ("finding" if records else "no_finding", int(bool(records)),
                      0.9 if records else 0.05, json.dumps(records), json.dumps(boxes),
                      ids[k]))
    key = conn.execute("SELECT study_instance_uid FROM instances WHERE id = ?",
                       (ids[0],)).fetchone()[0]
    update_study(conn, key, "CT", {}, time.time())
    conn.commit()
    study = conn.execute("SELECT id FROM studies WHERE study_key = ?", (key,)).fetchone()[0]
    conn.close()
    on = [k for k, phantom in enumerate(series.slices) if phantom.lesions]
    return SeriesStudy(study, ids, on, truth)
