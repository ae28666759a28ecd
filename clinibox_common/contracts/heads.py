"""A model's output heads and its validated range, as the package manifest declares them.

Shared by the converter (which writes them) and the box (whose postprocessor
reads them). A manifest lists its heads under ``heads``; any combination of
the four kinds, at most one of each::

    "heads": [
      {"kind": "classification", "output": "lesion_class", "activation": "softmax",
       "labels": ["benign", "malignant"], "negative_label": null,
       "per": "lesion"},          # "image": scores [1,K]; "lesion": a map [1,K,h,w]
                                  # read under each lesion (its mask, else its box centre)
      {"kind": "detection", "score_output": "lesion_logit",
       "heatmap_output": "centre_heatmap", "size_output": "box_size",
       "label": "lesion", "max_boxes": 5, "nms_iou": 0.3, "pool": 3},
      {"kind": "segmentation", "output": "lesion_mask", "activation": "sigmoid",
       "labels": ["lesion"], "threshold": 0.5},   # a mask per class [1,K,h,w]
      {"kind": "heatmap", "output": "cam", "activation": "sigmoid"}   # [1,1,h,w] or [1,K,h,w]
    ]

A segmentation head's ``activation`` says how its channels [1,K,h,w] become
probabilities, and ``background`` names the channel (one of ``labels``) that is
no lesion::

      {"kind": "segmentation", "output": "out", "activation": "softmax",
       "labels": ["background", "lesion", "cyst"], "background": "background"}

* ``softmax``: the channels are exclusive classes; a cell belongs to its most
  probable class (and, with ``threshold`` declared, only when that probability
  reaches it). The background class is never a lesion; every connected region
  of another class is one lesion named by its class and scored by that class's
  most probable cell.
* ``sigmoid``: each channel is its own mask (``threshold``, default 0.5); each
  channel but the background one gives lesions named by its label.

A head without ``background`` reads as before: a channel labelled
``"background"`` (or the head's older ``negative_label``) is the background;
a single-channel mask without labels is named "lesion".

Every head names the model outputs it reads; a map's stride is the model
input size over the map size. A detection head with a ``layout`` reads lists of
candidate boxes instead of maps (``contracts/box_lists.py``).

A heatmap shown beside lesion boxes must lie on them: a heatmap head of a
package that also detects or segments lesions carries ``on_lesion``, the
converter's measurement on images with truth of how many detected lesions
(``lesions``, over all and per modality) have the heatmap's hottest point near
them inside their box (``inside``)::

      {"kind": "heatmap", "output": "lesion_mask", "activation": "sigmoid",
       "on_lesion": {"lesions": 612, "inside": 590, "share": 0.964, "target": 0.95,
                     "by_modality": {"CT": {"lesions": 301, "inside": 292, "share": 0.97},
                                     "US": {"lesions": 311, "inside": 298, "share": 0.958}},
                     "measured_on": "held-out phantoms …"}}

The box recomputes the shares from the counts (:func:`on_lesion_failures`):
at least ``ON_LESION_MIN_LESIONS`` lesions, and ``ON_LESION_TARGET`` of them
inside their box over all and in every modality measured, or no heatmap is
shown; without ``on_lesion`` it shows the map the lesions come from instead of
the unmeasured one (``inference/heads.py``: ``heatmap_to_show``).

The image-level finding probability comes from the detection head's
``score_output`` (a logit [1,1]) when there is one, else from an image-level
classification head, else from the segmentation's most probable pixel.

The validated range (``ood``) says what the validation data looked like to
the model: the mean and inverse covariance of a features output (for example
its globally pooled penultimate features), and the squared Mahalanobis
distance above which an image is outside the range (chosen on held-out data,
with the share of held-out images it wrongly flags)::

    "ood": {"method": "mahalanobis", "output": "features",
            "image_statistics": {"levels": [0.1, 0.35, 0.65, 0.9], "scales": [1, 2, 4]},
            "mean": [...], "inverse_covariance": [[...]], "threshold": 123.4,
            "held_out": {"images": 1000, "flagged": 0.005}}

With ``image_statistics`` the measured values begin with what the model's input
looks like as a whole, computed by the box in float whatever the artifact's
precision (``inference/validated_range.py``: the share of its display grey
above each level, then its texture at each scale), followed by the ``output``'s
values; ``output`` may be null when the statistics alone are measured. An INT8
artifact clips its outputs to the range it was calibrated on, so an image far
from the validation data could look near through them alone.

A package without ``ood`` has no guard; the box says so on its device page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clinibox_common.contracts.box_lists import BOX_LIST_LAYOUTS, box_list_problems, is_box_list
from clinibox_common.errors import CliniboxError

HEAD_KINDS = ("classification", "detection", "segmentation", "heatmap")
#: the least share of detected lesions whose heatmap peak lies inside their box, for a
#: heatmap to be shown beside boxes (issue 42), and the fewest lesions that share may rest on
ON_LESION_TARGET = 0.95
ON_LESION_MIN_LESIONS = 50
ACTIVATIONS = ("sigmoid", "softmax", "none")


class HeadsError(CliniboxError, ValueError):
    """A manifest's heads or validated range the box cannot read, with the reason."""

    kind = "model package refused"


@dataclass(frozen=True)
class Head:
    """One declared output head: its kind, the outputs it reads and its parameters."""

    kind: str
    outputs: dict[str, str]
    params: dict[str, Any] = field(default_factory=dict)

    def param(self, key: str, default: Any = None) -> Any:
        """A parameter of the head, or ``default``."""
        return self.params.get(key, default)


#: which keys of a head name model outputs, by kind (the first is required)
_OUTPUT_KEYS = {
    "classification": ("output",),
    "detection": ("heatmap_output", "size_output", "score_output"),
    "segmentation": ("output",),
    "heatmap": ("output",),
}


def parse_heads(declared: Any) -> list[Head]:
    """The ``heads`` list of a manifest as Head records; HeadsError says what is wrong."""
    if not isinstance(declared, list) or not declared:
        raise HeadsError("manifest 'heads' must be a non-empty list")
    heads: list[Head] = []
    for entry in declared:
        if not isinstance(entry, dict) or entry.get("kind") not in HEAD_KINDS:
            raise HeadsError(f"a head needs a kind among {', '.join(HEAD_KINDS)}: {entry!r}")
        kind = entry["kind"]
        if any(h.kind == kind for h in heads):
            raise HeadsError(f"manifest declares two {kind} heads")
        keys = _OUTPUT_KEYS[kind]
        if kind == "detection" and is_box_list(entry):  # candidate boxes (box_lists.py)
            problems = box_list_problems(entry)
            if problems:
                raise HeadsError("; ".join(problems))
            keys = BOX_LIST_LAYOUTS[entry["layout"]]
        outputs = {k: entry[k] for k in keys if entry.get(k)}
        missing = [k for k in keys[:2 if kind == "detection" else 1] if k not in outputs]
        if missing:
            raise HeadsError(f"the {kind} head needs {', '.join(missing)}")
        activation = entry.get("activation", "sigmoid")
        if activation not in ACTIVATIONS:
            raise HeadsError(f"the {kind} head's activation {activation!r} is not one of "
                             f"{', '.join(ACTIVATIONS)}")
        labels = entry.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise HeadsError(f"the {kind} head's labels must be a list of names")
        if kind == "classification" and entry.get("per", "image") not in ("image", "lesion"):
            raise HeadsError("a classification head is per 'image' or per 'lesion'")
        if kind == "segmentation":
            _check_segmentation(entry, activation, labels)
        if kind == "heatmap" and "on_lesion" in entry:
            parse_on_lesion(entry["on_lesion"])
        params = {k: v for k, v in entry.items() if k != "kind" and k not in keys}
        heads.append(Head(kind, outputs, params))
    return heads


def _check_segmentation(entry: dict[str, Any], activation: str, labels: list[str]) -> None:
    """A segmentation head's background and activation; HeadsError says what is wrong."""
    background = entry.get("background")
    if background is not None:
        if not isinstance(background, str) or background not in labels:
            raise HeadsError(f"the segmentation head's background {background!r} must be one "
                             f"of its labels {labels}")
        if len(labels) < 2:
            raise HeadsError("a segmentation head with a background channel needs a label for "
                             "it and for at least one lesion class")
    if activation == "softmax" and len(labels) == 1:
        raise HeadsError("a softmax segmentation head needs at least two labels (one per "
                         "channel); a single-channel mask is sigmoid")
    threshold = entry.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or
                                  not isinstance(threshold, (int, float)) or
                                  not 0.0 <= threshold <= 1.0):
        raise HeadsError(f"the segmentation head's threshold {threshold!r} is not a "
                         "probability 0..1")


def segmentation_background(head: Head) -> str | None:
    """The label of a segmentation head's background channel: its ``background``, else an
    older ``negative_label``, else a label named "background"; None without one."""
    labels = [str(x) for x in head.param("labels", [])]
    declared = head.param("background") or head.param("negative_label")
    if declared:
        return str(declared)
    return "background" if "background" in labels else None


def head_of(heads: list[Head], kind: str) -> Head | None:
    """The head of ``kind``, or None."""
    return next((h for h in heads if h.kind == kind), None)


@dataclass(frozen=True)
class OnLesion:
    """A heatmap's on-lesion measurement: (inside, lesions) over all and per modality."""

    inside: int
    lesions: int
    by_modality: dict[str, tuple[int, int]] = field(default_factory=dict)


def _counts(declared: Any, where: str) -> tuple[int, int]:
    """(inside, lesions) of a measurement; HeadsError when they are not counts."""
    try:
        inside, lesions = declared["inside"], declared["lesions"]
    except (KeyError, TypeError):
        raise HeadsError(f"the heatmap head's on_lesion{where} needs 'inside' and "
                         "'lesions'") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (inside, lesions)) or \
            not 0 <= inside <= lesions:
        raise HeadsError(f"the heatmap head's on_lesion{where}: 'inside' and 'lesions' are "
                         f"counts with inside <= lesions, not {inside!r}, {lesions!r}")
    return inside, lesions


def parse_on_lesion(declared: Any) -> OnLesion:
    """A heatmap head's ``on_lesion`` as an OnLesion; HeadsError says what is wrong."""
    inside, lesions = _counts(declared, "")
    modalities = declared.get("by_modality", {})
    if not isinstance(modalities, dict):
        raise HeadsError("the heatmap head's on_lesion by_modality must map modalities to "
                         "counts")
    return OnLesion(inside, lesions, {str(m): _counts(c, f" for {m}")
                                      for m, c in modalities.items()})


def on_lesion_failures(measured: OnLesion) -> list[str]:
    """Why a heatmap with this measurement may not be shown beside boxes ([]: it may)."""
    if measured.lesions < ON_LESION_MIN_LESIONS:
        return [f"measured on {measured.lesions} lesions, fewer than {ON_LESION_MIN_LESIONS}"]
    failures = []
    for where, (inside, lesions) in [("", (measured.inside, measured.lesions)),
                                     *((f" in {m}", c) for m, c in
                                       sorted(measured.by_modality.items()))]:
        if lesions and inside / lesions < ON_LESION_TARGET:
            failures.append(f"its peak lies inside the box of {inside} of {lesions} lesions"
                            f"{where} ({100 * inside / lesions:.1f} %, below "
                            f"{100 * ON_LESION_TARGET:g} %)")
    return failures


@dataclass(frozen=True)
class ImageStatistics:
    """Which statistics of the input a validated range measures: the share of its display
    grey above each of ``levels`` and its texture at each of ``scales`` (pixels)."""

    levels: tuple[float, ...]
    scales: tuple[int, ...]

    @property
    def size(self) -> int:
        """How many values they are."""
        return len(self.levels) + 2 * len(self.scales)


@dataclass(frozen=True)
class ValidatedRange:
    """What the validation data looked like to the model (the manifest's ``ood``)."""

    output: str | None
    mean: tuple[float, ...]
    inverse_covariance: tuple[tuple[float, ...], ...]
    threshold: float
    held_out: dict[str, Any] = field(default_factory=dict)
    image_statistics: ImageStatistics | None = None


def _image_statistics(declared: Any) -> ImageStatistics | None:
    if declared is None:
        return None
    try:
        levels = tuple(float(v) for v in declared["levels"])
        scales = tuple(int(v) for v in declared["scales"])
    except (KeyError, TypeError, ValueError) as exc:
        raise HeadsError(f"manifest 'ood': image_statistics is incomplete: {exc}") from None
    if not levels or any(not 0.0 <= v <= 1.0 for v in levels) or list(levels) != sorted(levels):
        raise HeadsError("manifest 'ood': image_statistics levels are grey values 0..1, "
                         "ascending")
    if any(not 1 <= k <= 64 for k in scales) or any(
            float(v) != int(v) for v in declared["scales"]):
        raise HeadsError("manifest 'ood': image_statistics scales are whole pixels, 1..64")
    return ImageStatistics(levels, scales)


def parse_validated_range(declared: Any) -> ValidatedRange:
    """The manifest's ``ood`` section as a ValidatedRange; HeadsError says what is wrong."""
    if not isinstance(declared, dict) or declared.get("method") != "mahalanobis":
        raise HeadsError("manifest 'ood' must be {'method': 'mahalanobis', ...}")
    statistics = _image_statistics(declared.get("image_statistics"))
    try:
        mean = tuple(float(v) for v in declared["mean"])
        inverse = tuple(tuple(float(v) for v in row) for row in declared["inverse_covariance"])
        threshold = float(declared["threshold"])
        output = None if declared["output"] is None else str(declared["output"])
    except (KeyError, TypeError, ValueError) as exc:
        raise HeadsError(f"manifest 'ood' is incomplete: {exc}") from None
    if not mean or len(inverse) != len(mean) or any(len(r) != len(mean) for r in inverse):
        raise HeadsError(f"manifest 'ood': inverse covariance is not {len(mean)}×{len(mean)}")
    if not threshold > 0:
        raise HeadsError("manifest 'ood': threshold must be positive")
    measured = statistics.size if statistics else 0
    if output is None and measured != len(mean):
        raise HeadsError("manifest 'ood' measures no output: its mean must have one value per "
                         "image statistic")
    if output is not None and len(mean) <= measured:
        raise HeadsError(f"manifest 'ood': {len(mean)} values leave none for output "
                         f"{output!r} after {measured} image statistics")
    return ValidatedRange(output, mean, inverse, threshold, dict(declared.get("held_out", {})),
                          statistics)
