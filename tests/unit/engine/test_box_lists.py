"""A detection head of candidate boxes (YOLO-style rows, torchvision-style boxes + scores):
decoded and suppressed class by class in numpy, mapped to source pixels as every head is."""

from __future__ import annotations

import numpy as np
import pytest

from clinibox_common.contracts.heads import HeadsError, parse_heads
from engine.imaging.preprocess import letterbox
from engine.inference.box_lists import class_aware_nms, final_boxes, pairwise_iou
from engine.inference.heads import decoder_for
from engine.inference.postprocess import Box, iou, nms


def _brute_force(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, threshold: float,
                 limit: int) -> list[int]:
    """Greedy NMS of each class alone with the box's scalar IoU, merged best first."""
    kept: list[int] = []
    for cls in np.unique(classes):
        members = [i for i in range(len(boxes)) if classes[i] == cls]
        chosen: list[int] = []
        for i in sorted(members, key=lambda i: -scores[i]):
            box = Box(*boxes[i], float(scores[i]), "x")
            if all(iou(box, Box(*boxes[j], 0.0, "x")) <= threshold for j in chosen):
                chosen.append(i)
        kept += chosen
    return sorted(kept, key=lambda i: -scores[i])[:limit]


@pytest.mark.parametrize("seed", range(8))
def test_class_aware_nms_keeps_what_a_brute_force_reference_keeps(seed):
    rng = np.random.default_rng(seed)
    n = 300
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(5, 60, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.permutation(n) / n  # distinct scores: one greedy order
    classes = rng.integers(0, 3, n)
    got = class_aware_nms(boxes, scores, classes, 0.45, 40)
    assert got.tolist() == _brute_force(boxes, scores, classes, 0.45, 40)
    # one class: the box's own scalar NMS
    one = class_aware_nms(boxes, scores, np.zeros(n, int), 0.3, 10)
    boxed = [Box(*b, float(s), str(i)) for i, (b, s) in enumerate(zip(boxes, scores,
                                                                       strict=True))]
    assert [int(b.label) for b in nms(boxed, 0.3, 10)] == one.tolist()


def test_pairwise_iou_matches_the_scalar_one():
    rng = np.random.default_rng(3)
    a = np.sort(rng.uniform(0, 50, (6, 2, 2)), axis=1).transpose(0, 2, 1).reshape(6, 4)
    a = a[:, [0, 2, 1, 3]]
    matrix = pairwise_iou(a, a[::-1])
    for i in range(6):
        for j in range(6):
            assert matrix[i, j] == pytest.approx(iou(Box(*a[i], 0, ""), Box(*a[5 - j], 0, "")))


YOLO = {"kind": "detection", "layout": "yolo", "output": "candidates", "box_format": "cxcywh",
        "objectness": True, "labels": ["lesion"], "iou_threshold": 0.5,
        "score_threshold": 0.3, "max_detections": 5}


def _manifest(head: dict, size=(256, 256), thresholds=None) -> dict:
    return {"heads": [head], "postprocessing": {"name": "heads",
                                                "params": {"input_size": list(size)}},
            "thresholds": thresholds or {"finding": 0.5}}


def test_yolo_rows_become_lesions_in_source_pixels():
    rows = np.array([[100, 80, 40, 20, 0.9, 0.9],    # a lesion: 0.81
                     [102, 81, 40, 22, 0.9, 0.8],    # the same lesion, less sure: suppressed
                     [30, 200, 10, 10, 0.5, 0.5],    # 0.25: below the score threshold
                     [200, 60, 30, 30, 0.8, 0.5]],   # 0.4: a second lesion
                    np.float32)
    # a 300 × 600 source letterboxed into 256 × 256: scale 256/600, padded top and bottom
    transform = letterbox(np.zeros((300, 600), np.float32), 256, 256)[1]
    findings = decoder_for(_manifest(YOLO)).decode({"candidates": rows[None]}, transform)
    assert findings.probability == pytest.approx(0.81, abs=1e-6)
    assert [round(b.score, 3) for b in findings.boxes] == [0.81, 0.4]
    first = findings.boxes[0]
    assert first.label == "lesion" and not first.class_probabilities
    s, oy = transform.scale, transform.offset_y
    assert (first.x0, first.y0, first.x1, first.y1) == pytest.approx(
        (80 / s, (70 - oy) / s, 120 / s, (90 - oy) / s))
    # transposed ([1, 4+1+K, N], as YOLOv8-style heads give them) and corners: the same
    head = {**YOLO, "transposed": True, "box_format": "xyxy"}
    corners = rows.copy()
    corners[:, :2], corners[:, 2:4] = rows[:, :2] - rows[:, 2:4] / 2, rows[:, :2] + rows[:, 2:4] / 2
    again = decoder_for(_manifest(head)).decode({"candidates": corners.T[None]}, transform)
    assert again.boxes == findings.boxes
    # the manifest's box threshold wins over the head's
    fewer = decoder_for(_manifest(YOLO, thresholds={"finding": 0.5, "box": 0.5})).decode(
        {"candidates": rows[None]}, transform)
    assert [round(b.score, 3) for b in fewer.boxes] == [0.81]


def test_torchvision_style_boxes_and_scores_never_make_a_background_lesion():
    head = {"kind": "detection", "layout": "boxes_scores", "boxes_output": "boxes",
            "scores_output": "scores", "box_format": "xyxy", "coordinates": "normalized",
            "activation": "softmax", "labels": ["background", "cyst", "nodule"],
            "background": ["background"], "iou_threshold": 0.5, "score_threshold": 0.5}
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.11, 0.1, 0.3, 0.31], [0.5, 0.5, 0.9, 0.8],
                      [0.0, 0.0, 1.0, 1.0]], np.float32)
    logits = np.log(np.array([[0.1, 0.8, 0.1],     # cyst
                              [0.1, 0.1, 0.8],     # a nodule on the cyst: another class, kept
                              [0.2, 0.1, 0.7],     # nodule
                              [0.98, 0.01, 0.01]],  # background everywhere: never a lesion
                             np.float32))
    transform = letterbox(np.zeros((128, 128), np.float32), 128, 128)[1]
    findings = decoder_for(_manifest(head, (128, 128))).decode(
        {"boxes": boxes[None], "scores": logits[None]}, transform)
    assert [b.label for b in findings.boxes] == ["cyst", "nodule", "nodule"]
    assert findings.boxes[0].class_probabilities == pytest.approx({"cyst": 0.8, "nodule": 0.1})
    assert (findings.boxes[2].x0, findings.boxes[2].y1) == pytest.approx((64.0, 102.4))
    assert findings.probability == pytest.approx(0.8)
    parsed = parse_heads([head])[0]
    corners, _, classes = final_boxes({"boxes": boxes[None], "scores": logits[None]}, parsed,
                                      (128, 128))
    assert classes.tolist() == [1, 2, 2] and corners.shape == (3, 4)


def test_a_misdeclared_box_list_head_is_refused_with_the_reason():
    with pytest.raises(HeadsError, match="layout 'ssd'"):
        parse_heads([{**YOLO, "layout": "ssd"}])
    with pytest.raises(HeadsError, match="background"):
        parse_heads([{**YOLO, "background": ["normal"]}])
    with pytest.raises(HeadsError, match="not background"):
        parse_heads([{**YOLO, "background": ["lesion"]}])
    with pytest.raises(HeadsError, match="needs boxes_output"):
        parse_heads([{**YOLO, "layout": "boxes_scores"}])
    with pytest.raises(HeadsError, match="iou_threshold"):
        parse_heads([{**YOLO, "iou_threshold": 1.5}])
    with pytest.raises(HeadsError, match="from 1 to 100"):  # bounds the box's NMS passes
        parse_heads([{**YOLO, "max_detections": 101}])
    parse_heads([{**YOLO, "max_detections": 100}])
    decoder = decoder_for(_manifest(YOLO))
    with pytest.raises(ValueError, match="4 box \\+ 1 objectness \\+ 1 class"):
        decoder.decode({"candidates": np.zeros((1, 10, 7), np.float32)},
                       letterbox(np.zeros((8, 8), np.float32), 256, 256)[1])
