"""Conversion report: one self-contained, printable HTML page next to the model package.

``write_report(path, data)`` takes a plain dict (see :func:`write_report`); plots are
drawn with matplotlib (Agg) and embedded as base64 PNG, so the file needs nothing else.
Every string from ``data`` is escaped.

ROC format (``data["source"]["roc"]`` and each artifact's ``"roc"``), as produced by
:func:`converters.verify.roc_data`::

    {"finding": CURVE, "classes": {label: CURVE, ...}}   # "classes" for per-class models
    CURVE = {"targets": [bool, ...], "scores": [float, ...]}   # raw validation data, or
            {"fpr": [...], "tpr": [...]}                       # a precomputed curve

A bare CURVE is read as ``{"finding": CURVE}``. With ``"classes"`` the page draws one
subplot per class plus one for "any finding"; otherwise one finding-level plot.
"""

from __future__ import annotations

import base64
import io
import json
import os
from html import escape
from pathlib import Path

import numpy as np

from converters.box_lists import report_section as box_list_section
from converters.verify import auc, roc_curve

_CSS = """
body{font-family:sans-serif;margin:2em;color:#222;max-width:1200px}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #bbb;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#eee}td.l,th.l{text-align:left}
.banner{border:3px solid #b00;background:#fee;color:#900;font-weight:bold;font-size:1.2em;
padding:.6em 1em;margin:1em 0}
.pass{color:#060;font-weight:bold}.fail{color:#b00;font-weight:bold}
.weak{border-color:#d60;background:#fff3e0;color:#a40}
.meta{color:#555}img{max-width:100%;page-break-inside:avoid}
@media print{body{margin:0}h2{page-break-after:avoid}}
"""


_LIMITS = {
    "float_max_auc_delta": "fp32/fp16: largest |ΔAUC| vs the source (macro and per class)",
    "float_min_agreement": "fp32/fp16: smallest share of images with the same decision",
    "int8_max_auc_delta": "int8: largest |ΔAUC| vs the source (macro and per class)",
    "int8_max_sensitivity_loss": "int8: largest sensitivity loss at the operating threshold "
                                 "(finding level and per finding class)",
    "int8_min_agreement": "int8: smallest share of images with the same decision (— none)",
    "int8_max_specificity_loss": "int8: largest specificity loss at its operating threshold "
                                 "(the guard band's price in false alarms; — none)",
    "float_min_box_sensitivity": "fp32/fp16 detectors of boxes: least share of the source's "
                                 "final boxes found again (same class, IoU >= 0.5)",
    "float_min_box_iou": "fp32/fp16 detectors of boxes: least mean IoU of the matched boxes",
    "int8_min_box_sensitivity": "int8 detectors of boxes: least share of the source's final "
                                "boxes found again (same class, IoU >= 0.5)",
    "int8_min_box_iou": "int8 detectors of boxes: least mean IoU of the matched boxes",
}


def _e(x: object) -> str:
    return escape(str(x), quote=True)


def _f(x: object, dp: int = 4, signed: bool = False) -> str:
    """A number for a table cell ('—' when missing)."""
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "—"
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return f"{x:+.{dp}f}" if signed else f"{x:.{dp}f}"
    return _e(x)


def _size(n: object) -> str:
    if not isinstance(n, (int, float)):
        return "—"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _figure(width: float, height: float):
    """A matplotlib Figure outside pyplot (no backend or global state touched)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _png(fig) -> str:
    """Figure → <img> with a base64 PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _curves(roc: dict | None) -> dict[str, dict]:
    """ROC dict → {name: CURVE}: the classes when given, else the finding curve."""
    if not roc:
        return {}
    if "targets" in roc or "fpr" in roc:
        roc = {"finding": roc}
    curves = dict(roc.get("classes") or {})
    if roc.get("finding") is not None:
        curves["any finding" if curves else "finding"] = roc["finding"]
    return curves


def _points(curve: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """CURVE → fpr, tpr, AUC (trapezoid for a precomputed curve)."""
    if "fpr" in curve:
        fpr, tpr = np.asarray(curve["fpr"], float), np.asarray(curve["tpr"], float)
        return fpr, tpr, float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    fpr, tpr = roc_curve(curve["targets"], curve["scores"])
    return fpr, tpr, auc(curve["targets"], curve["scores"])


def _roc_figure(models: list[dict]) -> str:
    """Every artifact's ROC over the source's; one subplot per class when given."""
    names = list(_curves(models[0].get("roc")))
    if not names:
        return "<p>No ROC data.</p>"
    cols = 2 if len(names) == 4 else min(3, len(names))
    rows = -(-len(names) // cols)
    fig = _figure(4.6 * cols, 4.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for i, model in enumerate(models):
            curve = _curves(model.get("roc")).get(name)
            if curve is None:
                continue
            fpr, tpr, a = _points(curve)
            if not len(fpr):
                continue
            macro = (model.get("metrics") or {}).get("auc")
            tag = f", macro {macro:.4f}" if len(names) > 1 and macro is not None else ""
            style = ({"color": "black", "lw": 3.0, "alpha": 0.35} if i == 0
                     else {"lw": 1.2, "ls": "--"})
            ax.step(fpr, tpr, where="post", label=f"{model['label']} (AUC {a:.4f}{tag})",
                    **style)
        ax.plot([0, 1], [0, 1], color="#999", lw=0.6, ls=":")
        ax.set(title=name, xlabel="1 − specificity", ylabel="sensitivity",
               xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
        ax.legend(loc="lower right", fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def _bars(models: list[dict], key: str, title: str, unit: str, scale: float = 1.0) -> str:
    """Horizontal bar chart of one benchmark figure (ms_p90 drawn as a tick on latency)."""
    rows = [(m["label"], (m.get("benchmark") or {})) for m in models]
    rows = [(label, b) for label, b in rows if isinstance(b.get(key), (int, float))]
    if not rows:
        return f"<p>No {_e(title.lower())} figures.</p>"
    fig = _figure(7, 0.45 * len(rows) + 1.2)
    ax = fig.subplots()
    values = [b[key] / scale for _, b in rows]
    y = np.arange(len(rows))
    ax.barh(y, values, color="#4a7ab5")
    if key == "ms_per_image":
        p90 = [b.get("ms_p90") for _, b in rows]
        pts = [(v, i) for i, v in enumerate(p90) if isinstance(v, (int, float))]
        if pts:
            ax.plot([v for v, _ in pts], [i for _, i in pts], "k|", ms=14, label="p90")
            ax.legend(fontsize=7)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.3g}", va="center", fontsize=8)
    ax.set_yticks(y, [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set(title=title, xlabel=unit)
    ax.margins(x=0.15)
    fig.tight_layout()
    return _png(fig)


def _table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Table from already-escaped cells; the first ``left`` columns left-aligned."""
    def cls(i: int) -> str:
        return ' class="l"' if i < left else ""

    th = "".join(f"<th{cls(i)}>{h}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _speedup_cell(bench: dict) -> str:
    """An artifact's speed against the FP32 artifact of its runtime: ``1.59×`` (faster),
    ``0.65× slower`` in red, ``FP32`` for the reference itself, ``—`` unmeasured."""
    speedup = bench.get("speedup_vs_fp32")
    if not isinstance(speedup, (int, float)) or isinstance(speedup, bool):
        return "—"
    if bench.get("slower_than_fp32"):
        return f'<span class="fail">{speedup:.2f}× slower</span>'
    return f"{speedup:.2f}×"


def _speed_note(arts: list[dict]) -> str:
    """Where the speed was measured, and what an artifact slower than its FP32 means."""
    benches = [a.get("benchmark") or {} for a in arts]
    cpu = next((b["cpu"] for b in benches if b.get("cpu")), "this computer's CPU")
    slower = [a for a, b in zip(arts, benches, strict=True) if b.get("slower_than_fp32")]
    text = (f"<p>Measured on {_e(cpu)}, batch 1, median of the timed runs through the box's "
            "own runtime. Speed vs its FP32: the time of the FP32 artifact of the same "
            "runtime over this one's (above 1 is faster).")
    if slower:
        names = ", ".join(f"{_e(a['label'])} ({_e(a.get('path', ''))})" for a in slower)
        text += (f' <span class="fail">Slower than its FP32 source on this CPU: {names}.'
                 "</span> It is kept in the package, marked (<code>slower_than_fp32</code> "
                 "in its manifest validation): the box times every artifact it can run on its "
                 "own CPU and runs the fastest, the higher precision on a tie, so it runs "
                 "this one only where it is faster there (a CPU with VNNI, or the GPU a "
                 "TensorRT artifact is made for).")
    return text + "</p>"


def _gate_cell(art: dict) -> str:
    gate = art.get("gate") or {}
    if "passed" not in gate:
        return "—"
    if gate["passed"]:
        return '<span class="pass">PASS</span>'
    reasons = "".join(f"<li>{_e(r)}</li>" for r in gate.get("failures") or [])
    return f'<span class="fail">FAIL</span><ul>{reasons}</ul>'


def _summary(source: dict, arts: list[dict]) -> str:
    head = ["model", "format", "precision", "profiles", "AUC", "ΔAUC", "sens.", "Δsens.",
            "spec.", "Δspec.", "agreement", "max |Δp|", "ms / image", "size", "gate"]
    rows = []
    for i, m in enumerate([source, *arts]):
        x, b = m.get("metrics") or {}, m.get("benchmark") or {}
        rows.append([_e(m.get("label", "?")), _e(m.get("format", "pytorch" if i == 0 else "")),
                     _e(m.get("precision", "fp32" if i == 0 else "")),
                     _e(", ".join(m.get("profiles") or [])), _f(x.get("auc")),
                     _f(x.get("auc_delta"), signed=True), _f(x.get("sensitivity"), 3),
                     _f(x.get("sensitivity_delta"), 3, True), _f(x.get("specificity"), 3),
                     _f(x.get("specificity_delta"), 3, True),
                     _f(x.get("decision_agreement")), _f(x.get("max_abs_delta_probability"), 5),
                     _f(b.get("ms_per_image"), 2), _size(b.get("size_bytes")),
                     _gate_cell(m) if i else "reference"])
    return _table(head, rows, left=4)


def _per_class(source: dict, arts: list[dict]) -> str:
    classes = list((source.get("metrics") or {}).get("auc_per_class") or {})
    if not classes:
        return ""
    rows = []
    for m in [source, *arts]:
        x = m.get("metrics") or {}
        pc, d = x.get("auc_per_class") or {}, x.get("auc_per_class_delta") or {}
        cells = []
        for c in classes:
            op = (x.get("per_class") or {}).get(c) or {}
            cells.append(f"{_f(pc.get(c))} ({_f(d.get(c), signed=True)})<br>sens "
                         f"{_f(op.get('sensitivity'), 3)} / spec {_f(op.get('specificity'), 3)}")
        rows.append([_e(m["label"]), *cells, _f(x.get("auc"))])
    head = ["model", *[_e(c) for c in classes], "macro AUC"]
    return ("<h2>Per class</h2><p>AUC one-vs-rest (Δ vs source); sensitivity/specificity "
            "with the class predicted when it has the highest probability.</p>"
            + _table(head, rows))


def _steps(steps: list[dict]) -> str:
    if not steps:
        return ""
    parts = ["<h2>Steps</h2>"]
    for step in steps:
        summary = step.get("summary") or {}
        rows = [[_e(k), _e(v if isinstance(v, (str, int, float)) else json.dumps(v))]
                for k, v in summary.items()]
        parts.append(f"<h3>{_e(step.get('name', '?'))}</h3>" + _table(["", "value"], rows, 2))
    return "".join(parts)


def _floors(floors: dict | None) -> str:
    if not floors:
        return ""
    return (f"<p>Floors: a model is packaged only with a validation AUC of at least "
            f"{_f(floors.get('auc'), 2)} and a sensitivity of at least "
            f"{_f(floors.get('sensitivity'), 2)} at the operating threshold in every "
            "artifact.</p>")


def _weakness(entries: list[dict]) -> str:
    """The banner for figures below their floor that the operator accepted."""
    if not entries:
        return ""
    items = "".join(
        f"<li>{_e(w.get('figure', '?'))} of {_e(w.get('model', '?'))}: "
        f"{_f(w.get('value'), 3)} — below the floor {_f(w.get('floor'), 3)}</li>"
        for w in entries)
    return (f'<div class="banner weak">Below the floor, accepted by the operator '
            f"(--accept-weak-model):<ul>{items}</ul>This model is weaker than the "
            "converter's floors; its findings need particular care.</div>")


def _federated(run: dict | None) -> str:
    """Where the head came from when a federated run fine-tuned it: rounds, boxes, cases,
    the protection and the privacy budget (``provenance.federated``)."""
    if not run:
        return ""
    privacy = run.get("privacy") or {}
    secure = run.get("secure_aggregation") or {}
    epsilon = privacy.get("epsilon")
    budget = (f"ε = {_f(epsilon, 2)} at δ = {_e(privacy.get('delta'))} "
              f"({_e(privacy.get('accounting', ''))}, neighbouring runs: "
              f"{_e(privacy.get('neighbouring', ''))})" if epsilon is not None
              else "none: no noise was added, so no differential-privacy guarantee")
    boxes, cases = run.get("boxes_per_round") or [], run.get("cases_per_round") or []
    rows = [[str(k + 1), _e(b), _e(cases[k] if k < len(cases) else "—")]
            for k, b in enumerate(boxes)]
    return ("<h2>Federated fine-tuning</h2>"
            f"<p>The head <code>{_e(run.get('layer', ''))}</code> was fine-tuned by "
            f"{_e(run.get('rounds'))} rounds of federated training (run "
            f"{_e(run.get('run_id', '—'))} at the hospital's SuperLink) on the boxes' own "
            f"labelled cases, starting from {_e(run.get('package', ''))} "
            f"(Flower {_e(run.get('flower_version', ''))}, {_e(run.get('started', ''))} to "
            f"{_e(run.get('ended', ''))}; {_e(run.get('local_steps'))} local steps a round, "
            f"proximal {_e(run.get('proximal'))}). No image left a box. Each box's head was "
            f"masked ({_e(secure.get('protocol', ''))}: shares {_e(secure.get('shares'))}, "
            f"rebuilt from {_e(secure.get('threshold'))}); its change was clipped to "
            f"{_e(privacy.get('clipping_norm'))} and the sum noised with multiplier "
            f"{_e(privacy.get('noise_multiplier'))}. Privacy budget: {budget}.</p>"
            + (_table(["round", "boxes", "labelled cases"], rows)
               if rows else ""))


def _left_out(entries: list[dict]) -> str:
    """The artifacts left out of the package (a segmenter's INT8 that broke the gate), with
    why."""
    if not entries:
        return ""
    rows = []
    for entry in entries:
        tries = entry.get("attempts") or 0
        kept = entry.get("kept_float") or []
        tried = (f"{tries} attempt(s), keeping {', '.join(map(str, kept))} layer(s) in float"
                 if tries else "quantised once")
        reasons = "".join(f"<li>{_e(f)}</li>" for f in entry.get("failures") or [])
        rows.append([_e(f"{entry.get('format', '')} {entry.get('precision', '')}"),
                     _e(entry.get("path", "")), _e(", ".join(entry.get("profiles") or [])),
                     f"{_e(tried)}<ul>{reasons}</ul>"])
    return ('<h2>Left out of the package</h2><p class="fail">' + _e(
        entries[0].get("reason", "")) + ".</p>"
        + _table(["artifact", "path", "profiles", "why"], rows, 4))


def _classes_words(head: dict) -> str:
    """A segmentation head's classes and its background, in words."""
    labels = [str(x) for x in head.get("labels", [])]
    background = head.get("background") or head.get("negative_label") or (
        "background" if "background" in labels else None)
    return (", ".join(labels) or "one lesion channel") + (
        f" (background: {background}, never a lesion)" if background else "")


def _segmentation_words(head: dict) -> str:
    """A segmentation head's activation, classes and background, in words."""
    activation = head.get("activation", "sigmoid")
    over = "over" if activation == "softmax" else "per channel:"
    return f"{activation} {over} {_classes_words(head)}"


def _spec_words(spec: dict, heads: list[dict]) -> str:
    """The report's line on what the model gives: its score output's labels and activation,
    and a segmentation head's own activation and classes (what the box reads the mask with,
    not the added image-level score's sigmoid)."""
    segmentation = next((h for h in heads if h.get("kind") == "segmentation"), None)
    score = (f'labels {_e(", ".join(map(str, spec.get("labels", []))))} · activation '
             f'{_e(spec.get("activation", ""))}')
    if segmentation is None:
        return score
    return (f"segmentation: {_e(_segmentation_words(segmentation))} · image-level score (its "
            "most probable lesion pixel): " + score)


def _heatmap(info: dict | None, heads: list[dict]) -> str:
    """The heatmap section: what was added (or why not) and the Grad-CAM check."""
    parts = ["<h2>Heads and heatmap</h2>"]
    if heads:
        parts.append(_table(["kind", "output", "activation", "labels"], [
            [_e(h.get("kind", "")), _e(h.get("output", h.get("score_output", ""))),
             _e(h.get("activation", "sigmoid" if h.get("kind") != "detection" else "")),
             _e(_classes_words(h) if h.get("kind") == "segmentation"
                else ", ".join(h.get("labels", [])))]
            for h in heads], 4))
    if not info:
        parts.append("<p>No heatmap was considered (not a classification task).</p>")
        return "".join(parts)
    if not info.get("added"):
        parts.append(f"<p>{_e(info.get('reason', 'No heatmap added.'))}; nothing was "
                     "added to the model.</p>")
        return "".join(parts)
    layers = info.get("head_layers")
    parts.append(f"<p>{_e(info.get('method', ''))}: "
                 + (f"head {', '.join(f'<code>{_e(n)}</code>' for n in layers)}"
                    if layers else f"linear layer <code>{_e(info.get('linear_layer'))}</code>")
                 + " over the maps of "
                 f"<code>{_e(info.get('feature_layer'))}</code>, output <code>cam</code> "
                 f"{_e(info.get('map'))}.</p>")
    check = info.get("grad_cam") or {}
    if check:
        rows = [[_e(k), _e(v.get("maps")), _e(v.get("flat")), _f(v.get("min")),
                 _f(v.get("median"))] for k, v in (check.get("correlation") or {}).items()]
        parts.append(f"<p>Checked against {_e(check.get('reference'))} on "
                     f"{_e(check.get('images'))} validation images: Pearson correlation per "
                     f"image and class (float artifacts need at least "
                     f"{_e(check.get('min_correlation_required'))}).</p>"
                     + _table(["model", "maps", "flat (not scored)", "min r", "median r"],
                              rows))
    return "".join(parts)


def _validated_range(info: dict | None) -> str:
    """The validated-range section: fitted or why not, and the shares flagged."""
    if not info:
        return ""
    parts = ["<h2>Validated range (out-of-distribution guard)</h2>"]
    if info.get("fitted") is False:
        parts.append(f"<p>{_e(info.get('reason'))}. The box has no guard for this "
                     "model.</p>")
        return "".join(parts)
    held = info.get("held_out") or {}
    flagged = info.get("held_out_flagged", held.get("flagged"))
    rows_held = info.get("held_out_rows", held.get("images", "?"))
    measures = info.get("measures") or [f"the {info.get('output', 'features')!r} output"]
    parts.append(
        f"<p>Mahalanobis distance on {_e('; '.join(measures))} "
        f"({_e(info.get('dimensions', '?'))} values), fitted on "
        f"{_e(info.get('fit_rows', '?'))} calibration images; threshold "
        f"{_e(info.get('threshold', '?'))} from {_e(rows_held)} held-out validation images, of "
        f"which <b>{_f(None if flagged is None else 100 * flagged, 2)} %</b> are flagged "
        "outside the range (the box answers outside_validated_range for such images).</p>")
    rows = [[_e(k), _f(100 * v, 2)] for k, v in (info.get("artifacts_flagged") or {}).items()]
    if rows:
        parts.append(_table(["artifact", "validation images flagged (%)"], rows))
    return "".join(parts)


def write_report(path: Path, data: dict) -> Path:
    """Write the conversion report to ``path`` (atomically) and return it.

    ``data``: name, version, intended_use, spec {labels, activation, input_shape},
    source {label, metrics, roc, benchmark?}, artifacts [{label, kind, format, precision,
    path, profiles, metrics, gate {passed, failures}, benchmark {ms_per_image, ms_p90,
    size_bytes, threads, backend, cpu, speedup_vs_fp32, slower_than_fp32, fp32_source},
    roc}], steps [{name, summary}], gate {limit: value},
    created (ISO time); optional: threshold_rule, floors {auc, sensitivity}, weakness
    [{figure, model, value, floor}] (shown as a banner at the top), heads [...], heatmap
    (``steps["heatmap"]``), validated_range (``steps["validated_range"]`` with held_out),
    left_out [{format, precision, path, profiles, failures, attempts, kept_float, reason}],
    clinic_feedback_cases (validation rows from ``--extra-validation``), federated (the
    federated run that fine-tuned the head: ``provenance.federated``).
    ROC format: see the module docstring."""
    path = Path(path)
    source = {"label": "PyTorch source", **(data.get("source") or {})}
    arts = list(data.get("artifacts") or [])
    models = [source, *arts]
    spec = data.get("spec") or {}
    title = f"{data.get('name', 'model')} {data.get('version', '')}".strip()
    use = data.get("intended_use")
    failed = [a["label"] for a in arts if not (a.get("gate") or {}).get("passed", True)]
    verdict = (f'<p class="fail">Gate FAILED for: {_e(", ".join(failed))}</p>' if failed
               else '<p class="pass">Every artifact passed the fidelity gate.</p>' if arts
               else "")
    bench_rows = [[_e(m["label"]), _e(m.get("path", "")),
                   _e((m.get("benchmark") or {}).get("backend", "")),
                   _e((m.get("benchmark") or {}).get("threads", "")),
                   _f((m.get("benchmark") or {}).get("ms_per_image"), 3),
                   _f((m.get("benchmark") or {}).get("ms_p90"), 3),
                   _speedup_cell(m.get("benchmark") or {}),
                   _size((m.get("benchmark") or {}).get("size_bytes"))] for m in arts]
    gate_rows = [[_e(k), _e("—" if v is None else v), _e(_LIMITS.get(k, ""))]
                 for k, v in (data.get("gate") or {}).items()]
    result_rows = [[_e(a["label"]), _e(a.get("precision", "")), _gate_cell(a)] for a in arts]
    html = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{_e(title)} — conversion report</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)} — conversion report</h1>",
        f'<p class="meta">created {_e(data.get("created", ""))} · '
        f'{_spec_words(spec, list(data.get("heads") or []))} · input '
        f'{_e(spec.get("input_shape", ""))}'
        + (f' · clinic feedback cases: {_e(data["clinic_feedback_cases"])} (validation only)'
           if data.get("clinic_feedback_cases") is not None else "") + "</p>",
        _weakness(list(data.get("weakness") or [])),
        f'<div class="banner">{_e(use)}</div>' if use else "",
        "<h2>Summary</h2>", verdict,
        f"<p>Every artifact measured against {_e(source['label'])} on "
        f"{_e((source.get('metrics') or {}).get('images', '?'))} validation images at "
        f"threshold {_e((source.get('metrics') or {}).get('threshold', '?'))}"
        + (f" (chosen by {_e(data['threshold_rule'])})" if data.get("threshold_rule") else "")
        + ".</p>", _floors(data.get("floors")), _federated(data.get("federated")),
        _summary(source, arts), _per_class(source, arts), box_list_section(arts),
        "<h2>ROC</h2>", _roc_figure(models),
        "<h2>Latency and size</h2>",
        _bars(models, "ms_per_image", "Latency per image", "ms"),
        _bars(models, "size_bytes", "Artifact size", "MB", 1e6),
        _table(["artifact", "path", "backend", "threads", "ms / image", "ms p90",
                "speed vs its FP32", "size"], bench_rows, 4),
        _speed_note(arts),
        "<h2>Fidelity gate</h2>", _table(["limit", "value", "meaning"], gate_rows),
        _table(["artifact", "precision", "result"], result_rows, 3),
        _left_out(list(data.get("left_out") or [])),
        _heatmap(data.get("heatmap"), list(data.get("heads") or [])),
        _validated_range(data.get("validated_range")),
        _steps(list(data.get("steps") or [])), "</body></html>\n"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(h for h in html if h), encoding="utf-8")
    os.replace(tmp, path)
    return path
