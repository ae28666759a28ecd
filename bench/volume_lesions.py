"""3-D lesions of phantom CT series against their truth: count and volume (issue 42).

Each phantom series (``phantoms/series.py``: one CT phantom scene scanned
at every slice, with smooth spheres and ellipsoids whose volume and centre are
known) is written as DICOM slices and received as the box receives them: every
slice, in a shuffled order, is decoded in the decoder sandbox and analysed by the
bundled demo model (trained on procedurally generated 2-D phantoms; not for
clinical use) through ``inference/analysis.py`` as the worker does, and stored
with its geometry (``ResultStore.complete``). The study's series are then read as
volumes from the store (``storage/volumes.study_volumes``) and compared with truth:

* a truth lesion is found once when exactly one 3-D lesion's centre lies inside it
  (split: more than one; missed: none); a 3-D lesion inside no truth lesion is a
  false positive; a series' count is exact when it has as many 3-D lesions as truth
  lesions of at least ``--floor`` mm and every one of them is found once;
* the volume of a lesion found once is within 20 % of the truth's (4/3·π·a·b·c);
* the same figures for the volume builder alone, on the truth's own cross-sections
  (their mask areas and boxes as lesion records): what ``inference/volume.py``
  itself adds, apart from the model;
* what a per-slice reading counted (lesion records), for comparison;
* the reference in the same run: the same model on 2-D CT phantoms (the kind it was
  trained on), the share of their lesions it finds per band of long axis.

    .venv/bin/python -m bench.volume_lesions [--series 24] [--slices 40] [--size 256]
        [--spacing 2.5] [--lesions 2] [--diameters 10 60] [--contrast 18 80] [--hypodense 0.65]
        [--floor 5] [--seed 42] [--reference 300] [--name volume_lesions]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.common import figure, machine, save
from engine.imaging.sandbox import DecodeSandbox
from engine.inference.volume import SeriesSlice, SeriesVolume, series_volume
from firmware_app.analysis import finish_object, start_object
from firmware_app.service.appliance import load_runner
from firmware_app.settings.box import Config
from firmware_app.storage import db
from firmware_app.storage.queue import JobQueue
from firmware_app.storage.results import ResultStore
from firmware_app.storage.volumes import study_volumes
from phantoms.images import generate
from phantoms.series import LesionTruth3D, PhantomSeries, generate_series, write_series

#: the issue's tolerance on a volume
VOLUME_TOLERANCE = 0.20


def receive_series(paths: list[Path], conn, runner, config: Config, sandbox: DecodeSandbox,
                   rng: np.random.Generator) -> tuple[str, float, Counter]:
    """Every slice queued, decoded in the sandbox, analysed and stored as the worker does,
    in a shuffled order; the study's UID, the seconds it took and the slices' assessments."""
    queue, results = JobQueue(conn), ResultStore(conn)
    started, study, assessments = time.perf_counter(), "", Counter()
    for index in rng.permutation(len(paths)):
        path = paths[int(index)]
        instance = queue.enqueue(local_id=f"{path.parent.name}-{path.stem}", spool_path=path,
                                 size_bytes=path.stat().st_size, source="bench", origin=None,
                                 sop_instance_uid=None)
        outcome = finish_object(start_object(path, config, sandbox), lambda _d: runner, config)
        decoded, analysis = outcome.decoded, outcome.analysis
        assert outcome.status == "processed" and decoded and analysis, outcome.reason
        study = decoded.study_instance_uid
        assessments[analysis.findings.assessment] += 1
        results.complete(
            instance_id=instance,
            identity={"study_instance_uid": decoded.study_instance_uid,
                      "series_instance_uid": decoded.series_instance_uid,
                      "modality": decoded.modality, **decoded.display},
            findings=analysis.findings, warnings=analysis.warnings,
            model_id=runner.package.model_id, backend=runner.backend_label,
            frames_inferred=analysis.frames_inferred, timings=outcome.timings,
            intensity=analysis.intensity, geometry=decoded.geometry())
    return study, time.perf_counter() - started, assessments


def truth_volume(series: PhantomSeries) -> SeriesVolume:
    """The volume builder on the truth's own cross-sections (mask areas, boxes)."""
    slices = []
    for k, (phantom, position) in enumerate(zip(series.slices, series.positions, strict=True)):
        records = [{"label": t.label, "probability": 1.0, "box": list(t.box),
                    "long_axis_mm": t.long_axis_mm, "short_axis_mm": t.short_axis_mm,
                    "area_mm2": t.area_mm2, "size_from": "mask"} for t in phantom.lesions]
        slices.append(SeriesSlice(k, position, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
                                  series.pixel_spacing, series.thickness_mm,
                                  lesions=tuple(records)))
    return series_volume(slices)


def inside(truth: LesionTruth3D, point: tuple[float, float, float]) -> bool:
    """Whether ``point`` (patient mm) lies inside the truth ellipsoid."""
    a, b, c = truth.semi_axes_mm
    dx, dy, dz = (p - q for p, q in zip(point, truth.centre_mm, strict=True))
    cos, sin = np.cos(truth.angle), np.sin(truth.angle)
    along, across = dx * cos + dy * sin, -dx * sin + dy * cos
    return (along / a) ** 2 + (across / b) ** 2 + (dz / c) ** 2 <= 1.0


def compare(truths: list[LesionTruth3D], read: SeriesVolume, floor_mm: float) -> dict:
    """Each truth lesion of at least ``floor_mm`` against the 3-D lesions of ``read``."""
    counted = [t for t in truths if t.diameter_mm >= floor_mm]
    hits = [[k for k, lesion in enumerate(read.lesions) if inside(t, lesion.centre_mm)]
            for t in counted]
    matched = {k for found in hits for k in found}
    rows = []
    for truth, found in zip(counted, hits, strict=True):
        row = {"shape": truth.shape, "diameter_mm": round(truth.diameter_mm, 1),
               "truth_mm3": round(truth.volume_mm3, 1), "found": len(found)}
        if len(found) == 1:
            lesion = read.lesions[found[0]]
            row.update(measured_mm3=round(lesion.volume_mm3, 1),
                       error=round(float(lesion.volume_mm3 / truth.volume_mm3) - 1, 4),
                       slices=lesion.slices, volume_from=lesion.volume_from)
        rows.append(row)
    false_positives = [k for k in range(len(read.lesions)) if k not in matched]
    exact = (read.read_as == "volume" and len(read.lesions) == len(counted)
             and all(r["found"] == 1 for r in rows))
    return {"rows": rows, "false_positives": len(false_positives),
            "false_positive_slices": [read.lesions[k].slices for k in false_positives],
            "count_exact": exact, "lesions_3d": len(read.lesions),
            "per_slice_records": read.per_slice_lesions, "read_as": read.read_as,
            "reason": read.reason}


def figures(compared: list[dict]) -> dict:
    """Counts and volume agreement over every series."""
    rows = [r for c in compared for r in c["rows"]]
    errors = np.array([r["error"] for r in rows if "error" in r])
    found_once = int(sum(r["found"] == 1 for r in rows))
    return {
        "series": len(compared),
        "series_read_as_volume": sum(c["read_as"] == "volume" for c in compared),
        "series_count_exact": sum(c["count_exact"] for c in compared),
        "truth_lesions": len(rows),
        "found_once": found_once,
        "missed": int(sum(r["found"] == 0 for r in rows)),
        "split": int(sum(r["found"] > 1 for r in rows)),
        "false_positive_3d_lesions": sum(c["false_positives"] for c in compared),
        "lesions_3d": sum(c["lesions_3d"] for c in compared),
        "per_slice_records": sum(c["per_slice_records"] for c in compared),
        "volume_within_20pct_of_found": round(float(np.mean(np.abs(errors)
                                                            <= VOLUME_TOLERANCE)), 4)
        if errors.size else None,
        "volume_within_20pct_of_truth_lesions": round(
            float(np.sum(np.abs(errors) <= VOLUME_TOLERANCE)) / max(1, len(rows)), 4),
        "volume_error_median_pct": round(100 * float(np.median(errors)), 1)
        if errors.size else None,
        "volume_abs_error_p90_pct": round(100 * float(np.percentile(np.abs(errors), 90)), 1)
        if errors.size else None,
    }


def by_size(compared: list[dict], bands: list[tuple[float, float]]) -> dict:
    """Found once and volume within 20 %, per band of truth diameter (mm)."""
    rows = [r for c in compared for r in c["rows"]]
    out = {}
    for low, high in bands:
        band = [r for r in rows if low <= r["diameter_mm"] < high]
        within = [r for r in band if "error" in r and abs(r["error"]) <= VOLUME_TOLERANCE]
        out[f"{low:g}-{high:g} mm"] = {"lesions": len(band),
                                       "found_once": sum(r["found"] == 1 for r in band),
                                       "volume_within_20pct": len(within)}
    return out


def two_d_reference(runner, count: int, seed: int = 777) -> dict:
    """The same model on ``count`` 2-D CT phantoms of 256 × 256 with lesions (the kind it
    was trained on): the share of truth lesions a box holds the centre of, per band of
    long axis (mm)."""
    found: dict[str, list[int]] = {}
    for index in range(count):
        phantom = generate("ct", np.random.default_rng([seed, index]), 256, lesion=True)
        boxes = runner.run(phantom.image)[0].boxes
        for truth in phantom.lesions:
            x, y = (truth.box[0] + truth.box[2]) / 2, (truth.box[1] + truth.box[3]) / 2
            hit = any(b.x0 <= x <= b.x1 and b.y0 <= y <= b.y1 for b in boxes)
            low = min(int(truth.long_axis_mm // 10) * 10, 60)
            band = found.setdefault(f"{low}-{low + 10} mm" if low < 60 else "60+ mm", [0, 0])
            band[0] += 1
            band[1] += hit
    return {band: {"lesions": n, "found": hit, "share": round(hit / n, 3)}
            for band, (n, hit) in sorted(found.items(), key=lambda kv: int(kv[0][:2]))}


def main() -> None:
    """Measure, print and keep (bench/out/volume_lesions.json, or ``--name``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=24)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--spacing", type=float, default=2.5)
    parser.add_argument("--lesions", type=int, default=2)
    parser.add_argument("--diameters", type=float, nargs=2, default=(10.0, 60.0))
    parser.add_argument("--contrast", type=float, nargs=2, default=(18.0, 80.0),
                        help="the lesions' contrast range (HU; log-uniform)")
    parser.add_argument("--hypodense", type=float, default=0.65,
                        help="the share of lesions darker than the tissue")
    parser.add_argument("--floor", type=float, default=5.0,
                        help="truth lesions at least this long (mm) are counted")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--reference", type=int, default=300,
                        help="2-D CT phantoms the model is also run on (0: none)")
    parser.add_argument("--name", default="volume_lesions",
                        help="the figures go to bench/out/NAME.json and "
                             "bench/results/CPU/NAME.json")
    args = parser.parse_args()
    config = Config()
    config.runtime.backend = "onnxruntime"
    runner = load_runner(config)
    sandbox = DecodeSandbox(config.limits)
    model, builder, seconds, slices = [], [], 0.0, 0
    try:
        with tempfile.TemporaryDirectory(prefix="clinibox-volume-bench-") as scratch:
            conn = db.connect(Path(scratch) / "box.db")
            db.initialise(conn)
            for index in range(args.series):
                rng = np.random.default_rng([args.seed, index])
                series = generate_series(rng, args.slices, args.size, args.spacing,
                                         args.lesions, tuple(args.diameters),
                                         contrast_hu=tuple(args.contrast),
                                         hypodense=args.hypodense)
                paths = write_series(series, Path(scratch) / f"series-{index:03d}")
                study, took, assessed = receive_series(paths, conn, runner, config, sandbox,
                                                       rng)
                seconds += took
                slices += len(paths)
                (read,) = study_volumes(conn, study).series
                model.append(compare(series.lesions, read, args.floor) | {
                    "assessments": dict(assessed)})
                builder.append(compare(series.lesions, truth_volume(series), args.floor))
                print(f"series {index}: {len(series.lesions)} truth, "
                      f"{model[-1]['lesions_3d']} 3-D lesions "
                      f"({model[-1]['per_slice_records']} per-slice records), "
                      f"{[r.get('error') for r in model[-1]['rows']]}", flush=True)
            conn.close()
    finally:
        sandbox.close()
    bands = [(5.0, 15.0), (15.0, 25.0), (25.0, 40.0), (40.0, 1000.0)]
    details = {
        "machine": machine("onnxruntime"),
        "model": runner.package.model_id, "backend": runner.backend_label,
        "series": args.series, "slices_per_series": args.slices, "size": args.size,
        "spacing_mm": args.spacing, "diameters_mm": list(args.diameters),
        "contrast_hu": list(args.contrast), "hypodense": args.hypodense,
        "floor_mm": args.floor,
        "received_ms_per_slice": round(1000 * seconds / max(1, slices), 1),
        "with_the_demo_model": figures(model),
        "with_the_demo_model_by_size": by_size(model, bands),
        "volume_builder_on_truth_sections": figures(builder),
        "two_d_phantoms_found_by_long_axis": two_d_reference(runner, args.reference)
        if args.reference else {},
        "each_series": [{k: v for k, v in c.items() if k != "rows"} | {
            "volume_errors": [r.get("error") for r in c["rows"]],
            "diameters_mm": [r["diameter_mm"] for r in c["rows"]]} for c in model],
    }
    reference = "the volume builder on the truth's own cross-sections, same series, same run"
    got, truth = details["with_the_demo_model"], details["volume_builder_on_truth_sections"]
    kept = {"series counted exactly": figure(got["series_count_exact"], "series", reference),
            "truth lesions found once": figure(got["found_once"], "lesions", reference),
            "truth lesions": figure(got["truth_lesions"], "lesions"),
            "false positive 3-D lesions": figure(got["false_positive_3d_lesions"], "lesions",
                                                 reference),
            "volume within 20 % of truth": figure(got["volume_within_20pct_of_truth_lesions"],
                                                  "share", reference),
            "volume builder on truth: found once": figure(truth["found_once"], "lesions"),
            "volume builder on truth: volume within 20 %": figure(
                truth["volume_within_20pct_of_truth_lesions"], "share"),
            "received": figure(details["received_ms_per_slice"], "ms/slice")}
    save(args.name, details, kept,
         notes=f"{args.series} series of {args.slices} slices ({args.size} px, "
               f"{args.spacing} mm), diameters {args.diameters[0]:g}-{args.diameters[1]:g} mm, "
               f"contrast {args.contrast[0]:g}-{args.contrast[1]:g} HU; {details['model']}")


if __name__ == "__main__":
    main()
