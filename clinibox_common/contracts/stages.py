"""A package's second stage: a model that runs on every lesion the first stage found.

Detect, then look closer: the first stage finds lesions on the whole,
letterboxed image; a second stage takes each lesion's crop from the source
frame, at the source's own resolution around the lesion, and outlines and
classifies it there. The manifest declares it under ``stages`` (at most one
today), with everything the box needs and no model-specific code::

    "stages": [{
      "name": "lesion-crop",
      "runs_on": "lesions",
      "purpose": "outline and classify each lesion on its crop at source resolution",
      "crop": {"size": [64, 64], "context": 1.6, "margin_px": 6,
               "normalisation": "standardise"},
      "inputs": [{"name": "crop", "shape": [1, 1, 64, 64], "dtype": "float32",
                  "layout": "NCHW"}],
      "outputs": [{"name": "crop_mask", "shape": [1, 1, 64, 64]},
                  {"name": "crop_class", "shape": [1, 2]}],
      "heads": [{"kind": "segmentation", "output": "crop_mask", ...},
                {"kind": "classification", "output": "crop_class", "per": "image", ...}],
      "artifacts": [...], "golden_cases": [...], "validation": {...}
    }]

``crop``: a square window on the source frame centred on the lesion's box,
``context`` times the box's longer side plus ``margin_px`` source pixels,
resampled to ``size`` (bilinear, the image's edge repeated outside it) and
standardised (its own mean and standard deviation). ``heads`` are read like
the first stage's (``contracts/heads.py``) on the crop: a segmentation
replaces the lesion's outline, mask and size; an image-level classification
replaces its class probabilities. ``artifacts`` and ``golden_cases`` have the
package's own format; their files are checked and signed with the package.

:func:`stage_manifest` gives a stage the shape of a package manifest, so the
box loads, times, checks and falls back on it exactly like a package.
"""

from __future__ import annotations

from typing import Any

from clinibox_common.contracts.heads import HeadsError, parse_heads
from clinibox_common.errors import CliniboxError

#: what a second stage can run on (only the first stage's lesions today)
RUNS_ON = ("lesions",)
NORMALISATIONS = ("standardise",)


class StageError(CliniboxError, ValueError):
    """A declared stage the box cannot run, with the reason."""

    kind = "model package refused"


def _crop(stage: dict[str, Any]) -> dict[str, Any]:
    crop = stage.get("crop")
    if not isinstance(crop, dict):
        raise StageError(f"stage {stage.get('name')!r} needs a 'crop' section")
    size = crop.get("size")
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and 8 <= v <= 1024 for v in size)):
        raise StageError("a stage's crop size must be [height, width], 8 to 1024 pixels")
    context, margin = crop.get("context", 1.5), crop.get("margin_px", 0)
    if not isinstance(context, int | float) or not 1.0 <= context <= 8.0:
        raise StageError("a stage's crop context must be between 1 and 8 (times the box)")
    if not isinstance(margin, int | float) or not 0 <= margin <= 256:
        raise StageError("a stage's crop margin_px must be between 0 and 256")
    if crop.get("normalisation", "standardise") not in NORMALISATIONS:
        raise StageError(f"a stage's crop normalisation must be one of {NORMALISATIONS}")
    return crop


def check_stage(stage: Any) -> None:
    """Refuse a stage declaration the box cannot run (StageError says why)."""
    if not isinstance(stage, dict) or not isinstance(stage.get("name"), str):
        raise StageError("a stage must be an object with a name")
    if stage.get("runs_on", "lesions") not in RUNS_ON:
        raise StageError(f"stage {stage['name']!r} runs on {stage.get('runs_on')!r}; the box "
                         f"runs stages on {RUNS_ON}")
    crop = _crop(stage)
    inputs = stage.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise StageError(f"stage {stage['name']!r} needs exactly one input")
    shape = inputs[0].get("shape")
    if shape != [1, 1, *crop["size"]]:
        raise StageError(f"stage {stage['name']!r} input shape {shape} is not "
                         f"[1, 1, {crop['size'][0]}, {crop['size'][1]}] (its crop)")
    try:
        heads = parse_heads(stage.get("heads", []))
    except HeadsError as exc:
        raise StageError(f"stage {stage['name']!r}: {exc}") from None
    kinds = {h.kind for h in heads}
    if not kinds & {"segmentation", "classification"} or kinds - {"segmentation",
                                                                  "classification"}:
        raise StageError(f"stage {stage['name']!r} must declare a segmentation and/or an "
                         "image-level classification head, and nothing else")
    for head in heads:
        if head.kind == "classification" and head.param("per", "image") != "image":
            raise StageError(f"stage {stage['name']!r}: its classification is of the crop "
                             "(per = 'image')")
    if not isinstance(stage.get("artifacts"), list) or not stage["artifacts"]:
        raise StageError(f"stage {stage['name']!r} lists no artifacts")


def stages_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's declared stages (checked; StageError on a bad one)."""
    stages = manifest.get("stages", [])
    if not isinstance(stages, list) or len(stages) > 1:
        raise StageError("a package declares at most one second stage (a list)")
    for stage in stages:
        check_stage(stage)
    return list(stages)


def stage_manifest(manifest: dict[str, Any], stage: dict[str, Any]) -> dict[str, Any]:
    """A stage in the shape of a package manifest: ``name`` is ``<package>/<stage>``,
    the version the package's; its heads decode on the crop (``input_size``)."""
    return {
        "schema": manifest.get("schema"),
        "name": f"{manifest['name']}/{stage['name']}",
        "version": manifest["version"],
        "task": "lesion-stage",
        "inputs": stage["inputs"],
        "outputs": stage.get("outputs", []),
        "heads": stage["heads"],
        "thresholds": {},
        "preprocessing": {"name": "lesion_crop", "params": dict(stage["crop"])},
        "postprocessing": {"name": "heads", "params": {"input_size": stage["crop"]["size"]}},
        "artifacts": stage["artifacts"],
        "golden_cases": stage.get("golden_cases", []),
        "validation": stage.get("validation", {}),
        "stage": {k: stage[k] for k in ("name", "runs_on", "purpose", "crop") if k in stage},
    }
