"""The converter's side of candidate-box detectors: the image-level score it adds is the box's
finding probability, and an artifact's final boxes are matched to the source's by IoU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinibox_common.contracts.heads import parse_heads
from converters.box_lists import box_gate_failures, compare_boxes, report_section
from converters.image_score import BoxScore
from converters.verify import Gate, check_gate
from engine.inference.box_lists import top_score

HEAD = {"kind": "detection", "layout": "yolo", "output": "candidates", "objectness": True,
        "activation": "sigmoid", "labels": ["background", "lesion", "cyst"],
        "background": ["background"], "iou_threshold": 0.5, "score_threshold": 0.3}


class _Rows(torch.nn.Module):
    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__()
        self.rows = rows

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.rows.expand(len(image), -1, -1)


def test_the_added_score_is_the_box_s_finding_probability():
    torch.manual_seed(0)
    rows = torch.randn(1, 40, 4 + 1 + 3) * 3
    wrapped = BoxScore(_Rows(rows), ("candidates",), HEAD).eval()
    with torch.no_grad():
        out = wrapped(torch.zeros(2, 1, 8, 8))
    assert set(out) == {"candidates", "finding_logit"} and out["finding_logit"].shape == (2, 1)
    box = top_score({"candidates": rows.numpy()}, parse_heads([HEAD])[0], (64, 64))
    assert float(torch.sigmoid(out["finding_logit"][0, 0])) == pytest.approx(box, abs=1e-5)
    # the background column never counts: a certain background alone scores nothing
    rows[:] = torch.tensor([10.0, 10, 20, 20, 9, 9, -9, -9])
    with torch.no_grad():
        logit = wrapped(torch.zeros(1, 1, 8, 8))["finding_logit"]
    assert float(torch.sigmoid(logit)) < 1e-3


def _rows(boxes: list[tuple[float, float, float, float]], score: float = 0.9) -> np.ndarray:
    """[1, N, 4 + 1 + 3] rows (cx, cy, w, h, objectness, class logits): each a 'lesion'."""
    logit = float(np.log(score / (1 - score)))
    return np.array([[[*b, 10.0, -10.0, logit, -10.0] for b in boxes]], np.float32)


def test_final_boxes_are_matched_by_iou_and_a_lost_or_moved_box_is_counted():
    second = np.concatenate([_rows([(30, 40, 8, 8)]), _rows([(70, 20, 6, 6)], score=0.1)], 1)
    source = np.concatenate([_rows([(20, 20, 10, 10), (60, 60, 20, 20)]), second])
    same = compare_boxes(HEAD, (96, 96), {"candidates": source}, {"candidates": source})
    assert (same["lesions"], same["matched"], same["extra"]) == (3, 3, 0)
    assert same["sensitivity"] == 1.0 and same["mean_iou"] == 1.0
    moved = source.copy()
    moved[0, 1, 0] += 2          # 2 px off on a 20 px box: IoU 18/22
    moved[1, 0, 5:] = -10.0      # the second image's lesion lost ...
    moved[1, 1, 6] = 10.0        # ... and a faint candidate called instead
    got = compare_boxes(HEAD, (96, 96), {"candidates": source}, {"candidates": moved})
    assert (got["lesions"], got["matched"], got["extra"]) == (3, 2, 1)
    assert got["sensitivity"] == pytest.approx(2 / 3, abs=1e-6)
    assert got["min_iou"] == pytest.approx(18 / 22, abs=1e-6)
    assert got["mean_iou"] == pytest.approx((1 + 18 / 22) / 2, abs=1e-6)
    failures = box_gate_failures(got, 0.9, 0.95)
    assert len(failures) == 2 and "2 of 3 lesions" in failures[0] and "0.909" in failures[1]
    assert box_gate_failures(got, 0.5, 0.8) == []
    assert "Lesion boxes" in report_section([{"label": "onnx int8", "metrics": {"boxes": got}}])


def test_the_gate_holds_float_and_int8_artifacts_to_their_own_box_floors():
    metrics = {"auc": 0.8, "auc_delta": 0.0, "sensitivity": 1.0, "sensitivity_delta": 0.0,
               "specificity": 0.5, "specificity_delta": 0.0, "decision_agreement": 1.0,
               "non_finite_values": {}, "boxes": {"lesions": 100, "matched": 93, "extra": 0,
                                                  "sensitivity": 0.93, "mean_iou": 0.9,
                                                  "match_iou": 0.5}}
    assert len(check_gate(metrics, "fp32", Gate())) == 2  # below 0.98 and 0.95
    assert check_gate(metrics, "int8", Gate()) == []       # above 0.90 and 0.80
    strict = Gate.from_dict({"int8_min_box_sensitivity": 0.95})
    assert any("per-lesion sensitivity" in f for f in check_gate(metrics, "int8", strict))


def test_a_detector_s_class_names_are_its_head_s_labels_and_its_score_one_logit():
    from converters.config import ConvertConfig, ConvertConfigError
    from converters.spec_probe import spec_from_config

    wrapped = BoxScore(_Rows(torch.zeros(1, 10, 8)), ("candidates",), HEAD).eval()
    config = ConvertConfig(input_shape=(1, 8, 8), outputs=["candidates"],
                           class_names=["background", "lesion", "cyst"])
    spec = spec_from_config(config, wrapped)
    assert spec.score_output == "finding_logit" and spec.activation == "sigmoid"
    assert spec.labels == ("finding",)
    assert spec.output_names == ("candidates", "finding_logit")
    config.class_names = ["lesion", "cyst"]
    with pytest.raises(ConvertConfigError, match="detection head's labels"):
        spec_from_config(config, wrapped)
