"""Conversion report: one self-contained HTML page with plots, the gate table and escaping."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from converters.artifacts import ArtifactRecord
from converters.benchmark import speedups
from converters.report import write_report
from converters.spec import ModelSpec
from converters.verify import Gate, check_gate, compare, roc_data, source_metrics


class _Page(HTMLParser):
    """Collects tags, <img> sources, table rows (cell texts) and text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data.strip())


def _artifact(spec, labels, outs, art_outs, label, precision, gate, ms, size):
    metrics = compare(spec, labels, outs, art_outs, 0.5)
    failures = check_gate(metrics, precision, gate)
    return {"label": label, "kind": "export", "format": label.split()[0],
            "precision": precision, "path": f"{label.replace(' ', '.')}.bin",
            "profiles": ["x86-cpu"], "metrics": metrics,
            "gate": {"passed": not failures, "failures": failures},
            "benchmark": {"ms_per_image": ms, "ms_p90": ms * 1.2, "size_bytes": size,
                          "threads": 2, "backend": "onnxruntime"},
            "roc": roc_data(spec, labels, art_outs)}


def _data(spec, labels, outs, name="demo <script>alert(1)</script>"):
    gate = Gate()
    bad = {k: v.copy() for k, v in outs.items()}
    score = bad[spec.score_output]
    score += np.random.default_rng(1).normal(0, 0.8, score.shape).astype(score.dtype)
    return {
        "name": name, "version": "1.0.0", "intended_use": "DEMO — NOT FOR CLINICAL USE",
        "spec": {"labels": list(spec.labels), "activation": spec.activation,
                 "input_shape": list(spec.input_shape)},
        "source": {"label": "PyTorch source", "metrics": source_metrics(spec, labels, outs, 0.5),
                   "roc": roc_data(spec, labels, outs)},
        "artifacts": [
            _artifact(spec, labels, outs, outs, "onnx fp32", "fp32", gate, 3.2, 2_400_000),
            _artifact(spec, labels, outs, bad, "onnx int8", "int8", gate, 1.1, 650_000)],
        "steps": [{"name": "prune", "summary": {"macs_before": 1e8, "macs_after": 6e7,
                                                "note": "<b>channels</b>"}}],
        "gate": gate.to_dict(), "created": "2025-01-01T00:00:00Z"}


def _parse(path: Path) -> tuple[str, _Page]:
    html = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)
    page.close()
    return html, page


def test_binary_report(tmp_path):
    spec = ModelSpec(input_shape=(1, 1, 16, 16), output_names=("logit",), score_output="logit")
    rng = np.random.default_rng(0)
    labels = (rng.random(200) < 0.5).astype(np.int64)
    outs = {"logit": rng.normal(labels * 2.0 - 1.0, 1.0)[:, None].astype(np.float32)}
    data = _data(spec, labels, outs)
    assert data["artifacts"][1]["gate"]["failures"]  # the noisy int8 artifact fails

    path = write_report(tmp_path / "pkg" / "report.html", data)
    assert path == tmp_path / "pkg" / "report.html"
    html, page = _parse(path)
    assert page.tags[0] == "html" and "body" in page.tags
    # ROC, latency and size plots, all inline
    assert len([s for s in page.images if s.startswith("data:image/png;base64,")]) == 3
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;channels&lt;/b&gt;" in html
    assert "NOT FOR CLINICAL USE" in "".join(page.text)
    # no external resources
    assert "http://" not in html and "https://" not in html and "<link" not in html

    results = {r[0]: r for r in page.rows if r and r[0] in ("onnx fp32", "onnx int8")}
    assert results["onnx fp32"][-1].startswith("PASS")
    fail_cell = results["onnx int8"][-1]
    assert fail_cell.startswith("FAIL")
    assert data["artifacts"][1]["gate"]["failures"][0].split("(")[0].strip() in fail_cell
    limits = {r[0]: r[1] for r in page.rows if len(r) in (2, 3)}
    assert limits["float_min_agreement"] == "0.999" and limits["int8_min_agreement"] == "0.95"
    assert limits["int8_max_specificity_loss"] == "0.1"
    assert {"macs_before", "macs_after"} <= set(limits)


@pytest.mark.slow
def test_multiclass_report_has_per_class_table(tmp_path):
    spec = ModelSpec(input_shape=(1, 3, 16, 16), output_names=("logits",),
                     score_output="logits", activation="softmax",
                     labels=("normal", "benign", "malignant"), negative_label="normal")
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 150)
    outs = {"logits": (rng.normal(0, 1, (150, 3)) + 1.5 * np.eye(3)[labels]).astype(np.float32)}
    path = write_report(tmp_path / "report.html", _data(spec, labels, outs, name="three"))
    html, page = _parse(path)
    assert "Per class" in html and "macro AUC" in html
    header = next(r for r in page.rows if r and r[0] == "model" and "benign" in r)
    assert header[1:] == ["normal", "benign", "malignant", "macro AUC"]
    assert len(page.images) == 3


def test_report_without_artifacts_or_benchmarks(tmp_path):
    spec = ModelSpec(input_shape=(1, 1, 8, 8), output_names=("logit",), score_output="logit")
    labels = np.array([0, 1, 0, 1])
    outs = {"logit": np.array([[-1.0], [1.0], [0.2], [0.4]])}
    data = {"name": "bare", "source": {"metrics": source_metrics(spec, labels, outs, 0.5),
                                       "roc": {"fpr": [0, 0.5, 1], "tpr": [0, 1, 1]}}}
    html, page = _parse(write_report(tmp_path / "r.html", data))
    assert "PyTorch source" in html and len(page.images) == 1  # ROC only


def test_accepted_weakness_heatmap_and_validated_range_are_shown(tmp_path):
    spec = ModelSpec(input_shape=(1, 1, 16, 16), output_names=("logit",), score_output="logit")
    rng = np.random.default_rng(0)
    labels = (rng.random(100) < 0.5).astype(np.int64)
    outs = {"logit": rng.normal(labels * 2.0 - 1.0, 1.0)[:, None].astype(np.float32)}
    data = _data(spec, labels, outs, name="weak")
    data.update(
        threshold_rule="validation: the highest threshold at which the source model's "
                       "sensitivity is at least 0.95",
        floors={"auc": 0.8, "sensitivity": 0.9},
        weakness=[{"figure": "validation AUC", "model": "PyTorch source", "value": 0.61,
                   "floor": 0.8, "accepted_by": "the operator (--accept-weak-model)"}],
        heads=[{"kind": "classification", "output": "logit", "activation": "sigmoid",
                "labels": ["finding"]}, {"kind": "heatmap", "output": "cam",
                                         "activation": "none"}],
        heatmap={"added": True, "method": "class-activation map", "feature_layer": "layer4",
                 "linear_layer": "fc", "map": [1, 4, 4],
                 "grad_cam": {"reference": "captum LayerGradCam", "images": 12,
                              "min_correlation_required": 0.99,
                              "correlation": {"onnx-fp32": {"maps": 12, "flat": 0,
                                                            "min": 0.99991, "median": 1.0}}}},
        validated_range={"fitted": True, "output": "features", "dimensions": 6,
                         "fit_rows": 40, "held_out_rows": 80, "threshold": 20.5,
                         "held_out_flagged": 0.0125,
                         "artifacts_flagged": {"onnx-fp32": 0.0125, "onnx-int8": 0.025}})
    html, page = _parse(write_report(tmp_path / "r.html", data))
    text = " ".join(" ".join(page.text).split())
    # the accepted weakness comes first, above the intended-use banner
    assert html.index("Below the floor, accepted by the operator") < html.index(
        "NOT FOR CLINICAL USE")
    assert "validation AUC of PyTorch source: 0.610 — below the floor 0.800" in text
    assert "sensitivity is at least 0.95" in text
    correlation = next(r for r in page.rows if r and r[0] == "onnx-fp32" and len(r) == 5)
    assert correlation[3] == "0.9999"
    assert "of which 1.25 % are flagged outside the range" in text
    flagged = {r[0]: r[1] for r in page.rows if len(r) == 2 and r[0].startswith("onnx-")}
    assert flagged == {"onnx-fp32": "1.25", "onnx-int8": "2.50"}
    heads = [r[:2] for r in page.rows if r and r[0] in ("classification", "heatmap")]
    assert heads == [["classification", "logit"], ["heatmap", "cam"]]


def test_no_heatmap_and_no_range_say_why(tmp_path):
    spec = ModelSpec(input_shape=(1, 1, 8, 8), output_names=("logit",), score_output="logit")
    labels = np.array([0, 1, 0, 1])
    outs = {"logit": np.array([[-1.0], [1.0], [0.2], [0.4]])}
    data = {"name": "plain", "source": {"metrics": source_metrics(spec, labels, outs, 0.5)},
            "heatmap": {"added": False, "reason": "no heatmap: the model has no linear layer"},
            "validated_range": {"fitted": False, "reason": "no validated range: too few"}}
    html, page = _parse(write_report(tmp_path / "r.html", data))
    text = " ".join(page.text)
    assert "no heatmap: the model has no linear layer; nothing was added" in text
    assert "no validated range: too few. The box has no guard" in text
    assert "Below the floor" not in html


def _record(kind: str, fmt: str, precision: str) -> ArtifactRecord:
    return ArtifactRecord(kind=kind, format=fmt, precision=precision, path=f"{kind}.bin",
                          files=[f"{kind}.bin"], profiles=["onnx"], notes={})


def test_each_artifact_s_speed_is_against_the_fp32_of_its_own_runtime():
    records = [_record("onnx-fp32", "onnx", "fp32"), _record("onnx-int8", "onnx", "int8"),
               _record("onnx-int8-trt", "onnx", "int8"),
               _record("openvino-fp32", "openvino-ir", "fp32"),
               _record("openvino-int8", "openvino-ir", "int8"),
               _record("tflite-int8", "tflite", "int8")]  # no FP32 TFLite: not compared
    ms = {"onnx-fp32": 1.42, "onnx-int8": 1.33, "onnx-int8-trt": 2.19, "openvino-fp32": 1.22,
          "openvino-int8": 0.77, "tflite-int8": 1.99}
    found = speedups(records, {k: {"ms_per_image": v} for k, v in ms.items()})
    assert set(found) == {"onnx-int8", "onnx-int8-trt", "openvino-int8"}
    assert found["openvino-int8"] == {"speedup_vs_fp32": 1.584,
                                      "fp32_source": "openvino-fp32.bin",
                                      "slower_than_fp32": False}
    assert found["onnx-int8-trt"]["slower_than_fp32"] is True
    assert found["onnx-int8-trt"]["speedup_vs_fp32"] == 0.648
    assert found["onnx-int8"]["slower_than_fp32"] is False  # 1.07 times as fast
    # within the margin it is not marked slower
    close = speedups(records[:2], {"onnx-fp32": {"ms_per_image": 1.0},
                                   "onnx-int8": {"ms_per_image": 1.04}})
    assert close["onnx-int8"]["slower_than_fp32"] is False


@pytest.mark.slow
def test_the_report_marks_an_int8_artifact_slower_than_its_fp32_and_says_why(tmp_path):
    spec = ModelSpec(input_shape=(1, 1, 16, 16), output_names=("logit",), score_output="logit")
    rng = np.random.default_rng(0)
    labels = (rng.random(200) < 0.5).astype(np.int64)
    outs = {"logit": rng.normal(labels * 2.0 - 1.0, 1.0)[:, None].astype(np.float32)}
    data = _data(spec, labels, outs)
    data["artifacts"][0]["benchmark"]["cpu"] = "Test CPU @ 2.0GHz"
    data["artifacts"][1]["benchmark"].update(
        {"speedup_vs_fp32": 0.62, "slower_than_fp32": True, "fp32_source": "onnx.fp32.bin"})
    html, page = _parse(write_report(tmp_path / "report.html", data))
    head = next(r for r in page.rows if "speed vs its FP32" in r)
    rows = {r[0]: r for r in page.rows if len(r) == len(head) and r[0].startswith("onnx")}
    column = head.index("speed vs its FP32")
    assert rows["onnx int8"][column] == "0.62× slower" and rows["onnx fp32"][column] == "—"
    text = " ".join(page.text)
    assert "Measured on Test CPU @ 2.0GHz" in text
    assert "Slower than its FP32 source on this CPU: onnx int8 (onnx.int8.bin)" in text
    assert "runs the fastest" in text
    data["artifacts"][1]["benchmark"].update({"speedup_vs_fp32": 2.9, "slower_than_fp32": False})
    html, page = _parse(write_report(tmp_path / "report.html", data))
    assert "2.90×" in html and "Slower than its FP32" not in html
