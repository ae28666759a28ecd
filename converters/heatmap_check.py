"""Does a heatmap's hot spot lie on the lesion? The on-lesion check of a package's heatmap.

For every detected lesion (a box the appliance shows that matches a truth lesion, IoU
>= 0.3) the heatmap is taken as the viewer and the report draw it (the model's
map resampled over the source image, then upsampled bilinearly to the picture:
``engine.imaging.annotate.shown_heatmap``) and its hottest point near the
box is found: within the box grown by its own width and height on each side
(at least ``NEAR_PX`` pixels), among the points nearer this box's centre than
any other shown box's. The lesion counts as *inside* when that point lies in its
box and is drawn at all (at or above the overlay's floor). The share inside,
over all and per modality, is what a heatmap head declares as ``on_lesion``
(``clinibox_common/contracts/heads.py``); the box shows a heatmap beside boxes only
when it reaches ``ON_LESION_TARGET``.

Used by the demo build (``demo/train.py``: which map to declare, its
figure), ``bench/heatmap_on_lesion.py`` and the model card.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from clinibox_common.contracts.heads import ON_LESION_MIN_LESIONS, ON_LESION_TARGET, parse_heads
from engine.imaging.annotate import HEATMAP_FLOOR, shown_heatmap
from engine.imaging.preprocess import Transform
from engine.inference.heads import HeadsDecoder
from engine.inference.postprocess import Box, iou

#: a truth lesion is detected by a shown box overlapping it this much (the card's recall)
MATCH_IOU = 0.3
#: the least margin (source pixels) around a box in which its hot spot is looked for
NEAR_PX = 16.0


def hottest_near(heat: np.ndarray, box: Box, boxes: Sequence[Box]) -> tuple[float, float, float]:
    """(x, y, value) of the hottest point of ``heat`` (the shown heatmap, one value per
    source pixel) near ``box``, pixel centres in source pixels; ``boxes`` are every box
    shown on the image (the point is nearer ``box``'s centre than theirs)."""
    rows, columns = heat.shape
    grow_x = max(box.x1 - box.x0, NEAR_PX)
    grow_y = max(box.y1 - box.y0, NEAR_PX)
    x0, x1 = int(max(0.0, box.x0 - grow_x)), int(min(columns, np.ceil(box.x1 + grow_x)))
    y0, y1 = int(max(0.0, box.y0 - grow_y)), int(min(rows, np.ceil(box.y1 + grow_y)))
    window = heat[y0:y1, x0:x1].copy()
    ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
    mine = _distance(box, xs, ys)
    for other in boxes:
        if other is not box:
            window[_distance(other, xs, ys) < mine] = -1.0
    y, x = np.unravel_index(int(np.argmax(window)), window.shape)
    return float(x + x0 + 0.5), float(y + y0 + 0.5), float(window[y, x])


def _distance(box: Box, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return np.hypot(xs - (box.x0 + box.x1) / 2, ys - (box.y0 + box.y1) / 2)


def peak_inside(heat: np.ndarray, box: Box, boxes: Sequence[Box],
                floor: float = HEATMAP_FLOOR) -> bool:
    """Whether the hot spot near ``box`` is drawn (at least ``floor``) and inside it."""
    return bool(hot_spot(heat, box, boxes, floor)["inside"])


def detected(boxes: Sequence[Box], truths: Sequence[tuple[float, float, float, float]]
             ) -> list[Box]:
    """The shown boxes that detect a truth lesion (greedy by IoU >= ``MATCH_IOU``)."""
    pairs = sorted(((iou(b, Box(*t, 1.0, "")), bi, ti) for bi, b in enumerate(boxes)
                    for ti, t in enumerate(truths)), key=lambda p: p[0], reverse=True)
    boxes_taken: set[int] = set()
    truths_taken: set[int] = set()
    for overlap, bi, ti in pairs:
        if overlap >= MATCH_IOU and bi not in boxes_taken and ti not in truths_taken:
            boxes_taken.add(bi)
            truths_taken.add(ti)
    return [b for bi, b in enumerate(boxes) if bi in boxes_taken]


def image_rows(heatmap: np.ndarray | None, boxes: Sequence[Box],
               truths: Sequence[tuple[float, float, float, float]], size: tuple[int, int],
               modality: str) -> list[dict[str, Any]]:
    """One row per detected lesion of an image of ``size`` (rows, columns): its modality
    and whether the heatmap's hot spot near it lies inside its box (no heatmap: none)."""
    found = detected(boxes, truths)
    if not found:
        return []
    if heatmap is None:
        return [{"modality": modality, "inside": False, "shown": False} for _ in found]
    heat = shown_heatmap(heatmap, size[1], size[0])
    return [{"modality": modality, **hot_spot(heat, box, boxes)} for box in found]


def hot_spot(heat: np.ndarray, box: Box, boxes: Sequence[Box],
             floor: float = HEATMAP_FLOOR) -> dict[str, Any]:
    """Whether the hot spot near ``box`` is drawn and inside it (as :func:`peak_inside`),
    and where it lies from the box's centre in box widths (``dx``, right) and heights
    (``dy``, down)."""
    x, y, value = hottest_near(heat, box, boxes)
    inside = value >= floor and box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1
    return {"inside": bool(inside), "shown": True,
            "dx": (x - (box.x0 + box.x1) / 2) / max(box.x1 - box.x0, 1e-6),
            "dy": (y - (box.y0 + box.y1) / 2) / max(box.y1 - box.y0, 1e-6)}


def figures(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The share of detected lesions whose hot spot lies inside their box, with the counts,
    over all and per modality, and whether it reaches the target."""
    def counts(part: Sequence[dict[str, Any]]) -> dict[str, Any]:
        inside = sum(1 for r in part if r["inside"])
        drawn = [r for r in part if r["shown"]]
        offset = ({"dx": round(float(np.median([r["dx"] for r in drawn])), 2),
                   "dy": round(float(np.median([r["dy"] for r in drawn])), 2)}
                  if drawn else None)
        return {"lesions": len(part), "inside": inside,
                "share": round(inside / len(part), 4) if part else None,
                "median_hot_spot_from_centre_in_box_sizes": offset}

    modalities = sorted({r["modality"] for r in rows})
    by_modality = {m: counts([r for r in rows if r["modality"] == m]) for m in modalities}
    overall = counts(rows)
    shares = [overall["share"], *(c["share"] for c in by_modality.values())]
    return {**overall, "target": ON_LESION_TARGET, "by_modality": by_modality,
            "passed": overall["lesions"] >= ON_LESION_MIN_LESIONS
            and all(s is not None and s >= ON_LESION_TARGET for s in shares)}


def declaration(measured: dict[str, Any], measured_on: str) -> dict[str, Any]:
    """A heatmap head's ``on_lesion`` from :func:`figures`."""
    return {"lesions": measured["lesions"], "inside": measured["inside"],
            "share": measured["share"], "target": ON_LESION_TARGET,
            "by_modality": {m: {k: c[k] for k in ("lesions", "inside", "share")}
                            for m, c in measured["by_modality"].items()},
            "measured_on": measured_on}


def candidate_heads(heads: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The heads with each map that could be shown as the heatmap, by output name: the
    declared heatmap head's, and the segmentation's lesion probability (the map the
    lesions' outlines come from)."""
    rest = [dict(h) for h in heads if h["kind"] != "heatmap"]
    out: dict[str, list[dict[str, Any]]] = {}
    for head in heads:
        if head["kind"] == "heatmap":
            out[head["output"]] = [*rest, {k: v for k, v in head.items() if k != "on_lesion"}]
        elif head["kind"] == "segmentation":
            out.setdefault(head["output"], [*rest, {
                "kind": "heatmap", "output": head["output"],
                "activation": head.get("activation", "sigmoid")}])
    return out


def with_heatmap(heads: Sequence[dict[str, Any]], output: str,
                 on_lesion: dict[str, Any]) -> list[dict[str, Any]]:
    """``heads`` whose heatmap head shows ``output`` (a candidate of
    :func:`candidate_heads`) and declares its measurement."""
    chosen = candidate_heads(heads)[output]
    return [h if h["kind"] != "heatmap" else {**h, "on_lesion": on_lesion} for h in chosen]


def decoder(heads: Sequence[dict[str, Any]], params: dict[str, Any],
            thresholds: dict[str, float]) -> HeadsDecoder:
    """The box's decoder of ``heads``."""
    return HeadsDecoder(parse_heads(list(heads)), params,
                        {k: float(v) for k, v in thresholds.items()})


def split_rows(outs: dict[str, np.ndarray], split: Any,
               candidates: dict[str, Sequence[dict[str, Any]]], params: dict[str, Any],
               thresholds: dict[str, float],
               refine: Callable[[int, list[Box]], list[Box]] | None = None
               ) -> dict[str, list[dict[str, Any]]]:
    """:func:`image_rows` of every lesion phantom of a demo split (``demo_model.Split``: its
    ``transforms``, ``source_boxes`` and ``kinds``) for each candidate's heads (by name),
    from the model's batched outputs ``outs``, decoded as the box does; ``refine(i, boxes)``
    is the second stage. The boxes are the same whichever map is shown: decoded once."""
    decoders = {name: decoder(heads, params, thresholds) for name, heads in candidates.items()}
    first = next(iter(decoders.values()))
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in decoders}
    for i, transform in enumerate(split.transforms):
        if not split.source_boxes[i]:
            continue
        one = {k: v[i: i + 1] for k, v in outs.items()}
        boxes = first.decode(one, transform, display=False).boxes
        if refine is not None and boxes:
            boxes = refine(i, boxes)
        modality = "CT" if split.kinds[i] == "ct" else "US"
        for name, candidate in decoders.items():
            rows[name] += image_rows(candidate.unchecked_heatmap(one, transform), boxes,
                                     split.source_boxes[i], _size(transform), modality)
    return rows


def _size(transform: Transform) -> tuple[int, int]:
    return transform.source_height, transform.source_width


#: (the model's batched outputs, its demo split, the second stage as ``refine(i, boxes)``)
Measured = tuple[dict[str, np.ndarray], Any, Callable[[int, list[Box]], list[Box]] | None]


def choose_heatmap(heads: Sequence[dict[str, Any]], params: dict[str, Any],
                   thresholds: dict[str, float], selection: Measured, held_out: Measured,
                   measured_on: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The heads to declare, their heatmap head measured, and what was measured.

    Every candidate map (:func:`candidate_heads`) is measured on the
    threshold-selection phantoms (``selection``); the declared one is kept when it
    passes, else the passing candidate with the highest share, else the declared one
    (whose failed measurement then keeps the box from showing any). The chosen map is
    measured again on the held-out phantoms, and that is what its ``on_lesion`` says.
    """
    declared = next((h["output"] for h in heads if h["kind"] == "heatmap"), None)
    candidates = candidate_heads(heads)
    if declared is None or not candidates:
        return [dict(h) for h in heads], {}
    chosen_on = {name: figures(rows) for name, rows in split_rows(
        selection[0], selection[1], candidates, params, thresholds, selection[2]).items()}
    passing = sorted((f["share"], name) for name, f in chosen_on.items() if f["passed"])
    chosen = declared if chosen_on[declared]["passed"] else (
        passing[-1][1] if passing else declared)
    final = figures(split_rows(held_out[0], held_out[1], {chosen: candidates[chosen]},
                               params, thresholds, held_out[2])[chosen])
    report = {"selection": chosen_on, "declared_before": declared, "chosen": chosen,
              "held_out": final}
    return with_heatmap(heads, chosen, declaration(final, measured_on)), report
