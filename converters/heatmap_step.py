"""The heatmap and the validated range: a classifier wrapped so that it adds ``cam`` and
``features`` (before export), its heatmap checked against captum's Grad-CAM, and the range
of inputs the model was validated on fitted (both in verify)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from converters.cam import (
    CAM_OUTPUT,
    FEATURES_OUTPUT,
    MIN_CORRELATION,
    CamModel,
    find_pool_linear_head,
    grad_cam,
    grad_cam_agreement,
    named_outputs,
)
from converters.config import ConvertConfigError
from converters.conversion_view import ConversionView
from converters.data import DataError
from converters.export import torch_outputs
from converters.head_cam import GradCamModel, find_pooled_head, wrap
from converters.heatmap_words import outputs_meaning, step_report
from converters.ood import (
    IMAGE_STATISTICS,
    fit_projection,
    fit_validated_range,
    flagged_share,
    input_statistics,
    measured,
    projection_size,
    spread_floors,
)
from converters.prune import save_module
from converters.source import SourceModel

log = logging.getLogger("clinibox.convert")


def _calibration_rows(conv: ConversionView) -> np.ndarray | None:
    """The rows the validated range is fitted on: calibration, else training rows (None
    without data)."""
    try:
        data = conv.data
    except (ConvertConfigError, DataError):
        return None
    for split in ("calibration", "train"):
        rows = data.subset(split).x[: conv.config.calibration_size]
        if len(rows):
            return rows
    return None


def add_heatmap(conv: ConversionView) -> dict:
    """Before export: wrap a classifier whose head is global average pooling + a linear
    layer in :class:`converters.cam.CamModel`, which adds ``cam`` and ``features``; one
    with more layers after the pool (``converters.head_cam``: timm's and torchvision's
    MobileNetV3) in :class:`converters.head_cam.GradCamModel` (Grad-CAM in the graph).

    Any other model keeps its outputs and ``steps["heatmap"]`` says why. The wrapped
    network is kept in the work folder for the later steps.
    """
    c, module = conv.config, conv.source.module
    if isinstance(module, CamModel) or not c.heatmap or c.task != "classification":
        return conv.state["steps"].get("heatmap", {})
    spec = conv.spec
    reason = ""
    if {CAM_OUTPUT, FEATURES_OUTPUT} & set(spec.output_names):
        reason = "the model has its own 'cam' or 'features' output"
    elif conv.source.program is not None or not conv.source.trainable:
        reason = (f"a {conv.source.kind} model cannot be wrapped; hand the eager module "
                  "(MODULE:FACTORY or a pickled module)")
    else:
        example = torch.randn((2, *spec.input_shape[1:]),
                              generator=torch.Generator().manual_seed(0))
        search = find_pool_linear_head(
            module, example, lambda r: named_outputs(r, spec.output_names)[spec.score_output])
        if search.head is None:  # more than one linear layer after the pool: Grad-CAM
            search = find_pooled_head(module, example, lambda r: named_outputs(
                r, spec.output_names)[spec.score_output])
        reason = search.reason
    if reason:
        report = {"added": False, "reason": f"no heatmap: {reason}"}
        log.info("%s", report["reason"])
        conv.state["steps"]["heatmap"] = report
        conv.save_state()
        return report
    head = search.head
    assert head is not None
    wrapper = wrap(module, head, spec.output_names)
    gradient = isinstance(wrapper, GradCamModel)
    wrapped = dataclasses.replace(spec, output_names=(*spec.output_names,
                                                      *CamModel.added_outputs))
    rows = _calibration_rows(conv)
    size = projection_size(head.channels, 0 if rows is None else len(rows),
                           reserved=IMAGE_STATISTICS.size)
    if size:
        pooled = torch_outputs(wrapper, wrapped, rows)[FEATURES_OUTPUT]
        wrapper.set_projection(*fit_projection(pooled, size))
    save_module(wrapper, conv.work / "model.pt")
    old = conv.source
    conv.adopt_model(SourceModel(wrapper, old.kind, old.reference, old.files), wrapped)
    conv.state.setdefault("output_meanings", {}).update(
        outputs_meaning(head, gradient, size, 0 if rows is None else len(rows)))
    report = step_report(head, wrapper.feature_size, gradient, size)
    conv.state["steps"]["heatmap"] = report
    conv.save_state()
    log.info("heatmap: %s", report)
    return report


def check_heatmap(conv: ConversionView) -> dict[str, list[str]]:
    """Every artifact's ``cam`` against captum's Grad-CAM of the source on validation
    images (float artifacts must correlate ≥ ``MIN_CORRELATION``); failures by artifact."""
    module = conv.source.module
    if not isinstance(module, CamModel):
        return {}
    val = conv.validation
    count = min(len(val), 32)
    score = conv.spec.score_output
    reference = grad_cam(module.model, module.head, val.x[:count],
                         lambda r: named_outputs(r, module.output_names)[score],
                         module.head.classes)
    measured = {"PyTorch source": grad_cam_agreement(conv.reference()[CAM_OUTPUT][:count],
                                                     reference)}
    failures: dict[str, list[str]] = {}
    for record in conv.records():
        agreement = grad_cam_agreement(conv.outputs(record)[CAM_OUTPUT][:count], reference)
        measured[record.kind] = agreement
        low = agreement["min"] is not None and agreement["min"] < MIN_CORRELATION
        if low and record.precision != "int8":
            failures[f"{record.format} {record.precision} ({record.path})"] = [
                f"its class-activation map correlates {agreement['min']:.4f} with captum's "
                f"Grad-CAM (at least {MIN_CORRELATION} required)"]
    conv.state["steps"].setdefault("heatmap", {})["grad_cam"] = {
        "reference": f"captum LayerGradCam on {module.head.feature_path!r}, every class",
        "images": count, "min_correlation_required": MIN_CORRELATION,
        "correlation": measured}
    log.info("heatmap vs Grad-CAM: %s", {k: v["min"] for k, v in measured.items()})
    return failures


def fit_range(conv: ConversionView) -> dict | None:
    """The validated range: what the input looks like as a whole (its intensity
    histogram and texture, ``converters.ood.IMAGE_STATISTICS``) and, when the model
    has a ``features`` output [N, D], those features; fitted on the calibration rows,
    threshold from the validation rows (``converters.ood``). A range the caller set in
    ``state["ood"]`` is kept."""
    spec, steps, c = conv.spec, conv.state["steps"], conv.config
    if conv.state.get("ood") and not conv.state.get("ood_by_converter"):
        return conv.state["ood"]  # the caller's own
    reason, fit, section = "", _calibration_rows(conv), None
    held = conv.reference().get(FEATURES_OUTPUT)
    output = FEATURES_OUTPUT if held is not None and held.ndim == 2 else None
    statistics = IMAGE_STATISTICS

    held_statistics = input_statistics(conv.validation.x, statistics, c.mean, c.std)

    def values(features: dict[str, np.ndarray] | None, of: np.ndarray = held_statistics
               ) -> np.ndarray:
        return measured(of, None if output is None or features is None
                        else features[FEATURES_OUTPUT])

    if fit is None:
        reason = "no calibration or training rows to fit it on"
    else:
        try:
            fitted = torch_outputs(conv.source.exportable, spec, fit) if output else None
            floors = spread_floors(statistics, held.shape[1] if output else 0)
            section = fit_validated_range(
                values(fitted, input_statistics(fit, statistics, c.mean, c.std)),
                values(conv.reference()), output=output, spread_floor=floors,
                statistics=statistics)
        except ValueError as exc:
            reason = str(exc)
    if section is None:
        conv.state.pop("ood", None)
        steps["validated_range"] = {"fitted": False, "reason": f"no validated range: {reason}"}
        return None
    conv.state["ood"], conv.state["ood_by_converter"] = section, True
    measures = ([f"the input's intensity histogram and texture ({statistics.size} values)"]
                + ([f"the model's {FEATURES_OUTPUT!r} output ({held.shape[1]} values)"]
                   if output else []))
    if held is not None and output is None:
        measures.append(f"not its {FEATURES_OUTPUT!r} output: {list(held.shape[1:])} per "
                        "image, not [D]")
    steps["validated_range"] = {
        "fitted": True, "output": output, "measures": measures,
        "dimensions": len(section["mean"]), "image_statistics": statistics.size,
        "fit_rows": len(fit), "held_out_rows": len(conv.validation.x),
        "threshold": section["threshold"], "held_out_flagged": section["held_out"]["flagged"],
        "artifacts_flagged": {r.kind: round(flagged_share(values(conv.outputs(r)), section), 4)
                              for r in conv.records()}}
    log.info("validated range: %s", steps["validated_range"])
    return section
