"""A detection head that reads lists of candidate boxes, as the manifest declares it.

Detectors such as YOLOX, Faster R-CNN, RetinaNet, SSD and FCOS end in a list of
candidate boxes with class scores followed by a data-dependent non-maximum
suppression. A package exports the candidates *before* that suppression (a
fixed-shape graph); the box decodes them and runs class-aware NMS itself
(``inference/box_lists.py``) with the thresholds declared here. Two layouts::

    {"kind": "detection", "layout": "yolo", "output": "candidates",
     "box_format": "cxcywh",        # or "xyxy"
     "transposed": false,           # true: [1, 4+K, N] instead of [1, N, 4+K]
     "objectness": true,            # a column after the box, multiplied into each score
     "activation": "none",          # scores as given; "sigmoid" or "softmax" on logits
     "coordinates": "pixels",       # model-input pixels; "normalized": 0 … 1 of the input
     "labels": ["lesion"], "background": [],
     "iou_threshold": 0.5, "score_threshold": 0.25, "max_detections": 5}

    {"kind": "detection", "layout": "boxes_scores",
     "boxes_output": "boxes",       # [1, N, 4] (box_format, coordinates as above)
     "scores_output": "scores",     # [1, N, K]
     "activation": "softmax", "labels": ["background", "lesion"],
     "background": ["background"], ...}

``labels`` names the K score columns in order; a label in ``background`` is
never a lesion (torchvision's Faster R-CNN and SSD put their background class
first). A package without ``layout`` has the centre-heatmap detection head
(``contracts/heads.py``), read as before.
"""

from __future__ import annotations

from typing import Any

#: the candidate-list layouts and the head keys that name their model outputs
BOX_LIST_LAYOUTS: dict[str, tuple[str, ...]] = {
    "yolo": ("output",),
    "boxes_scores": ("boxes_output", "scores_output"),
}
BOX_FORMATS = ("cxcywh", "xyxy")
COORDINATES = ("pixels", "normalized")
BOX_LIST_ACTIVATIONS = ("none", "sigmoid", "softmax")
#: the thresholds a package that declares none runs at
DEFAULTS: dict[str, Any] = {"box_format": "cxcywh", "transposed": False, "objectness": False,
                            "activation": "none", "coordinates": "pixels", "background": [],
                            "iou_threshold": 0.5, "score_threshold": 0.25,
                            "max_detections": 5}
#: the most boxes a package may keep in a frame: the box's NMS runs one pass over the
#: candidates per kept box, so this bounds its cost whatever the candidates' count
MAX_DETECTIONS = 100


def is_box_list(entry: dict[str, Any]) -> bool:
    """Whether a detection head entry declares a candidate-list ``layout``."""
    return "layout" in entry


def box_list_problems(entry: dict[str, Any]) -> list[str]:
    """What is wrong with a candidate-list detection head ([]: nothing)."""
    layout = entry.get("layout")
    if layout not in BOX_LIST_LAYOUTS:
        return [f"the detection head's layout {layout!r} is not one of "
                f"{', '.join(BOX_LIST_LAYOUTS)}"]
    problems = [f"the {layout} detection head needs {key}"
                for key in BOX_LIST_LAYOUTS[layout] if not isinstance(entry.get(key), str)
                or not entry.get(key)]
    for key, allowed in (("box_format", BOX_FORMATS), ("coordinates", COORDINATES),
                         ("activation", BOX_LIST_ACTIVATIONS)):
        if entry.get(key, DEFAULTS[key]) not in allowed:
            problems.append(f"the detection head's {key} {entry.get(key)!r} is not one of "
                            f"{', '.join(allowed)}")
    for key in ("transposed", "objectness"):
        if not isinstance(entry.get(key, False), bool):
            problems.append(f"the detection head's {key} must be true or false")
    labels = entry.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str)
                                                             for x in labels):
        problems.append("the detection head's labels must name each score column")
        labels = []
    background = entry.get("background", [])
    if not isinstance(background, list) or any(b not in labels for b in background):
        problems.append(f"the detection head's background {background!r} must list labels "
                        f"among {labels}")
    elif labels and set(labels) <= set(background):
        problems.append("the detection head needs a label that is not background")
    for key in ("iou_threshold", "score_threshold"):
        value = entry.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not 0.0 <= value <= 1.0:
            problems.append(f"the detection head's {key} must lie in [0, 1], not {value!r}")
    limit = entry.get("max_detections", DEFAULTS["max_detections"])
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_DETECTIONS:
        problems.append(f"the detection head's max_detections must be a whole number from 1 "
                        f"to {MAX_DETECTIONS}, not {limit!r}")
    return problems
