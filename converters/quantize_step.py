"""The quantize step: INT8 artifacts calibrated on the user's data, quantised again with
sensitive layers kept in float while one breaks the gate, and the INT8 artifacts left out of
a package (``converters.quantize`` holds the quantisers themselves)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from converters import formats
from converters.artifacts import ArtifactRecord
from converters.box_lists import box_list_head, decode_nodes
from converters.config import ConvertConfigError
from converters.conversion_view import ConversionView
from converters.data import DataError
from converters.image_score import MaskScore
from converters.int8_kernels import kernel_note, saturation_failures
from converters.progress import progress
from converters.quantize import (
    check_calibration,
    distance_from_source,
    fallback_plan,
    quantize_onnx,
    quantize_openvino,
    quantize_tflite,
)
from converters.verify import INT8_PRECISIONS, check_gate

log = logging.getLogger("clinibox.convert")
#: the distance from the source of an INT8 attempt the quantiser could not make: the farthest
NOT_MADE = (math.inf, math.inf, math.inf)


def calibration(conv: ConversionView) -> np.ndarray:
    """Calibration inputs from the user's data (at most ``calibration_size``)."""
    calib = conv.data.subset("calibration").x[: conv.config.calibration_size]
    try:
        return check_calibration(calib, conv.spec)
    except ValueError as exc:
        raise DataError(f"calibration data: {exc}") from exc


def _quantize_once(conv: ConversionView, kind: formats.ArtifactKind, calib: np.ndarray,
                   keep: list[str]) -> dict:
    out = conv.out / kind.path
    out.parent.mkdir(parents=True, exist_ok=True)
    fp32 = conv.out / formats.KINDS["onnx-fp32"].path
    if kind.format == "onnx" and box_list_head(conv.config.heads) is not None:
        # a detector's decode (after its last weighted layers) stays float
        keep = [*keep, *(n for n in decode_nodes(fp32, list(conv.spec.output_names))
                         if n not in keep)]
    if kind.format == "onnx":
        return quantize_onnx(fp32, out, calib, conv.spec, symmetric=kind.key.endswith("trt"),
                             keep_float=keep)
    if kind.format == "openvino-ir":
        return quantize_openvino(conv.out / formats.KINDS["openvino-fp32"].path, out, calib,
                                 conv.spec, keep_float=keep)
    return quantize_tflite(conv.source.exportable, conv.spec, calib, out, keep_float=keep)


def kernel_failures(out: Path, record: ArtifactRecord, notes: dict) -> list[str]:
    """An INT8 ONNX artifact must not saturate on CPUs without VNNI (int8_kernels.py);
    the check's findings go into ``notes``."""
    if record.format != "onnx" or record.precision != "int8":
        return []
    path = out / record.path
    notes["kernels"] = kernel_note(path)
    return saturation_failures(path)


def quantize(conv: ConversionView) -> list[ArtifactRecord]:
    """INT8 artifacts calibrated on the user's data; while one breaks the gate, quantise
    again with the next set of sensitive layers kept in float. When every set breaks it,
    the attempt that came closest is the one left (and reported by ``verify``), not the
    last one tried: keeping more layers in float does not always bring the artifact
    nearer its source."""
    conv.claim("quantize")
    calib = calibration(conv)
    if not (conv.out / formats.KINDS["onnx-fp32"].path).exists():
        raise ConvertConfigError("quantize needs the FP32 export: run the export step first")
    conv.state["quantiser_failed"] = []
    written = []
    for kind in [k for k in formats.kinds_for(conv.config.targets) if k.precision == "int8"]:
        plans: list[list[str]] = [[]]
        if conv.config.float_fallback:
            plans += fallback_plan(kind, fp32_onnx=conv.out / formats.KINDS["onnx-fp32"].path,
                                   model=conv.source.exportable, spec=conv.spec,
                                   calibration=calib)
        attempts, distances = [], []
        with progress(f"quantize {kind.key}", total=len(plans)) as bar:
            for keep in plans:
                start = time.perf_counter()
                try:
                    notes = _quantize_once(conv, kind, calib, keep)
                except Exception as exc:  # the quantiser's own failure on this model
                    attempts.append({"kept_float": keep, "failures": [
                        f"the quantiser failed: {str(exc).splitlines()[0][:300]}"],
                        "seconds": round(time.perf_counter() - start, 1)})
                    distances.append(NOT_MADE)
                    bar.advance(1)
                    continue
                record = conv.record_artifact(kind, notes)
                metrics = conv.measure(record)
                failures = check_gate(metrics, kind.precision, conv.gate)
                failures += kernel_failures(conv.out, record, notes)
                attempts.append({"kept_float": keep, "failures": failures,
                                 "seconds": round(time.perf_counter() - start, 1)})
                distances.append(distance_from_source(failures, metrics))
                bar.advance(1)
                bar.note(f"{kind.key}: {len(keep)} layers float, "
                         f"{'passes' if not failures else 'fails'} the gate")
                if not failures:
                    break
        if all(d == NOT_MADE for d in distances):
            _quantiser_failed(conv, kind, attempts)
            continue
        closest = distances.index(min(distances))
        if attempts[-1]["failures"] and closest != len(attempts) - 1:
            notes = _quantize_once(conv, kind, calib, plans[closest])  # deterministic
            log.info("%s: no plan passes the gate; keeping the closest (%d layers float)",
                     kind.key, len(plans[closest]))
        notes["attempts"] = attempts
        written.append(conv.record_artifact(kind, notes))
    return written


def _quantiser_failed(conv: ConversionView, kind: formats.ArtifactKind,
                      attempts: list[dict]) -> None:
    """No INT8 artifact of ``kind`` could be made: with ``int8_optional`` (or for a
    segmenter) it is left out with the quantiser's reason, as one that breaks the gate;
    otherwise ConvertConfigError says so and what to do."""
    (conv.out / kind.path).unlink(missing_ok=True)
    profiles = formats.profiles_of(kind.key, conv.config.targets)
    reason = attempts[0]["failures"][0]
    if not (conv.config.int8_optional or isinstance(conv.source.module, MaskScore)):
        raise ConvertConfigError(
            f"{kind.key} ({kind.path}): {reason} (with {len(attempts)} sets of layers "
            f"kept in float). The float artifacts are not affected: leave out the "
            f"target profile(s) {', '.join(profiles)}, or set int8_optional = true in "
            f"convert.toml to package them without this INT8 artifact")
    conv.state.setdefault("quantiser_failed", []).append({
        "kind": kind.key, "format": kind.format, "precision": kind.precision,
        "path": kind.path, "profiles": profiles, "failures": [reason],
        "attempts": len(attempts), "kept_float": [len(a["kept_float"]) for a in attempts],
        "reason": "the quantiser could not make this INT8 artifact; the profiles run "
                  "its float artifact"})
    conv.save_state()
    log.warning("left out %s: %s", kind.path, reason)


def leave_out_failing_int8(conv: ConversionView, failures: dict[str, list[str]]) -> list[dict]:
    """A segmenter's INT8 artifact that still breaks the gate after the float fallback
    is left out of the package when every float artifact passes (each profile keeps its
    float artifact): its files, record and measurements are removed, and why it was
    left out is kept in ``state["left_out"]`` for the manifest and the report, instead
    of failing the conversion (issue 55: TFLite INT8 of a softmax segmenter). So is any
    model's with ``int8_optional``; otherwise a broken gate fails the run. ``failures``
    loses the artifacts left out."""
    conv.state["left_out"] = left = list(conv.state.get("quantiser_failed") or [])
    records = conv.records()
    labels = {r.kind: f"{r.format} {r.precision} ({r.path})" for r in records}
    segmenter = isinstance(conv.source.module, MaskScore)
    if (not (segmenter or conv.config.int8_optional)
            or any(labels[r.kind] in failures for r in records
                   if r.precision not in INT8_PRECISIONS)):
        return left
    for record in records:
        if record.precision not in INT8_PRECISIONS or labels[record.kind] not in failures:
            continue
        attempts = record.notes.get("attempts") or []
        left.append({"kind": record.kind, "format": record.format,
                     "precision": record.precision, "path": record.path,
                     "profiles": record.profiles, "failures": failures.pop(
                         labels[record.kind]),
                     "attempts": len(attempts),
                     "kept_float": [len(a.get("kept_float") or []) for a in attempts],
                     "reason": ("a segmenter's" if segmenter else "an int8_optional")
                     + " INT8 artifact that breaks the fidelity gate is left out; the "
                       "profiles run its float artifact"})
        for name in record.files:
            (conv.out / name).unlink(missing_ok=True)
        conv.state["artifacts"] = [a for a in conv.state["artifacts"]
                                   if a["kind"] != record.kind]
        for section in ("metrics", "benchmarks", "artifact_thresholds"):
            (conv.state.get(section) or {}).pop(record.kind, None)
        log.warning("left out %s: %s", record.path, "; ".join(left[-1]["failures"]))
    return left
