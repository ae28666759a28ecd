"""Decode a model's declared heads into findings on the source image.

One decoder for every package: the manifest's ``heads``
(``clinibox_common/contracts/heads.py``) say which outputs are an image-level
or per-lesion classification, a detection, a segmentation and a heatmap.
Packages written before heads were declared name a postprocessor instead
(``centre_heatmap_boxes`` or ``classification``); :func:`manifest_heads` reads
those as the heads they always were, so the box has one path::

    decoder = decoder_for(package.manifest)
    findings = decoder.decode(outputs, transform)

What comes out (``FrameFindings``): the finding probability; lesion boxes in
source pixels, each with its score, its class probabilities and, when the
model segments, its contour and mask area; every image-level class
probability; a heatmap in [0, 1] spanning the source image: the declared
heatmap head's map when its on-lesion check passed, none when it failed, the
map the lesions come from when it was never measured (:func:`heatmap_to_show`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from clinibox_common.contracts.heads import (
    Head,
    head_of,
    on_lesion_failures,
    parse_heads,
    parse_on_lesion,
    segmentation_background,
)
from engine.imaging.preprocess import Transform
from engine.inference.box_lists import box_list_lesions, top_score
from engine.inference.masks import components, lesion_mask, simplify, trace_contour
from engine.inference.postprocess import (
    Box,
    FrameFindings,
    local_peaks,
    nms,
    sigmoid,
    source_heatmap,
)

#: the postprocessors packages named before heads were declared
LEGACY = ("centre_heatmap_boxes", "classification")

log = logging.getLogger(__name__)

#: what :func:`heatmap_to_show` may choose: the declared heatmap head's map, the map the
#: lesions' boxes come from (segmentation, else the detection's centre map), or none
SHOW_DECLARED, SHOW_LESION_MAP, SHOW_NONE = "declared", "lesion map", "none"
#: a softmax segmentation's cell is of a class where that class's probability exceeds every
#: other's by at least this
SOFTMAX_CUT = 1e-6


def manifest_heads(manifest: dict[str, Any]) -> tuple[list[Head], dict[str, Any]]:
    """The heads and the decoder parameters of a manifest (declared, or read from a
    legacy postprocessor name); ValueError names what the box does not know."""
    post = manifest.get("postprocessing", {})
    params = dict(post.get("params", {}))
    if "heads" in manifest:
        return parse_heads(manifest["heads"]), params
    return legacy_heads(post.get("name", ""), params), params


def legacy_heads(name: str, params: dict[str, Any]) -> list[Head]:
    """The heads a legacy postprocessor (``centre_heatmap_boxes``, ``classification``) reads."""
    if name == "centre_heatmap_boxes":
        declared = [{"kind": "detection",
                     "score_output": params.get("logit_output", "lesion_logit"),
                     "heatmap_output": params.get("heatmap_output", "centre_heatmap"),
                     "size_output": params.get("size_output", "box_size"),
                     **{k: params[k] for k in ("label", "max_boxes", "nms_iou", "pool")
                        if k in params}}]
        if params.get("display", "cam") == "cam":
            declared.append({"kind": "heatmap", "output": params.get("cam_output", "cam"),
                             "activation": "sigmoid", "optional": True,
                             **({"on_lesion": params["on_lesion"]} if "on_lesion" in params
                                else {})})
        return parse_heads(declared)
    if name == "classification":  # no output named: the model's only output
        return [Head("classification", {"output": params.get("output") or ""},
                     {"activation": params.get("activation", "sigmoid"),
                      "labels": list(params.get("labels", [])),
                      "negative_label": params.get("negative_label"), "per": "image"})]
    known = ", ".join(("heads", *LEGACY))
    raise ValueError(f"unknown postprocessing {name!r}; this box knows: {known}")


def _batchless(array: np.ndarray) -> np.ndarray:
    a = np.asarray(array, dtype=np.float32)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    return a


def _maps(outputs: dict[str, np.ndarray], name: str, channels: int | None = None) -> np.ndarray:
    """An output as [C, h, w] float32; ValueError when it is missing or misshapen."""
    if name not in outputs:
        raise ValueError(f"model output {name!r} is missing; got {sorted(outputs)}")
    a = _batchless(outputs[name])
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or (channels is not None and a.shape[0] != channels):
        want = f"[1,{channels if channels else 'C'},h,w]"
        raise ValueError(f"output {name!r} has shape {np.shape(outputs[name])}; want {want}")
    return a


def _activate(values: np.ndarray, activation: str, axis: int = 0) -> np.ndarray:
    if activation == "softmax":
        e = np.exp(values - values.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)
    if activation == "sigmoid":
        return sigmoid(values).astype(np.float32)
    return np.asarray(values, dtype=np.float32)


def _labels(head: Head, count: int) -> list[str]:
    labels = [str(x) for x in head.param("labels", [])] or [f"class {i}" for i in range(count)]
    if len(labels) != count:
        raise ValueError(f"the {head.kind} head's output has {count} channels for "
                         f"{len(labels)} labels")
    return labels


def finding_from_classes(classes: dict[str, float], activation: str,
                         negative: str | None) -> float:
    """The finding probability of class probabilities: ``1 - p(negative)`` for a softmax
    with a negative class, else the most probable other class."""
    if activation == "softmax" and negative in classes:
        return 1.0 - classes[negative]
    return max((p for label, p in classes.items() if label != negative), default=0.0)


class HeadsDecoder:
    """A manifest's heads, parameters and thresholds, ready to decode frames."""

    def __init__(self, heads: list[Head], params: dict[str, Any],
                 thresholds: dict[str, float]) -> None:
        self.heads, self.params, self.thresholds = heads, params, thresholds
        self.detection = head_of(heads, "detection")
        self.classification = head_of(heads, "classification")
        self.segmentation = head_of(heads, "segmentation")
        self.heatmap = head_of(heads, "heatmap")
        if not (self.detection or self.classification or self.segmentation):
            raise ValueError("a model needs a detection, classification or segmentation head "
                             "to give a finding")
        #: which map the box shows as the heatmap, and why (:func:`heatmap_to_show`)
        self.heatmap_shown, self.heatmap_reason = heatmap_to_show(heads)

    def _stride(self, grid: tuple[int, int]) -> tuple[float, float, float]:
        """(stride, input height, input width) of a map, from the input size or the params."""
        h, w = grid
        size = self.params.get("input_size")
        if size:
            in_h, in_w = float(size[0]), float(size[1])
            return in_w / w, in_h, in_w
        stride = float(self.params.get("stride", 8))
        return stride, h * stride, w * stride

    def decode(self, outputs: dict[str, np.ndarray], transform: Transform,
               display: bool = True) -> FrameFindings:
        """The findings of one frame from the model's named outputs (``display`` False: no
        heatmap resampled onto the source image, for a second stage's crop)."""
        classes: dict[str, float] = {}
        probability: float | None = None
        head = self.classification
        if head is not None and head.param("per", "image") == "image":
            classes = self._image_classes(outputs, head)
            probability = finding_from_classes(classes, head.param("activation", "sigmoid"),
                                               head.param("negative_label"))
        segmentation = self._segmentation(outputs)
        boxes: list[Box] = []
        if self.detection is not None:
            score_name = self.detection.outputs.get("score_output")
            if self.detection.param("layout"):  # candidate boxes: inference/box_lists.py
                probability, boxes = self._box_list(outputs, transform)
            elif score_name:
                logit = float(np.asarray(outputs[score_name], np.float64).reshape(-1)[0]) \
                    if score_name in outputs else _missing(score_name, outputs)
                probability = float(sigmoid(logit))
            if not self.detection.param("layout"):
                boxes = self._detect(outputs, transform)
        if segmentation is not None:
            boxes = self._outline(outputs, boxes, segmentation, transform)
            if probability is None:
                probability = float(segmentation.max(initial=0.0))
        if head is not None and head.param("per") == "lesion":
            boxes = self._lesion_classes(outputs, head, boxes, segmentation, transform)
        heatmap = self._display(outputs, segmentation, transform) if display else None
        return FrameFindings(float(probability or 0.0), boxes, heatmap, classes)

    # -- heads ---------------------------------------------------------------------------

    def _image_classes(self, outputs: dict[str, np.ndarray], head: Head) -> dict[str, float]:
        name = head.outputs["output"] or (next(iter(outputs)) if len(outputs) == 1 else "")
        if name not in outputs:
            raise ValueError(f"the classification head needs its output among {sorted(outputs)}")
        scores = np.asarray(outputs[name], dtype=np.float64).reshape(-1)
        activation = head.param("activation", "sigmoid")
        probs = _activate(scores, activation)
        return {label: float(p) for label, p in zip(_labels(head, len(probs)), probs,
                                                      strict=True)}

    def _segmentation(self, outputs: dict[str, np.ndarray]) -> np.ndarray | None:
        """The lesion probability map [h, w] (the most probable lesion class per cell)."""
        if self.segmentation is None:
            return None
        maps, labels, background = self._segmentation_maps(outputs)
        keep = [i for i, label in enumerate(labels) if label != background]
        return maps[keep].max(axis=0) if keep else maps.max(axis=0)

    def _segmentation_maps(self, outputs: dict[str, np.ndarray]
                           ) -> tuple[np.ndarray, list[str], str | None]:
        """The segmentation's class probabilities [K, h, w], its channels' labels and the
        background's label (None without one)."""
        head = self.segmentation
        assert head is not None
        maps = _activate(_maps(outputs, head.outputs["output"]),
                         head.param("activation", "sigmoid"))
        labels = _labels(head, maps.shape[0]) if head.param("labels") else (
            ["lesion"] if maps.shape[0] == 1 else [f"class {i}" for i in range(maps.shape[0])])
        return maps, labels, segmentation_background(head)

    def class_masks(self, outputs: dict[str, np.ndarray]
                    ) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
        """Every lesion class's map: (label, probability [h, w], membership grid [h, w],
        cut). A cell is of the class where its membership reaches the cut.

        softmax: a cell belongs to its most probable class (membership: that class's
        probability over the next most probable one's; with ``threshold``, also at
        least that); sigmoid: each channel is its own mask at ``threshold`` (0.5).
        The background channel is never a lesion class.
        """
        head = self.segmentation
        assert head is not None
        maps, labels, background = self._segmentation_maps(outputs)
        threshold = head.param("threshold")
        softmax = head.param("activation", "sigmoid") == "softmax" and maps.shape[0] > 1
        out = []
        for k, label in enumerate(labels):
            if label == background:
                continue
            if softmax:
                others = np.delete(maps, k, axis=0).max(axis=0)
                member = maps[k] - others
                if threshold is not None:
                    member = np.minimum(member, maps[k] - float(threshold))
                out.append((label, maps[k], member, SOFTMAX_CUT))
            else:
                cut = 0.5 if threshold is None else float(threshold)
                out.append((label, maps[k], maps[k], cut))
        return out

    def _box_list(self, outputs: dict[str, np.ndarray],
                  transform: Transform) -> tuple[float, list[Box]]:
        """A candidate-list detection head's finding probability and lesions."""
        head = self.detection
        assert head is not None
        size = self.params.get("input_size") or (0, 0)
        in_size = (float(size[0]), float(size[1]))
        threshold = self.thresholds.get("box")
        return (top_score(outputs, head, in_size),
                box_list_lesions(outputs, head, in_size, transform, threshold))

    def _detect(self, outputs: dict[str, np.ndarray], transform: Transform) -> list[Box]:
        head = self.detection
        assert head is not None
        heat_name, size_name = head.outputs["heatmap_output"], head.outputs["size_output"]
        heat = _maps(outputs, heat_name, 1)[0]
        sizes = _maps(outputs, size_name, 2)
        if sizes.shape[1:] != heat.shape:
            raise ValueError(f"{size_name} grid {sizes.shape[1:]} differs from {heat.shape}")
        stride, in_h, in_w = self._stride(heat.shape)
        threshold = float(self.thresholds.get("box", head.param("box_threshold", 0.5)))
        label = str(head.param("label", "lesion"))
        candidates = []
        peaks = local_peaks(heat, int(head.param("pool", 3))) & (heat >= threshold)
        for y, x in zip(*(a.tolist() for a in np.nonzero(peaks)), strict=True):
            cx, cy = (x + 0.5) * stride, (y + 0.5) * stride
            bw, bh = float(sizes[0, y, x]) * in_w, float(sizes[1, y, x]) * in_h
            x0, y0 = transform.to_source(cx - bw / 2, cy - bh / 2)
            x1, y1 = transform.to_source(cx + bw / 2, cy + bh / 2)
            if x1 - x0 > 0 and y1 - y0 > 0 and math.isfinite(x0 + y0 + x1 + y1):
                candidates.append(Box(x0, y0, x1, y1, float(heat[y, x]), label))
        return nms(candidates, float(head.param("nms_iou", 0.3)),
                   int(head.param("max_boxes", 5)))

    def _outline(self, outputs: dict[str, np.ndarray], boxes: list[Box],
                 probability: np.ndarray, transform: Transform) -> list[Box]:
        """Each lesion's mask from the segmentation: its contour, area and tight box.

        With a detection head, a box takes the mask region its centre lies in
        (else the region most of it covers); without one, every connected region
        of a lesion class (:meth:`class_masks`) is a lesion named by its class and
        scored by its most probable cell, the largest first.
        """
        head = self.segmentation
        assert head is not None
        threshold = float(head.param("threshold", 0.5))
        stride, _, _ = self._stride(probability.shape)
        if self.detection is None:
            found = [(label, grid, member, cut, region)
                     for label, grid, member, cut in self.class_masks(outputs)
                     for region in components(member >= cut)]
            found.sort(key=lambda f: -int(f[4].sum()))  # largest first, classes in order
            found = found[:int(head.param("max_lesions", 5))]
            boxes = [Box(0, 0, 0, 0, float(grid[region].max()), label)
                     for label, grid, _, _, region in found]
            seeds = [region for *_, region in found]
            grids = [(member, cut) for _, _, member, cut, _ in found]
        else:
            regions = components(probability >= threshold)
            seeds = [self._region_of(box, regions, stride, transform) for box in boxes]
            grids = [(probability, threshold)] * len(boxes)
        out = []
        for box, seed, (grid, cut) in zip(boxes, seeds, grids, strict=True):
            if seed is None:
                out.append(box)
                continue
            mask, (y0, _, x0, _) = lesion_mask(grid, seed, cut, stride, transform)
            if not mask.any():
                out.append(box)
                continue
            ys, xs = np.nonzero(mask)
            contour = [(float(x + x0), float(y + y0))
                       for y, x in simplify(trace_contour(mask))]
            out.append(replace(box, x0=float(xs.min() + x0), y0=float(ys.min() + y0),
                               x1=float(xs.max() + 1 + x0), y1=float(ys.max() + 1 + y0),
                               contour=tuple(contour), mask=mask, mask_origin=(y0, x0)))
        return out

    @staticmethod
    def _region_of(box: Box, regions: list[np.ndarray], stride: float,
                   transform: Transform) -> np.ndarray | None:
        if not regions:
            return None
        h, w = regions[0].shape
        cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
        gx = int((cx * transform.scale + transform.offset_x) // stride)
        gy = int((cy * transform.scale + transform.offset_y) // stride)
        if 0 <= gy < h and 0 <= gx < w:
            for region in regions:
                if region[gy, gx]:
                    return region
        gx0 = max(0, int((box.x0 * transform.scale + transform.offset_x) // stride))
        gy0 = max(0, int((box.y0 * transform.scale + transform.offset_y) // stride))
        gx1 = math.ceil((box.x1 * transform.scale + transform.offset_x) / stride)
        gy1 = math.ceil((box.y1 * transform.scale + transform.offset_y) / stride)
        covered = [int(r[gy0:gy1, gx0:gx1].sum()) for r in regions]
        best = int(np.argmax(covered))
        return regions[best] if covered[best] > 0 else None

    def _lesion_classes(self, outputs: dict[str, np.ndarray], head: Head, boxes: list[Box],
                        segmentation: np.ndarray | None, transform: Transform) -> list[Box]:
        """Per-lesion class probabilities: the class map averaged under the lesion's
        mask, else read at its box centre."""
        maps = _maps(outputs, head.outputs["output"])
        probs = _activate(maps, head.param("activation", "softmax"))
        labels = _labels(head, probs.shape[0])
        stride, _, _ = self._stride(probs.shape[1:])
        h, w = probs.shape[1:]
        out = []
        for box in boxes:
            if box.mask is not None and box.mask.any():
                ys, xs = np.nonzero(box.mask)
                oy, ox = box.mask_origin
                gy = np.clip(((ys + oy + 0.5) * transform.scale + transform.offset_y) // stride,
                             0, h - 1).astype(int)
                gx = np.clip(((xs + ox + 0.5) * transform.scale + transform.offset_x) // stride,
                             0, w - 1).astype(int)
                values = probs[:, gy, gx].mean(axis=1)
            else:
                cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
                gx = min(w - 1, max(0, int((cx * transform.scale + transform.offset_x)
                                           // stride)))
                gy = min(h - 1, max(0, int((cy * transform.scale + transform.offset_y)
                                           // stride)))
                values = probs[:, gy, gx]
            out.append(replace(box, class_probabilities={
                label: round(float(p), 4) for label, p in zip(labels, values, strict=True)}))
        return out

    def unchecked_heatmap(self, outputs: dict[str, np.ndarray],
                          transform: Transform) -> np.ndarray | None:
        """The heatmap the heads make, in [0, 1] over the source image, whether or not its
        on-lesion check lets the box show it (what the converter and bench measure)."""
        return self._display(outputs, self._segmentation(outputs), transform, checked=False)

    def _display(self, outputs: dict[str, np.ndarray], segmentation: np.ndarray | None,
                 transform: Transform, checked: bool = True) -> np.ndarray | None:
        """The heatmap shown to the clinician, in [0, 1] over the source image: the map
        :func:`heatmap_to_show` chose (``checked`` False: the declared one, whatever its
        on-lesion check says)."""
        grid = self._display_grid(outputs, segmentation,
                                  self.heatmap_shown if checked else SHOW_DECLARED)
        if grid is None:
            return None
        stride, _, _ = self._stride(grid.shape)
        return source_heatmap(np.asarray(grid, np.float32), stride, transform)

    def _display_grid(self, outputs: dict[str, np.ndarray], segmentation: np.ndarray | None,
                      shown: str) -> np.ndarray | None:
        """The model-input map to show: the declared heatmap head's output, else the map the
        lesions come from (the segmentation's, else the detection's centre map)."""
        head = self.heatmap
        present = head is not None and head.outputs["output"] in outputs
        if head is not None and not present and not head.param("optional", False):
            _missing(head.outputs["output"], outputs)
        if shown == SHOW_NONE:
            return None
        if present and shown == SHOW_DECLARED:
            assert head is not None
            return self._heatmap_grid(outputs, head)
        if segmentation is not None:
            return segmentation
        if self.detection is not None and "heatmap_output" in self.detection.outputs:
            return _maps(outputs, self.detection.outputs["heatmap_output"], 1)[0]
        return None

    def _heatmap_grid(self, outputs: dict[str, np.ndarray], head: Head) -> np.ndarray:
        """The declared heatmap output's map of the finding class, in [0, 1] (a raw CAM:
        its positive part over its maximum)."""
        maps = _maps(outputs, head.outputs["output"])
        grid = _activate(maps[self._heatmap_channel(maps.shape[0])],
                         head.param("activation", "sigmoid"))
        if head.param("activation", "sigmoid") == "none":
            grid = np.maximum(grid, 0)
            top = float(grid.max())
            grid = grid / top if top > 0 else grid
        return grid

    def _heatmap_channel(self, channels: int) -> int:
        """Which channel of a per-class heatmap to show: the finding class's."""
        if channels == 1:
            return 0
        head = self.classification
        if head is None:
            return channels - 1
        labels = _labels(head, channels)
        negative = head.param("negative_label")
        positive = [i for i, label in enumerate(labels) if label != negative]
        return positive[-1] if positive else channels - 1


def heatmap_to_show(heads: list[Head]) -> tuple[str, str]:
    """Which map the box shows as the heatmap (``SHOW_*``) and why, in words.

    A declared heatmap head beside lesion boxes (the package detects or segments)
    is shown when its ``on_lesion`` measurement passes (``contracts/heads.py``);
    when it failed, no heatmap is shown (issue 42: the demo model's own ``cam``
    peaks below its lesions). A package that never measured it shows the map its
    boxes come from instead, which lies on them by construction, rather than a map
    nobody checked against lesions. A classifier's heatmap has no box to lie
    beside and is shown as declared; so is a package without a heatmap head.
    """
    head = head_of(heads, "heatmap")
    if head is None:
        return SHOW_DECLARED, "no heatmap head: the map the lesions come from"
    if not (head_of(heads, "detection") or head_of(heads, "segmentation")):
        return SHOW_DECLARED, "a classifier's heatmap: no lesion box to lie beside"
    if head.param("on_lesion") is None:
        return SHOW_LESION_MAP, (f"heatmap {head.outputs['output']!r} was never measured "
                                 "against lesions with truth (no on_lesion): the map the "
                                 "lesions come from is shown instead")
    failures = on_lesion_failures(parse_on_lesion(head.param("on_lesion")))
    if failures:
        return SHOW_NONE, f"heatmap {head.outputs['output']!r} is not shown: " + "; ".join(
            failures)
    return SHOW_DECLARED, f"heatmap {head.outputs['output']!r} passed its on-lesion check"


def _missing(name: str, outputs: dict[str, np.ndarray]) -> Any:
    raise ValueError(f"model output {name!r} is missing; got {sorted(outputs)}")


def decoder_for(manifest: dict[str, Any]) -> HeadsDecoder:
    """The decoder of a package's manifest (its heads, parameters and thresholds)."""
    heads, params = manifest_heads(manifest)
    thresholds = {k: float(v) for k, v in manifest.get("thresholds", {}).items()}
    decoder = HeadsDecoder(heads, params, thresholds)
    if decoder.heatmap is not None and decoder.heatmap_shown != SHOW_DECLARED:
        log.info("%s: %s", manifest.get("name", "model"), decoder.heatmap_reason)
    return decoder


Postprocessor = Callable[[dict[str, np.ndarray], dict, dict[str, float], Transform],
                         FrameFindings]


def get_postprocessor(name: str) -> Postprocessor:
    """A legacy postprocessor by name, as a function (outputs, params, thresholds, transform)."""
    legacy_heads(name, {})  # ValueError naming the known ones

    def decode(outputs: dict[str, np.ndarray], params: dict, thresholds: dict[str, float],
               transform: Transform) -> FrameFindings:
        return HeadsDecoder(legacy_heads(name, params), params, thresholds).decode(
            outputs, transform)

    return decode
