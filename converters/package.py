"""The last step: golden cases, the signed manifest and the HTML report.

The package folder holds the artifacts the earlier steps wrote; this step
adds ``golden/*.npy`` (exact preprocessed inputs with the probability every
artifact must reproduce), ``manifest.json`` signed with the technician's
Ed25519 key, and ``report.html``. It then loads the package exactly as the
box does (schema, sha256 of every file, signature) before calling it done.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clinibox_common.contracts import manifest as manifest_schema
from clinibox_common.contracts import signing
from converters.config import ConvertConfigError, require
from converters.report import write_report
from converters.verify import roc_data
from engine.model_package import load_package

if TYPE_CHECKING:
    from converters.pipeline import Conversion

CLINICAL_WARNING = "not validated for clinical use"


def alert_from(probs: np.ndarray, positive: np.ndarray, finding: float) -> float:
    """The probability at >= 99 % specificity among ``probs`` (at least finding + 0.1,
    at most 0.99): where an alert goes out."""
    negatives = np.sort(probs[~positive])
    spec99 = float(negatives[min(len(negatives) - 1, math.ceil(0.99 * len(negatives)))])
    return round(float(np.clip(max(spec99 + 1e-4, finding + 0.1), finding + 0.05, 0.99)), 4)


def alert_threshold(conv: Conversion, finding: float) -> float:
    """``thresholds.alert`` from the config, else :func:`alert_from` the source model on
    validation."""
    if "alert" in conv.config.thresholds:
        return float(conv.config.thresholds["alert"])
    spec, val = conv.spec, conv.validation
    probs = spec.finding_probability(conv.reference()[spec.score_output])
    return alert_from(probs, spec.finding_targets(val.labels), finding)


#: golden cases a package ships at least (fewer only when validation has fewer images)
GOLDEN_CASES = 8
#: a golden case's probability stays at least this far from the operating threshold
GOLDEN_MARGIN = 0.1


def golden_cases(conv: Conversion, finding: float) -> list[dict[str, Any]]:
    """At least ``GOLDEN_CASES`` validation images, an equal share for every class (binary:
    with and without a finding), so both sides of the operating threshold are covered;
    each decided correctly by the source where the class allows, spread over the class's
    range of probabilities away from saturation and at least ``GOLDEN_MARGIN`` from the
    threshold; saved as preprocessed inputs."""
    spec, val = conv.spec, conv.validation
    probs = spec.finding_probability(conv.reference()[spec.score_output])
    positive = spec.finding_targets(val.labels)
    groups = ([(f"{label}", val.labels == i) for i, label in enumerate(spec.labels)]
              if spec.activation == "softmax" else
              [("finding", positive), ("no-finding", ~positive)])
    share = max(2, math.ceil(GOLDEN_CASES / len(groups)))
    cases, indices = [], []
    (conv.out / "golden").mkdir(exist_ok=True)
    for name, members in groups:
        right = members & ((probs >= finding) == positive)
        pool = np.nonzero(right if right.any() else members)[0]
        unsaturated = pool[(probs[pool] > 0.02) & (probs[pool] < 0.98)]
        pool = unsaturated if len(unsaturated) >= share else pool
        # clear of the threshold, so that every artifact's decision on a case is stable
        clear = pool[np.abs(probs[pool] - finding) >= GOLDEN_MARGIN]
        pool = clear if len(clear) >= share else pool
        if not len(pool):
            continue
        ordered = pool[np.argsort(probs[pool], kind="stable")]
        picks = ordered[np.unique(np.linspace(0, len(ordered) - 1, share).round().astype(int))]
        for number, index in enumerate(picks, start=1):
            index = int(index)
            indices.append(index)
            relative = f"golden/{_slug(name)}-{number}.npy"
            np.save(conv.out / relative, val.x[index : index + 1].astype(np.float32))
            label = int(val.labels[index])
            shown = spec.labels[label] if spec.activation == "softmax" else label
            cases.append({"input": relative, "class": name,
                          "description": f"validation image {val.files[index]} "
                                         f"(label {shown})",
                          "sha256": manifest_schema.sha256_file(conv.out / relative)})
    deviations = []
    probabilities = {r.kind: spec.finding_probability(conv.outputs(r)[spec.score_output])
                     for r in conv.records()}  # each golden input is a validation row
    for case, index in zip(cases, indices, strict=True):
        got = {kind: float(p[index]) for kind, p in probabilities.items()}
        reference = got.get("onnx-fp32", next(iter(got.values())))
        case["expected"] = {"probability": round(reference, 5)}
        deviations += [abs(v - reference) for v in got.values()]
    tolerance = round(max(0.02, math.ceil(max(deviations, default=0) * 150) / 100), 2)
    for case in cases:
        case["tolerance"] = tolerance
    return cases


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text.lower()) or "case"


def postprocessing(conv: Conversion) -> dict[str, Any]:
    """The manifest's postprocessing: the config's, with the classifier's parameters filled,
    and, for declared heads, ``input_size`` [H, W] (a map's stride is the input size over
    the map's size)."""
    c, spec = conv.config, conv.spec
    params = dict(c.postprocessing_params)
    if c.postprocessing == "classification":
        params = {"output": spec.score_output, "activation": spec.activation,
                  "labels": list(spec.labels), "negative_label": spec.negative_label, **params}
    if c.heads and "stride" not in params:
        params.setdefault("input_size", list(spec.input_shape[2:]))
    return {"name": c.postprocessing, "params": params}


def manifest(conv: Conversion, thresholds: dict[str, float], cases: list[dict]) -> dict:
    """The unsigned manifest (schema clinibox.model-package/1)."""
    import torch

    c, spec, state = conv.config, conv.spec, conv.state
    meanings = {**state.get("output_meanings", {}), **c.output_meanings}
    artifacts = []
    for record in conv.records():
        entry = {"format": record.format, "precision": record.precision, "path": record.path,
                 "files": {f: manifest_schema.sha256_file(conv.out / f) for f in record.files},
                 "profiles": record.profiles,
                 "validation": {**state["metrics"].get(record.kind, {}),
                                **state["benchmarks"].get(record.kind, {})},
                 "conversion": record.notes}
        own = (state.get("artifact_thresholds") or {}).get(record.kind)
        if own is not None:
            if own["finding"] != state.get("threshold"):
                entry["thresholds"] = {"finding": own["finding"]}
            entry["conversion"] = {**record.notes, "operating_threshold": {
                **own, "rule": "the package's finding threshold, lowered just enough that the "
                               "artifact calls a finding on every calibration image the "
                               "source calls one (sensitivity first)"}}
        if record.runtime_config:
            entry["runtime_config"] = record.runtime_config
        artifacts.append(entry)
    return {
        "schema": manifest_schema.SCHEMA, "name": c.name, "version": c.version, "task": c.task,
        "intended_use": c.intended_use or f"{c.task}; {CLINICAL_WARNING}",
        "modalities": list(c.modalities), "labels": list(spec.labels),
        "inputs": [{"name": spec.input_name, "shape": list(spec.input_shape),
                    "dtype": "float32", "layout": "NCHW",
                    "normalisation": {"mean": c.mean, "std": c.std}}],
        "outputs": [{"name": n, "shape": list(spec.output_shapes.get(n, ())),
                     "meaning": meanings.get(n, f"score output ({spec.activation})"
                                             if n == spec.score_output else "output")}
                    for n in spec.output_names],
        "thresholds": thresholds,
        "preprocessing": {"name": c.preprocessing, "params": dict(c.preprocessing_params)},
        "postprocessing": postprocessing(conv),
        **({"heads": list(c.heads)} if c.heads else {}),
        **({"ood": state["ood"]} if state.get("ood") else {}),
        "artifacts": artifacts,
        **({"stages": state["stages"]} if state.get("stages") else {}),
        **({"learning": state["learning"]} if (state.get("learning") or {}).get("path")
           else {}),
        "provenance": {
            "source": state.get("source", conv.source.provenance()),
            "steps": state["steps"], "data": {
                "source": c.data if c.data else "supplied by the caller",
                "rows": {s: int((conv.data.split == s).sum())
                         for s in ("train", "calibration", "validation")},
                **({"clinic_feedback_cases": state["clinic_feedback_cases"]}
                   if "clinic_feedback_cases" in state else {})},
            "gate": conv.gate.to_dict(), "threshold_from": conv.threshold_rule(),
            **({"left_out": state["left_out"]} if state.get("left_out") else {}),
            "floors": {"auc": conv.floors.auc, "sensitivity": conv.floors.sensitivity},
            **({"weakness": state["weakness"]} if state.get("weakness") else {}),
            **({"federated": state["federated"]} if state.get("federated") else {}),
            "source_metrics": state.get("source_metrics", {}),
            "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")},
        "golden_cases": cases,
    }


def report_data(conv: Conversion, signed: dict) -> dict[str, Any]:
    """What ``report.html`` shows, from the state and the signed manifest."""
    spec, val, state = conv.spec, conv.validation, conv.state

    def roc(outputs: dict[str, np.ndarray]) -> dict:
        return roc_data(spec, val.labels, outputs)

    rows = []
    for record, entry in zip(conv.records(), signed["artifacts"], strict=True):
        outputs = conv.outputs(record)
        failures = state.get("gate_failures", {}).get(
            f"{record.format} {record.precision} ({record.path})", [])
        rows.append({"label": f"{record.format} {record.precision}", "kind": record.kind,
                     "format": record.format, "precision": record.precision,
                     "path": record.path, "profiles": record.profiles,
                     "metrics": state["metrics"].get(record.kind, {}),
                     "gate": {"passed": not failures, "failures": failures},
                     "benchmark": state["benchmarks"].get(record.kind, {}),
                     "roc": roc(outputs), "notes": entry.get("conversion", {})})
    return {"name": signed["name"], "version": signed["version"],
            "intended_use": signed["intended_use"],
            "spec": {"labels": list(spec.labels), "activation": spec.activation,
                     "input_shape": list(spec.input_shape)},
            "source": {"label": "PyTorch source", "metrics": state.get("source_metrics", {}),
                       "roc": roc(conv.reference())},
            "artifacts": rows,
            "steps": [{"name": k, "summary": v} for k, v in state["steps"].items()],
            "gate": conv.gate.to_dict(), "created": signed["provenance"]["created"],
            "threshold_rule": signed["provenance"]["threshold_from"],
            "floors": signed["provenance"]["floors"],
            "weakness": signed["provenance"].get("weakness", []),
            "clinic_feedback_cases": signed["provenance"]["data"].get("clinic_feedback_cases"),
            "federated": signed["provenance"].get("federated"),
            "heads": signed.get("heads", []),
            "left_out": state.get("left_out") or [],
            "heatmap": state["steps"].get("heatmap"),
            "validated_range": {**state["steps"].get("validated_range", {}),
                                **({"held_out": signed["ood"].get("held_out", {})}
                                   if signed.get("ood") else {})}}


def write_package(conv: Conversion, keep_work: bool = False) -> Path:
    """Sign and write the manifest and report; verify the package as the box would."""
    c = conv.config
    require(c, "name", "version", "key")
    key_path = Path(c.key)
    public = key_path.with_suffix(".pub")
    if not public.exists():
        raise ConvertConfigError(f"{public} is missing: the public key must sit beside "
                                 f"{key_path} (clinibox keys generate writes both)")
    if not conv.state["metrics"] or conv.state.get("gate_failures"):
        raise ConvertConfigError("package needs a passing verify step first")
    finding = float(conv.state.get("threshold", conv.threshold()))
    thresholds = {**{k: float(v) for k, v in c.thresholds.items()}, "finding": finding,
                  "alert": alert_threshold(conv, finding)}
    cases = golden_cases(conv, finding)
    try:
        signed = signing.sign_document(manifest(conv, thresholds, cases),
                                       signing.load_private_key(key_path))
    except (OSError, ValueError) as exc:
        raise ConvertConfigError(f"cannot sign with {key_path}: {exc}") from exc
    tmp = conv.out / "manifest.json.tmp"
    tmp.write_text(json.dumps(signed, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(conv.out / "manifest.json")
    write_report(conv.out / "report.html", report_data(conv, signed))
    try:
        load_package(conv.out, [public])
    except manifest_schema.PackageError as exc:
        raise ConvertConfigError(f"the written package does not verify: {exc}") from exc
    if not keep_work:
        shutil.rmtree(conv.work, ignore_errors=True)
    return conv.out
