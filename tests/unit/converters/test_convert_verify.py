"""Fidelity gate: metrics, deltas and the gate's verdicts on constructed outputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from clinibox_common.errors import EXIT_USAGE
from converters.config import ConvertConfigError
from converters.spec import ModelSpec
from converters.verify import (
    Floors,
    Gate,
    GateFailure,
    WeakModelError,
    auc,
    check_gate,
    choose_threshold,
    compare,
    describe_weakness,
    guard_band,
    lowered_threshold,
    operating_point,
    roc_curve,
    roc_data,
    source_metrics,
    weaknesses,
)

BINARY = ModelSpec(input_shape=(1, 1, 32, 32), output_names=("logit", "heatmap"),
                   score_output="logit")
THREE = ModelSpec(input_shape=(1, 3, 32, 32), output_names=("logits",), score_output="logits",
                  activation="softmax", labels=("normal", "benign", "malignant"),
                  negative_label="normal")


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def _binary_case(n: int = 400, seed: int = 0) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(np.int64)
    logit = rng.normal(labels * 2.0 - 1.0, 1.0)[:, None].astype(np.float32)
    heat = rng.random((n, 1, 8, 8)).astype(np.float32)
    return labels, {"logit": logit, "heatmap": heat}


def _pairwise_auc(t: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[t], s[~t]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def test_auc_hand_computed_with_tie():
    # positives 0.8, 0.4; negatives 0.4, 0.1 → pairs: (0.8>0.4) (0.8>0.1) (0.4=0.4) (0.4>0.1)
    assert auc(np.array([1, 1, 0, 0]), np.array([0.8, 0.4, 0.4, 0.1])) == pytest.approx(3.5 / 4)
    assert auc(np.array([1, 0]), np.array([0.3, 0.3])) == 0.5
    assert auc(np.array([0, 1]), np.array([0.9, 0.1])) == 0.0


def test_auc_matches_brute_force_on_random_data_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(5):
        t = rng.random(120) < 0.3
        s = np.round(rng.normal(t * 0.7, 1.0), 1)  # rounded: many ties
        assert auc(t, s) == pytest.approx(_pairwise_auc(t, s), abs=1e-12)


def test_auc_nan_when_a_class_is_absent():
    assert math.isnan(auc(np.ones(4, bool), np.arange(4.0)))
    assert math.isnan(auc(np.zeros(4, bool), np.arange(4.0)))


def test_roc_curve_ends_and_area_match_auc():
    rng = np.random.default_rng(1)
    t = rng.random(200) < 0.5
    s = np.round(rng.normal(t * 1.0, 1.0), 1)
    fpr, tpr = roc_curve(t, s)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc(t, s), abs=1e-12)
    assert roc_curve(np.ones(3, bool), np.arange(3.0))[0].size == 0


def test_operating_point_and_sensitivity_first_threshold():
    targets = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
    probs = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.7, 0.8, 0.9])
    op = operating_point(targets, probs, 0.5)
    assert op == {"sensitivity": 1.0, "specificity": 0.75}
    assert operating_point(targets, probs, 0.65) == {"sensitivity": 0.75, "specificity": 1.0}
    # sensitivity 0.95 of 4 positives needs all 4, down to 0.5; the next lower score is 0.3:
    # the threshold sits midway (Youden's J would have taken 0.7, sensitivity 0.75)
    assert choose_threshold(targets, probs) == 0.4
    assert choose_threshold(targets, probs, target_sensitivity=0.75) == 0.65  # 0.7 over 0.6
    assert choose_threshold(targets, probs, target_sensitivity=0.5) == 0.75  # 0.8 over 0.7
    # perfectly separable: between the lowest positive and the highest negative
    assert choose_threshold(targets, np.array([.1, .2, .3, .4, .6, .7, .8, .9])) == 0.5
    assert choose_threshold(np.ones(3, bool), np.array([.1, .2, .3])) == 0.5
    assert choose_threshold(targets, probs + 0.000012) == 0.4
    # the needed positive has the lowest score of all: its own score
    assert choose_threshold(np.array([1, 0, 1], bool), np.array([.1, .5, .9]), 1.0) == 0.1
    # scores closer than 4 dp: a finer threshold, still between them
    close = choose_threshold(np.array([1, 0], bool), np.array([0.50005, 0.50001]))
    assert 0.50001 < close <= 0.50005
    with pytest.raises(ValueError, match="target sensitivity"):
        choose_threshold(targets, probs, target_sensitivity=0.0)


def test_threshold_is_the_highest_operating_point_keeping_the_target_sensitivity():
    rng = np.random.default_rng(5)
    targets = rng.random(500) < 0.3
    probs = 1 / (1 + np.exp(-rng.normal(targets * 2.0 - 1.0, 1.2)))
    for target in (0.8, 0.9, 0.95, 0.99, 1.0):
        chosen = choose_threshold(targets, probs, target)
        kept = operating_point(targets, probs, chosen)
        assert kept["sensitivity"] >= target
        # the positive it keeps last: any threshold above it loses the target, and the
        # threshold, below it, decides every validation image as that point does
        edge = probs[targets & (probs >= chosen)].min()
        assert operating_point(targets, probs, np.nextafter(edge, 1))["sensitivity"] < target
        assert operating_point(targets, probs, edge) == kept
        assert not ((probs >= chosen) & (probs < edge)).any()


def test_weaknesses_name_each_figure_below_its_floor():
    floors = Floors(auc=0.8, sensitivity=0.9)
    source = {"auc": 0.62, "sensitivity": 0.96}
    artifacts = {"onnx-fp32": {"sensitivity": 0.96}, "onnx-int8": {"sensitivity": 0.85},
                 "tflite-fp32": {"sensitivity": None}}
    found = weaknesses(source, artifacts, floors)
    assert [(w["figure"], w["model"], w["value"], w["floor"]) for w in found] == [
        ("validation AUC", "PyTorch source", 0.62, 0.8),
        ("sensitivity at the operating threshold", "onnx-int8", 0.85, 0.9),
        ("sensitivity at the operating threshold", "tflite-fp32", None, 0.9)]
    assert weaknesses({"auc": 0.8}, {"onnx-fp32": {"sensitivity": 0.9}}, floors) == []
    error = WeakModelError(found)
    text = str(error)
    assert "validation AUC of PyTorch source 0.620 is below the floor 0.800" in text
    assert "onnx-int8 0.850 is below the floor 0.900" in text
    assert "--accept-weak-model" in text and "nothing was packaged" in text
    assert describe_weakness(found[2]).startswith("sensitivity at the operating threshold of "
                                                  "tflite-fp32 not measurable")
    assert isinstance(error, ConvertConfigError) and error.exit_status == EXIT_USAGE


def test_identical_outputs_pass_both_gates_with_zero_deltas():
    labels, outs = _binary_case()
    thr = choose_threshold(BINARY.finding_targets(labels),
                           BINARY.finding_probability(outs["logit"]))
    src = source_metrics(BINARY, labels, outs, thr)
    m = compare(BINARY, labels, outs, {k: v.copy() for k, v in outs.items()}, thr)
    assert m["auc"] == src["auc"] and m["auc"] > 0.8
    assert m["auc_delta"] == m["sensitivity_delta"] == m["specificity_delta"] == 0.0
    assert m["decision_agreement"] == 1.0
    assert m["max_abs_delta"] == {"logit": 0.0, "heatmap": 0.0}
    assert m["max_abs_delta_probability"] == 0.0
    for precision in ("fp32", "fp16", "int8"):
        assert check_gate(m, precision, Gate()) == []
    json.dumps(m, allow_nan=False)  # goes into the signed manifest
    json.dumps(src, allow_nan=False)


def test_int8_loss_of_sensitivity_fails_with_numbers():
    labels, outs = _binary_case()
    thr = 0.5
    probs = BINARY.finding_probability(outs["logit"])
    art = {k: v.copy() for k, v in outs.items()}
    flipped = np.nonzero((labels == 1) & (probs >= thr))[0][0]
    art["logit"][flipped] = _logit(np.array([thr - 0.01]))
    m = compare(BINARY, labels, outs, art, thr)
    n_pos = int((labels == 1).sum())
    assert m["sensitivity_delta"] == pytest.approx(-1 / n_pos, abs=1e-6)
    assert m["max_abs_delta"]["logit"] > 0 and m["max_abs_delta"]["heatmap"] == 0.0
    failures = check_gate(m, "int8", Gate())
    assert len(failures) == 1
    before = source_metrics(BINARY, labels, outs, thr)["sensitivity"]
    msg = failures[0]
    assert msg.startswith("sensitivity fell from")
    assert f"{before:.3f}" in msg and f"{m['sensitivity']:.3f}" in msg
    assert f"loss {1 / n_pos:.3f} > allowed 0.000" in msg
    # a deliberately relaxed gate accepts it
    assert check_gate(m, "int8", Gate(int8_max_sensitivity_loss=0.01)) == []


def test_an_int8_artifact_at_its_guard_band_threshold_keeps_what_the_source_finds():
    labels, outs = _binary_case(n=600, seed=3)
    thr = 0.5
    rng = np.random.default_rng(4)
    # quantisation lowers every logit by up to 0.2 (on calibration and validation alike)
    art = {k: v.copy() for k, v in outs.items()}
    art["logit"] = outs["logit"] - rng.uniform(0, 0.2, outs["logit"].shape).astype(np.float32)
    at_source = compare(BINARY, labels, outs, art, thr)
    assert at_source["sensitivity_delta"] < 0  # judged at the source's threshold: it misses
    calib_src = rng.normal(0, 2, 256)
    calib_art = calib_src - rng.uniform(0, 0.2, 256)
    band = guard_band(1 / (1 + np.exp(-calib_src)), 1 / (1 + np.exp(-calib_art)), thr)
    # the largest drop below the threshold of an image the source calls a finding
    called = calib_src >= 0.0
    assert band == pytest.approx(max(0.0, float((-calib_art[called]).max())), abs=1e-6)
    assert 0 < band <= 0.2
    own = lowered_threshold(thr, band)
    assert own < thr and abs(_logit(np.array([own]))[0] - (0.0 - band)) < 1e-3
    assert np.all(1 / (1 + np.exp(-calib_art[called])) >= own)  # every one kept
    m = compare(BINARY, labels, outs, art, thr, artifact_threshold=own)
    assert m["threshold"] == own and m["sensitivity_delta"] >= 0
    assert check_gate(m, "int8", Gate()) == []
    assert m["specificity_delta"] is not None  # what sensitivity first costs, measured
    # an artifact that drops nothing the source calls keeps the package's threshold
    assert guard_band(np.array([0.9, 0.2]), np.array([0.95, 0.1]), thr) == 0.0
    assert lowered_threshold(0.3, 0.0) == 0.3
    assert guard_band(np.zeros(0), np.zeros(0), thr) == 0.0


@pytest.mark.parametrize("threshold", [0.5, 0.1293, 0.3, 1e-3, 1.2e-4, 5e-5, 1e-5, 3e-7,
                                       0.99999, 0.12345678])
@pytest.mark.parametrize("band", [0.0, 0.01, 0.3, 30.0])
def test_a_lowered_threshold_is_never_higher_and_stays_a_probability(threshold, band):
    own = lowered_threshold(threshold, band)
    assert 0.0 < own <= threshold
    if band >= 0.3:
        assert own < threshold


def test_fp32_gate_fails_on_agreement_below_999():
    labels, outs = _binary_case(n=1000, seed=5)
    thr = 0.5
    probs = BINARY.finding_probability(outs["logit"])
    art = {k: v.copy() for k, v in outs.items()}
    # two negatives pushed just over the threshold: agreement 998/1000
    for i in np.nonzero((labels == 0) & (probs < thr) & (probs > 0.3))[0][:2]:
        art["logit"][i] = _logit(np.array([thr + 0.001]))
    m = compare(BINARY, labels, outs, art, thr)
    assert m["decision_agreement"] == 0.998
    assert m["sensitivity_delta"] == 0.0 and m["specificity_delta"] < 0
    failures = check_gate(m, "fp32", Gate())
    assert any("agreement" in f and "99.800%" in f and "99.900%" in f for f in failures)
    assert check_gate(m, "int8", Gate()) == []  # int8's agreement minimum is 0.95
    assert check_gate(m, "int8", Gate(int8_min_agreement=0.999)) != []
    with pytest.raises(ValueError, match="precision"):
        check_gate(m, "int4", Gate())


def test_auc_delta_gate_float_vs_int8():
    labels, outs = _binary_case(n=300, seed=2)
    rng = np.random.default_rng(9)
    art = dict(outs, logit=outs["logit"] + rng.normal(0, 0.3, outs["logit"].shape))
    m = compare(BINARY, labels, outs, art, 0.5)
    assert abs(m["auc_delta"]) > 0.001
    assert any(f.startswith("AUC changed from") for f in check_gate(m, "fp16", Gate()))
    relaxed = Gate(int8_max_auc_delta=1.0, int8_max_sensitivity_loss=1.0)
    assert check_gate(m, "int8", relaxed) == []


def _three_class_case(n: int = 300, seed: int = 4) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3)) + 1.5 * np.eye(3)[labels]
    return labels, {"logits": logits.astype(np.float32)}


def test_multiclass_per_class_auc_and_macro():
    labels, outs = _three_class_case()
    m = source_metrics(THREE, labels, outs, 0.5)
    assert set(m["auc_per_class"]) == {"normal", "benign", "malignant"}
    probs = THREE.probabilities(outs["logits"])
    for c, name in enumerate(THREE.labels):
        assert m["auc_per_class"][name] == pytest.approx(auc(labels == c, probs[:, c]), abs=1e-6)
    assert m["auc"] == pytest.approx(np.mean(list(m["auc_per_class"].values())), abs=1e-6)
    assert m["finding_auc"] == pytest.approx(auc(labels != 0, 1 - probs[:, 0]), abs=1e-6)
    pred = probs.argmax(axis=1)
    assert m["per_class"]["benign"]["sensitivity"] == pytest.approx(
        (pred[labels == 1] == 1).mean(), abs=1e-6)
    same = compare(THREE, labels, outs, outs, 0.5)
    assert all(v == 0.0 for v in same["auc_per_class_delta"].values())
    assert same["decision_agreement"] == 1.0 and check_gate(same, "fp32", Gate()) == []


def test_multiclass_agreement_needs_same_argmax_and_class_sensitivity_gate():
    labels, outs = _three_class_case()
    probs = THREE.probabilities(outs["logits"])
    # a malignant image called malignant, swapped to benign: finding decision unchanged
    i = np.nonzero((labels == 2) & (probs.argmax(axis=1) == 2) & (probs[:, 0] < 0.2))[0][0]
    art = {"logits": outs["logits"].copy()}
    art["logits"][i, [1, 2]] = art["logits"][i, [2, 1]]
    m = compare(THREE, labels, outs, art, 0.5)
    assert m["sensitivity_delta"] == 0.0
    assert m["decision_agreement"] == pytest.approx(1 - 1 / len(labels), abs=1e-6)
    assert m["per_class_delta"]["malignant"]["sensitivity_delta"] < 0
    failures = check_gate(m, "int8", Gate(int8_max_auc_delta=1.0))
    assert failures and all("'malignant'" in f for f in failures)
    assert "sensitivity of 'malignant' fell from" in failures[0]
    json.dumps(m, allow_nan=False)


def test_multiclass_absent_class_gives_none_not_nan():
    labels, outs = _three_class_case()
    keep = labels != 1
    m = source_metrics(THREE, labels[keep], {"logits": outs["logits"][keep]}, 0.5)
    assert m["auc_per_class"]["benign"] is None
    assert m["auc"] == pytest.approx(np.mean([m["auc_per_class"]["normal"],
                                              m["auc_per_class"]["malignant"]]), abs=1e-6)
    json.dumps(m, allow_nan=False)


def test_non_finite_artifact_output_fails_and_missing_output_raises():
    labels, outs = _binary_case(n=50)
    art = {k: v.copy() for k, v in outs.items()}
    art["heatmap"][0, 0, 0, 0] = np.nan
    m = compare(BINARY, labels, outs, art, 0.5)
    assert m["non_finite_values"]["heatmap"] == 1
    assert any("non-finite" in f for f in check_gate(m, "fp32", Gate()))
    with pytest.raises(ValueError, match="heatmap"):
        compare(BINARY, labels, outs, {"logit": outs["logit"]}, 0.5)


def test_gate_from_dict():
    assert Gate.from_dict({}) == Gate()
    g = Gate.from_dict({"int8_max_auc_delta": 0.02, "int8_min_agreement": 0.99})
    assert g.int8_max_auc_delta == 0.02 and g.int8_min_agreement == 0.99
    assert Gate.from_dict(g.to_dict()) == g
    with pytest.raises(ValueError, match="float_max_auc_detla"):
        Gate.from_dict({"float_max_auc_detla": 0.1})
    with pytest.raises(ValueError, match="number"):
        Gate.from_dict({"float_min_agreement": "high"})


def test_gate_failure_message_names_every_artifact():
    err = GateFailure({"onnx int8": ["sensitivity fell from 0.930 to 0.921 (loss 0.009 > "
                                     "allowed 0.000)"],
                       "openvino fp16": ["AUC changed from 0.9500 to 0.9400"],
                       "tflite fp32": []})
    text = str(err)
    assert "onnx int8" in text and "openvino fp16" in text and "tflite fp32" not in text
    assert "0.921" in text and "calibration" in text and "relax" in text
    assert set(err.failures) == {"onnx int8", "openvino fp16"}
    assert isinstance(err, RuntimeError)


def test_roc_data_format():
    labels, outs = _three_class_case(n=30)
    data = roc_data(THREE, labels, outs)
    assert set(data["classes"]) == set(THREE.labels)
    assert len(data["finding"]["targets"]) == len(data["classes"]["benign"]["scores"]) == 30
    assert "classes" not in roc_data(BINARY, *_binary_case(n=10))
    json.dumps(data)
