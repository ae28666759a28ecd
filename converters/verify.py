"""Fidelity gate: every converted artifact measured against the PyTorch source.

All inputs are numpy: ``labels`` are integer class indices [N]; model outputs are
dicts ``name -> array [N, ...]`` (one row per validation image, stacked). The
metric dicts returned here are JSON-serialisable (plain floats, ``None`` where a
value cannot be measured, e.g. the AUC of a class absent from the validation set)
because they are written into the signed manifest.

Precisions: ``fp32`` and ``fp16`` artifacts are held to the float limits of
:class:`Gate`, ``int8`` artifacts to the int8 limits.

The operating threshold is sensitivity-first (:func:`choose_threshold`), and a
model whose validation AUC or whose artifacts' sensitivity at that threshold
lies below the :class:`Floors` is refused (:class:`WeakModelError`) unless the
operator accepts it. An INT8 artifact runs at its own threshold, lowered just
enough that it calls a finding on every calibration image the source calls one
(:func:`guard_band`, :func:`lowered_threshold`): the gate's "no loss of
sensitivity" is then held at each one's own operating point, its specificity
cost measured beside it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from clinibox_common.errors import CliniboxError
from converters.config import ConvertConfigError
from converters.spec import ModelSpec
from engine.inference.postprocess import sigmoid

FLOAT_PRECISIONS = ("fp32", "fp16")
INT8_PRECISIONS = ("int8",)
_DP = 6  # decimals kept for AUC, rates, agreement and deltas


# -- plain metrics ---------------------------------------------------------------------------


def auc(targets: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank (Mann-Whitney U) formula, ties counted half; nan when a class
    is absent. O(N log N)."""
    t = np.asarray(targets).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    # average rank (1-based) of each distinct value; tied values share it
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = mid_rank[inverse][t].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(targets: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr) from (0, 0) to (1, 1), one per distinct score, for plots.

    Empty arrays when the targets lack positives or negatives."""
    t = np.asarray(targets).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(t)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def operating_point(targets_bool: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """Sensitivity and specificity when ``probs >= threshold`` is called positive
    (nan where the validation set has no positives / no negatives)."""
    t = np.asarray(targets_bool).astype(bool).ravel()
    hit = np.asarray(probs, dtype=np.float64).ravel() >= threshold
    return {"sensitivity": float(hit[t].mean()) if t.any() else float("nan"),
            "specificity": float((~hit[~t]).mean()) if (~t).any() else float("nan")}


#: the sensitivity the operating threshold is chosen for, unless the config says otherwise
TARGET_SENSITIVITY = 0.95


def choose_threshold(targets_bool: np.ndarray, probs: np.ndarray,
                     target_sensitivity: float = TARGET_SENSITIVITY) -> float:
    """The sensitivity-first operating threshold ("rather over-examine than miss").

    The operating point is the one with the highest threshold whose sensitivity
    on the validation set is at least ``target_sensitivity``: every threshold
    above the probability ``p`` of the positive that point still needs loses
    the target. The threshold is placed midway between ``p`` and the next lower
    validation probability (same decisions on validation), rounded down to
    4 dp where that keeps it there, so that the small numeric differences of a
    converted artifact do not drop that positive. 0.5 when the set lacks
    positives or negatives.
    """
    if not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target sensitivity must lie in (0, 1], got {target_sensitivity}")
    t = np.asarray(targets_bool).astype(bool).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if t.all() or not t.any():
        return 0.5
    needed = max(1, math.ceil(target_sensitivity * int(t.sum()) - 1e-9))
    edge = float(np.sort(p[t])[::-1][needed - 1])  # the needed-th most probable positive
    below = p[p < edge]
    lower = float(below.max()) if below.size else -1.0
    middle = (edge + lower) / 2 if below.size else edge
    for scale in (1e4, 1e8):
        rounded = math.floor(middle * scale + 1e-6) / scale  # 0.6499999… is 0.65
        if lower < rounded <= edge:
            return rounded
    return edge


def _logit(p: np.ndarray | float) -> np.ndarray:
    """The inverse of ``inference.postprocess.sigmoid`` (p clipped to 1e-6 … 1 − 1e-6)."""
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def guard_band(source_probs: np.ndarray, artifact_probs: np.ndarray, threshold: float) -> float:
    """How far (on the logit scale) an artifact's threshold must lie below the source's
    ``threshold`` for the artifact to call a finding on every image the source calls one
    (probabilities clipped to 1e-6 … 1 − 1e-6), on images it was not verified on (the
    calibration images): the largest drop below ``threshold`` of any such image's
    artifact logit; 0 when none drops."""
    src, art = np.asarray(source_probs).ravel(), np.asarray(artifact_probs).ravel()
    called = src >= threshold
    if not called.any():
        return 0.0
    return max(0.0, float(np.max(float(_logit(threshold)) - _logit(art[called]))))


def lowered_threshold(threshold: float, band: float) -> float:
    """``threshold`` moved down by ``band`` on the logit scale (the INT8 artifact's
    operating threshold: sensitivity first), rounded down to 4 dp, or to 8 dp where 4 would
    give 0. Never above ``threshold`` and always above 0: a threshold under 1e-4 was once
    raised to 1e-4 here, and a "lowered" threshold came out higher than the package's."""
    q = min(max(float(threshold), 1e-15), 1 - 1e-15)
    moved = float(sigmoid(np.array([math.log(q / (1 - q)) - max(0.0, band)]))[0])
    for scale in (1e4, 1e8):
        rounded = math.floor(moved * scale) / scale
        if rounded > 0.0:
            return min(rounded, float(threshold))
    return min(max(moved, 1e-12), float(threshold))


# -- floors: the least a model must reach to be packaged ------------------------------------


@dataclass(frozen=True)
class Floors:
    """The least validation AUC (of the source model) and sensitivity at the operating
    threshold (of every artifact) a model needs to be packaged (``floor_auc`` and
    ``floor_sensitivity`` in convert.toml)."""

    auc: float = 0.80
    sensitivity: float = 0.90


def weaknesses(source: dict, artifacts: dict[str, dict], floors: Floors) -> list[dict]:
    """Every figure below its floor: ``{"figure", "model", "value", "floor"}``.

    ``source`` is :func:`source_metrics`'s dict, ``artifacts`` maps an artifact's
    kind to its :func:`compare` metrics. A figure that could not be measured (None)
    counts as below the floor.
    """
    found = []

    def check(figure: str, model: str, value: float | None, floor: float) -> None:
        if value is None or value < floor - 1e-12:
            found.append({"figure": figure, "model": model, "value": value, "floor": floor})

    check("validation AUC", "PyTorch source", source.get("auc"), floors.auc)
    for kind, metrics in artifacts.items():
        check("sensitivity at the operating threshold", kind, metrics.get("sensitivity"),
              floors.sensitivity)
    return found


def describe_weakness(entry: dict) -> str:
    """One weakness entry in words: "validation AUC of PyTorch source 0.512 is below the
    floor 0.800"."""
    value = "not measurable" if entry["value"] is None else f"{entry['value']:.3f}"
    return (f"{entry['figure']} of {entry['model']} {value} is below the floor "
            f"{entry['floor']:.3f}")


class WeakModelError(ConvertConfigError):
    """The model is below a floor of ``convert.toml``; nothing was packaged."""

    kind = "weak model refused"

    def __init__(self, found: list[dict]) -> None:
        self.weaknesses = list(found)
        lines = ["the model is too weak to package (measured on the validation set):"]
        lines += [f"  - {describe_weakness(w)}" for w in found]
        lines += ["Train it further or on more data, or lower the floor deliberately "
                  "(floor_auc, floor_sensitivity in convert.toml); --accept-weak-model "
                  "packages it anyway and writes the weakness into the manifest and the "
                  "report; nothing was packaged."]
        super().__init__("\n".join(lines))


# -- the gate --------------------------------------------------------------------------------


#: the gate limits that may be switched off (set to None)
OPTIONAL_LIMITS = ("int8_min_agreement", "int8_max_specificity_loss")


@dataclass(frozen=True)
class Gate:
    """Fidelity limits an artifact must meet (the ``[gate]`` table of ``convert.toml``;
    each key, default and why in ``docs/model-makers/floors.md``). fp32 and fp16 artifacts
    use the float limits; int8 the int8 ones. Losses are absolute (0.05 is five points of
    specificity). ``int8_min_agreement = 0`` or ``int8_max_specificity_loss = 1`` switches
    that limit off (None does too, for callers in Python)."""

    #: FP32/FP16: largest |ΔAUC| against the source (macro and per class)
    float_max_auc_delta: float = 0.001
    #: FP32/FP16: smallest share of validation images with the source's decision
    float_min_agreement: float = 0.999
    #: INT8: largest |ΔAUC| against the source (macro and per class)
    int8_max_auc_delta: float = 0.01
    #: INT8: largest loss of sensitivity at the artifact's operating threshold (finding
    #: level and per finding class)
    int8_max_sensitivity_loss: float = 0.0
    #: INT8: smallest share of validation images with the source's decision (each judged
    #: at its own operating threshold)
    int8_min_agreement: float | None = 0.95
    #: INT8: largest loss of specificity at the artifact's operating threshold (finding
    #: level): the price of its guard band, in false alarms
    int8_max_specificity_loss: float | None = 0.10
    #: detectors of candidate boxes (converters/box_lists.py): the least share of the
    #: source's final boxes an artifact finds again (same class, IoU >= 0.5) and the least
    #: mean IoU of those it finds, after the box's own NMS; fp32/fp16, then int8
    float_min_box_sensitivity: float = 0.98
    float_min_box_iou: float = 0.95
    int8_min_box_sensitivity: float = 0.90
    int8_min_box_iou: float = 0.80

    @classmethod
    def from_dict(cls, d: dict | None) -> Gate:
        """Build from a config table; unknown keys raise ValueError naming them."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown gate setting(s) {unknown}; known: {sorted(known)}")
        for key, value in d.items():
            if value is None and key in OPTIONAL_LIMITS:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"gate setting {key!r} must be a number >= 0, not {value!r}")
        return cls(**{k: (None if v is None else float(v)) for k, v in d.items()})

    def to_dict(self) -> dict:
        """The limits as a plain dict (for the manifest and the report)."""
        return asdict(self)


class GateFailure(CliniboxError, RuntimeError):
    """One or more artifacts broke the fidelity gate; ``failures`` maps artifact label to
    its human-readable failures. ``str()`` names every artifact and broken limit and
    says what to try."""

    kind = "fidelity gate failed"

    def __init__(self, failures: dict[str, list[str]]):
        self.failures = {k: list(v) for k, v in failures.items() if v}
        lines = [f"fidelity gate failed for {len(self.failures)} artifact(s) "
                 "(measured against the PyTorch source on the validation set):"]
        for label, reasons in self.failures.items():
            lines.append(f"  {label}:")
            lines += [f"    - {r}" for r in reasons]
        lines += [
            "What to try:",
            "  - int8: more and more representative calibration images (cover every class "
            "and modality), per-channel weights, or a different calibration method;",
            "  - keep sensitive layers in float (e.g. the first conv and the output heads);",
            "  - fp32/fp16: check the export (opset, fused ops, fp16 overflow) — float "
            "artifacts should match the source almost exactly;",
            "  - only if the loss is understood and acceptable: relax the limit deliberately "
            "in the [gate] table of the conversion config (it is recorded in the manifest);",
            "  - an int8 artifact that cannot pass: int8_optional = true in convert.toml packages "
            "without it, with the reason (its profiles run their float artifact).",
        ]
        super().__init__("\n".join(lines))


# -- source and artifact metrics -------------------------------------------------------------


def _num(x: float, dp: int = _DP) -> float | None:
    """Plain rounded float, None for nan (JSON has no nan)."""
    x = float(x)
    return None if math.isnan(x) else round(x, dp) + 0.0


def _sig(x: float) -> float | None:
    """Plain float to 6 significant digits, None for nan."""
    x = float(x)
    return None if math.isnan(x) else float(f"{x:.6g}")


def _per_label(spec: ModelSpec) -> bool:
    """Per-class metrics: softmax over > 2 classes, or sigmoid over several labels."""
    return spec.multiclass or (spec.activation == "sigmoid" and len(spec.labels) > 1)


def _class_decisions(spec: ModelSpec, probs: np.ndarray, threshold: float) -> np.ndarray:
    """Bool [N, K]: class c predicted (softmax: argmax == c; sigmoid: p_c >= threshold)."""
    if spec.activation == "softmax":
        return probs.argmax(axis=1)[:, None] == np.arange(probs.shape[1])[None, :]
    return probs >= threshold


def _raw_metrics(spec: ModelSpec, labels: np.ndarray, scores: np.ndarray,
                 threshold: float) -> dict:
    """Unrounded metrics of one model's score output."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    scores = np.asarray(scores)
    if len(scores) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(scores)} rows of "
                         f"{spec.score_output!r}")
    probs, finding = spec.probabilities(scores), spec.finding_probability(scores)
    targets, found = spec.class_targets(labels), spec.finding_targets(labels)
    m: dict = {"images": len(labels), "finding_auc": auc(found, finding),
               **operating_point(found, finding, threshold)}
    m["auc"] = m["finding_auc"]
    if _per_label(spec):
        if probs.shape[1] != len(spec.labels):
            raise ValueError(f"{spec.score_output!r} gives {probs.shape[1]} values per image, "
                             f"the spec names {len(spec.labels)} labels")
        m["auc_per_class"] = {name: auc(targets[:, c], probs[:, c])
                              for c, name in enumerate(spec.labels)}
        present = [v for v in m["auc_per_class"].values() if not math.isnan(v)]
        m["auc"] = float(np.mean(present)) if present else float("nan")
        decided = _class_decisions(spec, probs, threshold)
        m["per_class"] = {name: operating_point(targets[:, c], decided[:, c], 0.5)
                          for c, name in enumerate(spec.labels)}
    return m


def _rounded(raw: dict, threshold: float) -> dict:
    """Raw metrics → JSON-ready dict."""
    out = {"images": raw["images"], "threshold": float(threshold),
           "auc": _num(raw["auc"]), "finding_auc": _num(raw["finding_auc"]),
           "sensitivity": _num(raw["sensitivity"]), "specificity": _num(raw["specificity"])}
    if "auc_per_class" in raw:
        out["auc_per_class"] = {k: _num(v) for k, v in raw["auc_per_class"].items()}
        out["per_class"] = {k: {m: _num(x) for m, x in v.items()}
                            for k, v in raw["per_class"].items()}
    return out


def source_metrics(spec: ModelSpec, labels: np.ndarray, outputs: dict[str, np.ndarray],
                   threshold: float) -> dict:
    """Accuracy of the source model on the validation set at the operating threshold:
    images, auc (binary: finding AUC; per-class models: macro one-vs-rest AUC over the
    classes present), finding_auc, sensitivity/specificity (finding level), threshold and,
    for multi-class/multi-label, auc_per_class and per_class sensitivity/specificity."""
    return _rounded(_raw_metrics(spec, labels, outputs[spec.score_output], threshold),
                    threshold)


def _delta(a: float, b: float) -> float | None:
    return _num(a - b)


def roc_data(spec: ModelSpec, labels: np.ndarray, outputs: dict[str, np.ndarray]) -> dict:
    """ROC input for :func:`converters.report.write_report`: ``{"finding": {"targets",
    "scores"}}`` plus ``"classes": {label: {"targets", "scores"}}`` for per-class models
    (plain lists, one entry per validation image)."""
    scores = outputs[spec.score_output]
    data = {"finding": {"targets": spec.finding_targets(labels).tolist(),
                        "scores": spec.finding_probability(scores).tolist()}}
    if _per_label(spec):
        probs, targets = spec.probabilities(scores), spec.class_targets(labels)
        data["classes"] = {name: {"targets": targets[:, c].tolist(),
                                  "scores": probs[:, c].tolist()}
                           for c, name in enumerate(spec.labels)}
    return data


def compare(spec: ModelSpec, labels: np.ndarray, source: dict[str, np.ndarray],
            artifact: dict[str, np.ndarray], threshold: float,
            artifact_threshold: float | None = None) -> dict:
    """Artifact's own metrics plus its deltas (artifact − source), decision agreement,
    max |Δ| per output and on the probabilities, and non-finite value counts. The source
    is judged at ``threshold``, the artifact at its own ``artifact_threshold`` (default:
    the same)."""
    missing = sorted(set(source) - set(artifact))
    if missing:
        raise ValueError(f"artifact lacks output(s) {missing}; it gave {sorted(artifact)}")
    arrays = {}
    for name, ref in source.items():
        ref = np.asarray(ref, dtype=np.float64)
        got = np.asarray(artifact[name], dtype=np.float64)
        if got.size != ref.size:
            raise ValueError(f"output {name!r}: artifact shape {got.shape} does not match the "
                             f"source's {ref.shape}")
        arrays[name] = (ref, got.reshape(ref.shape))
    non_finite = {n: int((~np.isfinite(g)).sum()) for n, (_, g) in arrays.items()}
    ref_s, got_s = arrays[spec.score_output]
    own = threshold if artifact_threshold is None else artifact_threshold
    src = _raw_metrics(spec, labels, ref_s, threshold)
    art = _raw_metrics(spec, labels, got_s, own)
    m = _rounded(art, own)
    if "per_class" in art:
        m["negative_label"] = spec.negative_label
    m["auc_delta"] = _delta(art["auc"], src["auc"])
    m["finding_auc_delta"] = _delta(art["finding_auc"], src["finding_auc"])
    m["sensitivity_delta"] = _delta(art["sensitivity"], src["sensitivity"])
    m["specificity_delta"] = _delta(art["specificity"], src["specificity"])
    p_src, p_art = spec.probabilities(ref_s), spec.probabilities(got_s)
    f_src, f_art = spec.finding_probability(ref_s), spec.finding_probability(got_s)
    agree = (f_src >= threshold) == (f_art >= own)
    if "auc_per_class" in art:
        m["auc_per_class_delta"] = {k: _delta(art["auc_per_class"][k], src["auc_per_class"][k])
                                    for k in art["auc_per_class"]}
        m["per_class_delta"] = {
            k: {f"{q}_delta": _delta(art["per_class"][k][q], src["per_class"][k][q])
                for q in ("sensitivity", "specificity")} for k in art["per_class"]}
        same = _class_decisions(spec, p_src, threshold) == _class_decisions(spec, p_art, own)
        agree &= same.all(axis=1)
    m["decision_agreement"] = _num(agree.mean())
    m["max_abs_delta"] = {n: _sig(_finite_max(np.abs(g - r))) for n, (r, g) in arrays.items()}
    m["max_abs_delta_probability"] = _sig(_finite_max(np.abs(p_art - p_src)))
    m["non_finite_values"] = non_finite
    return m


def _finite_max(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else float("nan")


def _auc_failures(name: str, delta: float | None, src: float | None, art: float | None,
                  limit: float) -> list[str]:
    if delta is None:
        return [f"{name} could not be measured (the validation set needs positives and "
                "negatives)"]
    if abs(delta) > limit:
        return [f"{name} changed from {src:.4f} to {art:.4f} (|Δ| {abs(delta):.5f} > "
                f"allowed {limit:.5f})"]
    return []


def check_gate(metrics: dict, precision: str, gate: Gate) -> list[str]:
    """Human-readable reasons the artifact (``compare`` metrics) fails the gate for its
    precision; ``[]`` when it passes. Unknown precision → ValueError."""
    if precision in FLOAT_PRECISIONS:
        max_auc, min_agree, max_sens_loss = (gate.float_max_auc_delta,
                                             gate.float_min_agreement, None)
    elif precision in INT8_PRECISIONS:
        max_auc, min_agree, max_sens_loss = (gate.int8_max_auc_delta, gate.int8_min_agreement,
                                             gate.int8_max_sensitivity_loss)
    else:
        raise ValueError(f"no gate for precision {precision!r}; known: "
                         f"{list(FLOAT_PRECISIONS + INT8_PRECISIONS)}")
    out = []
    bad = {k: v for k, v in metrics.get("non_finite_values", {}).items() if v}
    if bad:
        out.append(f"non-finite values (nan/inf) in output(s): {bad}")
    src_auc = _minus(metrics["auc"], metrics["auc_delta"])
    macro = "macro AUC" if "auc_per_class" in metrics else "AUC"
    out += _auc_failures(macro, metrics["auc_delta"], src_auc, metrics["auc"], max_auc)
    for label, d in metrics.get("auc_per_class_delta", {}).items():
        a = metrics["auc_per_class"][label]
        if d is not None:  # a class absent from the validation set has no AUC
            out += _auc_failures(f"AUC of {label!r}", d, _minus(a, d), a, max_auc)
    agreement = metrics["decision_agreement"]
    if min_agree is not None and agreement < min_agree:
        out.append(f"decision agreement with the source {agreement:.3%} is below the "
                   f"required {min_agree:.3%}")
    if precision in INT8_PRECISIONS and gate.int8_max_specificity_loss is not None:
        out += _spec_failures(metrics.get("specificity"), metrics.get("specificity_delta"),
                              gate.int8_max_specificity_loss)
    if max_sens_loss is not None:
        out += _sens_failures("sensitivity", metrics["sensitivity"],
                              metrics["sensitivity_delta"], max_sens_loss)
        for label, d in metrics.get("per_class_delta", {}).items():
            if label != metrics.get("negative_label"):
                out += _sens_failures(f"sensitivity of {label!r}",
                                      metrics["per_class"][label]["sensitivity"],
                                      d["sensitivity_delta"], max_sens_loss)
    if metrics.get("boxes"):  # a detector's final boxes against the source's
        from converters.box_lists import box_gate_failures

        floats = precision in FLOAT_PRECISIONS
        out += box_gate_failures(
            metrics["boxes"],
            gate.float_min_box_sensitivity if floats else gate.int8_min_box_sensitivity,
            gate.float_min_box_iou if floats else gate.int8_min_box_iou)
    return out


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, _DP)


def _sens_failures(name: str, art: float | None, delta: float | None,
                   limit: float) -> list[str]:
    if art is None or delta is None:
        return []  # no positives of this kind in the validation set
    if -delta > limit + 1e-12:
        dp = 3 if -delta >= 0.001 else 5
        return [f"{name} fell from {art - delta:.{dp}f} to {art:.{dp}f} (loss {-delta:.{dp}f} > "
                f"allowed {limit:.{dp}f})"]
    return []


def _spec_failures(art: float | None, delta: float | None, limit: float) -> list[str]:
    if art is None or delta is None:
        return []  # no negatives in the validation set
    if -delta > limit + 1e-12:
        return [f"specificity fell from {art - delta:.3f} to {art:.3f} (loss {-delta:.3f} > "
                f"allowed {limit:.3f}): the artifact calls that many more false alarms at "
                "its operating threshold"]
    return []
