"""Detectors that output candidate boxes: their image-level score and their final boxes checked.

A detector declared with a candidate-list detection head (``layout`` in
``contracts/box_lists.py``) exports its candidates before non-maximum
suppression; the box suppresses them itself. For the converter:

* :class:`converters.image_score.BoxScore` adds ``finding_logit`` [N, 1], the logit of the most
  probable lesion candidate's score (what the box takes as the finding
  probability), so the operating threshold, AUC and golden cases work as for
  any model;
* :func:`compare_boxes` runs the box's own decoding and class-aware NMS
  (``inference/box_lists.py``) on the PyTorch model's outputs and on an
  artifact's, image by image, and matches their final boxes by IoU: the
  per-lesion sensitivity (the share of the source's boxes the artifact finds
  again, same class, IoU at least ``MATCH_IOU``) and the mean and least IoU of
  the matched boxes, at the operating point (the box score threshold);
* :func:`box_gate_failures` holds them to the gate's box floors
  (``docs/model-makers/floors.md``).
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from clinibox_common.contracts.box_lists import BOX_LIST_LAYOUTS, DEFAULTS, is_box_list
from clinibox_common.contracts.heads import Head, parse_heads
from engine.inference.box_lists import final_boxes, pairwise_iou

#: the IoU at which an artifact's box is the same lesion as the source's
MATCH_IOU = 0.5


def box_list_head(heads: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The declared candidate-list detection head, or None."""
    return next((h for h in heads if h.get("kind") == "detection" and is_box_list(h)), None)


def head_outputs(head: dict[str, Any]) -> tuple[str, ...]:
    """The model outputs the head reads, in the order a model returns them."""
    return tuple(str(head[key]) for key in BOX_LIST_LAYOUTS[head["layout"]])


def _match(ref: tuple[np.ndarray, ...], got: tuple[np.ndarray, ...]) -> list[float]:
    """IoU of each source box matched to an artifact box (same class, greedy by IoU)."""
    ref_boxes, _, ref_classes = ref
    got_boxes, _, got_classes = got
    if not len(ref_boxes) or not len(got_boxes):
        return []
    overlap = pairwise_iou(ref_boxes, got_boxes)
    overlap[ref_classes[:, None] != got_classes[None, :]] = 0.0
    matched = []
    while overlap.size and overlap.max() >= MATCH_IOU:
        i, j = np.unravel_index(int(np.argmax(overlap)), overlap.shape)
        matched.append(float(overlap[i, j]))
        overlap[i, :], overlap[:, j] = -1.0, -1.0
    return matched


def compare_boxes(head: dict[str, Any], input_size: tuple[float, float],
                  source: dict[str, np.ndarray], artifact: dict[str, np.ndarray],
                  score_threshold: float | None = None) -> dict[str, Any]:
    """The artifact's final boxes against the source's on every image (rows of the stacked
    outputs), after the box's own NMS: lesions, matched, per-lesion sensitivity, mean and
    least IoU of the matched, extra boxes; JSON-ready."""
    parsed: Head = parse_heads([head])[0]
    names = head_outputs(head)
    count = len(source[names[0]])
    lesions = extra = 0
    ious: list[float] = []
    for i in range(count):
        ref = final_boxes({n: source[n][i:i + 1] for n in names}, parsed, input_size,
                          score_threshold)
        got = final_boxes({n: artifact[n][i:i + 1] for n in names}, parsed, input_size,
                          score_threshold)
        matched = _match(ref, got)
        lesions += len(ref[0])
        extra += len(got[0]) - len(matched)
        ious += matched
    threshold = head.get("score_threshold", DEFAULTS["score_threshold"]) \
        if score_threshold is None else score_threshold
    return {"images": count, "lesions": lesions, "matched": len(ious), "extra": extra,
            "sensitivity": round(len(ious) / lesions, 6) if lesions else None,
            "mean_iou": round(float(np.mean(ious)), 6) if ious else None,
            "min_iou": round(float(np.min(ious)), 6) if ious else None,
            "match_iou": MATCH_IOU, "score_threshold": float(threshold)}


def box_gate_failures(boxes: dict[str, Any] | None, min_sensitivity: float | None,
                      min_iou: float | None) -> list[str]:
    """Why an artifact's final boxes fail the gate's box floors ([]: they pass, or the
    source found no lesion to compare)."""
    if not boxes or not boxes.get("lesions"):
        return []
    out = []
    sensitivity, mean_iou = boxes["sensitivity"], boxes["mean_iou"]
    if min_sensitivity is not None and sensitivity < min_sensitivity - 1e-12:
        out.append(f"per-lesion sensitivity against the source's boxes {sensitivity:.3f} "
                   f"({boxes['matched']} of {boxes['lesions']} lesions found again at IoU >= "
                   f"{boxes['match_iou']}) is below the required {min_sensitivity:.3f}")
    if min_iou is not None and mean_iou is not None and mean_iou < min_iou - 1e-12:
        out.append(f"mean box IoU with the source's boxes {mean_iou:.3f} is below the "
                   f"required {min_iou:.3f}")
    return out


def report_section(artifacts: list[dict[str, Any]]) -> str:
    """The conversion report's table of each artifact's final boxes against the source's
    (HTML; empty when no artifact has box metrics)."""
    rows = [(str(a.get("label", "?")), (a.get("metrics") or {}).get("boxes"))
            for a in artifacts]
    rows = [(label, b) for label, b in rows if b]
    if not rows:
        return ""

    def cell(value: Any, dp: int = 3) -> str:
        return "—" if value is None else f"{value:.{dp}f}" if isinstance(value, float) \
            else escape(str(value))

    body = "".join(
        f"<tr><td>{escape(label)}</td><td>{cell(b['lesions'])}</td><td>{cell(b['matched'])}"
        f"</td><td>{cell(b['sensitivity'])}</td><td>{cell(b['mean_iou'])}</td>"
        f"<td>{cell(b['min_iou'])}</td><td>{cell(b['extra'])}</td></tr>" for label, b in rows)
    first = rows[0][1]
    return ("<h2>Lesion boxes</h2><p>Each artifact's final boxes (after the box's own "
            "class-aware NMS at box score threshold "
            f"{cell(float(first['score_threshold']), 2)}) against the PyTorch source's on the "
            f"validation images, matched by class and IoU (at least {first['match_iou']}): "
            "per-lesion sensitivity is the share of the source's boxes found again; IoU is "
            "over the matched boxes; extra boxes are the artifact's that match none.</p>"
            "<table><tr><th>artifact</th><th>source's lesions</th><th>found again</th>"
            "<th>per-lesion sensitivity</th><th>mean IoU</th><th>least IoU</th>"
            f"<th>extra boxes</th></tr>{body}</table>")


#: ONNX operators that carry the model's weights: a detector's decode is what follows them
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def decode_nodes(onnx_path: Path, outputs: list[str]) -> list[str]:
    """The ONNX nodes between a detector's last weighted layers and its ``outputs``: its
    decode (sigmoids, exponentials, grid offsets, the concatenation of pixel coordinates
    with probabilities), which INT8 keeps in float. One scale for a tensor that holds both
    96-pixel coordinates and 0 … 1 scores leaves the scores steps of 0.4."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    producer = {tensor: node for node in graph.node for tensor in node.output}
    names: list[str] = []
    stack = list(outputs)
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in names or node.op_type in WEIGHTED_OPS:
            continue
        names.append(node.name)
        stack.extend(node.input)
    return names
