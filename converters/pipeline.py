"""The conversion chain, one method per step, sharing one working folder.

``chain.run_all(Conversion(config))`` chains distill → prune → export → quantize →
verify → package; each step also runs alone (``clinibox convert prune …``)
and leaves its results in ``OUT/.convert/``: ``state.json`` (what has been
written and measured so far) and ``model.pt`` (the distilled, pruned or
heatmap-wrapped network, a full pickled module, which later steps take instead
of ``--model``).

Beyond the fidelity gate, a conversion adds what the box needs to explain and
limit the model: a classifier with a pooling + linear head gets a
class-activation map ``cam`` and a ``features`` output (``converters.cam``,
checked against captum's Grad-CAM in verify); a model with a ``features``
output gets its validated range (``converters.ood``); the operating point is
the highest one that keeps ``target_sensitivity`` on validation; and the
package step refuses a model below the floors of ``convert.toml`` unless
``accept_weak_model`` (then the weakness is written into the manifest and the
report).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters import formats
from converters.artifacts import ArtifactRecord, open_artifact, run_batch
from converters.benchmark import benchmark, speedups
from converters.box_lists import (
    box_list_head,
    compare_boxes,
    decode_nodes,
)
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
from converters.config import ConvertConfig, ConvertConfigError, require
from converters.data import DataError, LabelledData, Preprocessing, load_data
from converters.declared_heads import declared_heads
from converters.export import (
    export_onnx,
    export_onnx_fp16,
    export_openvino,
    export_tflite,
    torch_outputs,
)
from converters.federated_round import apply_round, read_run
from converters.federated_round import provenance as federated_provenance
from converters.feedback import appended, load_feedback_cases
from converters.head_cam import GradCamModel, find_pooled_head, wrap
from converters.heatmap_words import outputs_meaning, step_report
from converters.image_score import MaskScore, with_image_score
from converters.int8_kernels import kernel_note, saturation_failures
from converters.learning_artifact import write_learning_model
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
from converters.progress import progress
from converters.prune import save_module
from converters.quantize import (
    check_calibration,
    distance_from_source,
    fallback_plan,
    quantize_onnx,
    quantize_openvino,
    quantize_tflite,
)
from converters.source import SourceModel, load_source
from converters.spec import ModelSpec
from converters.spec_probe import spec_from_config
from converters.training import ClassificationTask, Task, TrainData
from converters.verify import (
    INT8_PRECISIONS,
    Floors,
    Gate,
    GateFailure,
    WeakModelError,
    check_gate,
    choose_threshold,
    compare,
    describe_weakness,
    guard_band,
    lowered_threshold,
    source_metrics,
    weaknesses,
)
from converters.workdir import (
    StaleWorkError,
    differences,
    read_state,
    remove_work,
    run_inputs,
    write_state,
)

log = logging.getLogger("clinibox.convert")
WORK = ".convert"
#: the distance from the source of an INT8 attempt the quantiser could not make: the farthest
NOT_MADE = (math.inf, math.inf, math.inf)


class Conversion:
    """One conversion's working folder, model, data and measurements.

    ``source``, ``data`` and ``task`` may be handed in (the demo model's own
    training does); otherwise they come from the config on first use.
    """

    def __init__(self, config: ConvertConfig, *, source: SourceModel | None = None,
                 data: LabelledData | None = None, task: Task | None = None,
                 spec: ModelSpec | None = None) -> None:
        require(config, "out")
        self.config = config
        self.out = Path(config.out)
        self.work = self.out / WORK
        self.work.mkdir(parents=True, exist_ok=True)
        #: what this run's work depends on (converters.workdir); work made from other
        #: inputs is never reused: the whole chain starts afresh, a single step refuses it
        self.inputs = run_inputs(config, source.files if source is not None else None)
        self.state: dict[str, Any] = read_state(self.work)
        self.stale = ([] if not self._has_work() or self.state.get("inputs") == self.inputs
                      else differences(self.state.get("inputs"), self.inputs))
        if not self.stale:
            self.state["inputs"] = self.inputs
        self._source, self._data, self._task, self._spec = source, data, task, spec
        self._reference: dict[str, np.ndarray] | None = None
        self._outputs: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        #: the source's finding probabilities on the calibration images, and each INT8
        #: artifact's guard band there (artifact_threshold)
        self._calibration_reference: np.ndarray | None = None
        self._guard_bands: dict[tuple[str, int], float] = {}
        self.gate = Gate.from_dict(config.gate)
        self.floors = Floors(config.floor_auc, config.floor_sensitivity)

    # -- shared pieces ---------------------------------------------------------------------

    def _has_work(self) -> bool:
        return bool(self.state.get("steps") or self.state.get("artifacts")
                    or (self.work / "model.pt").exists())

    def start_afresh(self) -> list[str]:
        """Remove the work of an earlier run (its state, ``model.pt`` and the artifact files
        its state lists) so that nothing of it is reused or packaged; returns the removed
        artifacts' paths."""
        removed = remove_work(self.out, self.work, self.state)
        if self._has_work() or removed:
            log.info("removed the work of an earlier run in %s: %s", self.work,
                     ", ".join(removed) or "state")
        self.state = {**read_state(self.work), "inputs": self.inputs}
        self.stale = []
        self._reference = self._calibration_reference = None
        self._outputs.clear()
        self._guard_bands.clear()
        return removed

    def claim(self, step: str) -> None:
        """Refuse to continue work made from other inputs (StaleWorkError naming them)."""
        if self.stale:
            raise StaleWorkError(
                f"{step}: {self.work} holds the work of a run with other inputs ("
                + "; ".join(self.stale) + "). Run the whole chain (clinibox convert), which "
                "starts afresh, or this step with the same options as the earlier ones; "
                "nothing was done")

    def save_state(self) -> None:
        """Write ``state.json`` atomically (with this run's inputs)."""
        self.claim("save")
        self.state["inputs"] = self.inputs
        write_state(self.work, self.state)

    @property
    def source(self) -> SourceModel:
        """The current model: the distilled/pruned one in the work folder, else ``--model``."""
        if self._source is None:
            pruned = self.work / "model.pt"
            if pruned.exists():
                self._source = load_source(str(pruned))
                self._source.reference = self.state.get("source", {}).get(
                    "reference", self._source.reference)
            else:
                require(self.config, "model")
                self._source = load_source(self.config.model, self.config.weights,
                                           self.config.factory_kwargs)
                self.state["source"] = self._source.provenance()
                if self.config.federated_run:
                    record, head = read_run(Path(self.config.federated_run))
                    layer = apply_round(self._source.module, record, head)
                    self.state["federated"] = federated_provenance(record, layer)
            self._source, meanings = with_image_score(self._source, self.config)
            if meanings:
                self.state.setdefault("output_meanings", {}).update(meanings)
        return self._source

    @property
    def spec(self) -> ModelSpec:
        """The model's I/O contract, from the config and one run of the model."""
        if self._spec is None:
            self._spec = spec_from_config(self.config, self.source.module)
        return self._spec

    @property
    def task(self) -> Task:
        """The training objective (classification unless handed in)."""
        if self._task is None:
            self._task = ClassificationTask(self.spec)
        return self._task

    @property
    def data(self) -> LabelledData:
        """Labelled, preprocessed images (loaded once)."""
        if self._data is None:
            require(self.config, "data")
            c = self.config
            prep = Preprocessing(c.preprocessing, self.spec.input_shape, c.mean, c.std,
                                 c.preprocessing_params)
            classes = max(2, len(self.spec.labels)) if self.spec.activation == "softmax" else 2
            self._data = load_data(c.data, c.labels, prep, classes, c.split_fractions(), c.seed)
            if c.extra_validation:
                extra = load_feedback_cases(Path(c.extra_validation), prep)
                self.state["clinic_feedback_cases"] = len(extra)
                log.info("clinic feedback cases: %d (validation only)", len(extra))
                self._data = appended(self._data, extra)
            log.info("data: %s", {s: int((self._data.split == s).sum())
                                  for s in ("train", "calibration", "validation")})
        return self._data

    def _train_data(self) -> TrainData:
        train = self.data.subset("train")
        if len(train) == 0:
            raise ConvertConfigError("distillation and pruning need training rows: add a "
                                     "split column with 'train' rows or set split fractions")
        return TrainData(train.x, {"label": train.labels})

    def _teacher(self) -> torch.nn.Module | None:
        if not self.config.teacher:
            return None
        return load_source(self.config.teacher, self.config.teacher_weights,
                           self.config.teacher_kwargs).module

    def _keep(self, model: torch.nn.Module, step: str, report: dict) -> None:
        save_module(model, self.work / "model.pt")
        self._source = SourceModel(model.eval(), "pickled",
                                   self.state.get("source", {}).get("reference", step), {})
        self._reference = self._calibration_reference = None
        self._guard_bands.clear()
        self.state["steps"][step] = report
        self.state["artifacts"], self.state["metrics"] = [], {}
        self.save_state()

    @property
    def validation(self) -> LabelledData:
        """The validation rows every artifact is verified on."""
        val = self.data.subset("validation")
        if len(val) < 2 or len(np.unique(self.spec.finding_targets(val.labels))) < 2:
            raise ConvertConfigError("validation needs images with and without findings")
        return val

    def reference(self) -> dict[str, np.ndarray]:
        """The PyTorch source's outputs on the validation rows (computed once)."""
        if self._reference is None:
            self._reference = torch_outputs(self.source.exportable, self.spec,
                                            self.validation.x)
        return self._reference

    def threshold(self) -> float:
        """The operating threshold: the config's ``thresholds.finding``, else the source
        model's highest operating point on validation that keeps ``target_sensitivity``
        (:func:`converters.verify.choose_threshold`)."""
        if "finding" in self.config.thresholds:
            return float(self.config.thresholds["finding"])
        probs = self.spec.finding_probability(self.reference()[self.spec.score_output])
        return choose_threshold(self.spec.finding_targets(self.validation.labels), probs,
                                self.config.target_sensitivity)

    def threshold_rule(self) -> str:
        """How :meth:`threshold` chose the operating threshold, in words."""
        if "finding" in self.config.thresholds:
            return "config (thresholds.finding)"
        return (f"validation: the highest operating point at which the source model's "
                f"sensitivity is at least {self.config.target_sensitivity:g} (the threshold "
                "midway below the last positive it keeps)")

    def records(self) -> list[ArtifactRecord]:
        """Artifacts written so far."""
        return [ArtifactRecord.from_dict(a) for a in self.state["artifacts"]]

    def _add(self, record: ArtifactRecord) -> None:
        self.state["artifacts"] = [a for a in self.state["artifacts"] if a["kind"] != record.kind]
        self.state["artifacts"].append(record.to_dict())
        self.save_state()

    def outputs(self, record: ArtifactRecord) -> dict[str, np.ndarray]:
        """The artifact's outputs on validation through the box's backend; computed once per
        written file (quantize, verify and the report all need them)."""
        key = (record.kind, (self.out / record.path).stat().st_mtime_ns)
        if key not in self._outputs:
            backend = open_artifact(self.out, record, self.spec)
            try:
                self._outputs[key] = run_batch(backend, self.spec, self.validation.x)
            finally:
                backend.close()
        return self._outputs[key]

    def measure(self, record: ArtifactRecord) -> dict:
        """Compare one artifact's outputs on validation with the PyTorch source's, each at
        its own operating threshold (:meth:`artifact_threshold`)."""
        metrics = compare(self.spec, self.validation.labels, self.reference(),
                          self.outputs(record), self.threshold(),
                          artifact_threshold=self.artifact_threshold(record))
        head = box_list_head(self.config.heads)
        if head is not None:  # a detector's final boxes, after the box's own NMS
            size = self.spec.input_shape[2:]
            metrics["boxes"] = compare_boxes(head, (float(size[0]), float(size[1])),
                                             self.reference(), self.outputs(record),
                                             self.config.thresholds.get("box"))
        return metrics

    def artifact_threshold(self, record: ArtifactRecord) -> float:
        """The finding threshold an artifact runs at: the package's, but for an INT8
        artifact (``int8_guard_band``) lowered just enough that it calls a finding on every
        calibration image the source calls one (``verify.guard_band``; the calibration
        images, never the validation ones): sensitivity first, at a specificity the gate
        measures. Recorded in ``state["artifact_thresholds"]``."""
        threshold = self.threshold()
        if record.precision not in INT8_PRECISIONS or not self.config.int8_guard_band:
            return threshold
        calib, spec = self.calibration(), self.spec
        if self._calibration_reference is None:
            self._calibration_reference = spec.finding_probability(
                torch_outputs(self.source.exportable, spec, calib)[spec.score_output])
        key = (record.kind, (self.out / record.path).stat().st_mtime_ns)
        if key not in self._guard_bands:
            backend = open_artifact(self.out, record, spec)
            try:
                scores = run_batch(backend, spec, calib)[spec.score_output]
            finally:
                backend.close()
            self._guard_bands[key] = guard_band(self._calibration_reference,
                                                spec.finding_probability(scores), threshold)
        band = self._guard_bands[key]
        own = lowered_threshold(threshold, band)
        self.state.setdefault("artifact_thresholds", {})[record.kind] = {
            "finding": own, "guard_band_logit": round(band, 4), "calibration_images": len(calib)}
        return own

    # -- steps -----------------------------------------------------------------------------

    def distill(self) -> dict:
        """Train ``--model`` (the student) from ``--teacher`` on the training rows."""
        self.claim("distill")
        from converters.distill import distill

        teacher = self._teacher()
        if teacher is None:
            raise ConvertConfigError("distill needs --teacher (the trained model)")
        c = self.config
        student, report = distill(teacher, copy.deepcopy(self.source.module), self._train_data(),
                                  self.task, self.spec, epochs=c.distill_epochs,
                                  temperature=c.temperature, alpha=c.alpha, lr=c.lr,
                                  max_mac_ratio=c.max_student_mac_ratio)
        self._keep(student, "distill", report)
        return report

    def prune(self) -> dict:
        """Structured channel pruning to ``--prune`` of the MACs, then a guided fine-tune."""
        self.claim("prune")
        from converters.prune import fine_tune, prune

        c = self.config
        require(c, "prune")
        original = self.source.module
        pruned, report = prune(original, self.spec, target_mac_ratio=float(c.prune),
                               round_to=c.prune_round_to)
        teacher = self._teacher() or original
        pruned = fine_tune(pruned, self._train_data(), self.task, self.spec, teacher=teacher,
                           epochs=c.finetune_epochs, temperature=c.temperature, alpha=c.alpha)
        report["finetune_epochs"] = c.finetune_epochs
        self._keep(pruned, "prune", report)
        return report

    # -- heatmap and validated range --------------------------------------------------------

    def _calibration_rows(self) -> np.ndarray | None:
        """The rows the validated range is fitted on: calibration, else training rows (None
        without data)."""
        try:
            data = self.data
        except (ConvertConfigError, DataError):
            return None
        for split in ("calibration", "train"):
            rows = data.subset(split).x[: self.config.calibration_size]
            if len(rows):
                return rows
        return None

    def add_heatmap(self) -> dict:
        """Before export: wrap a classifier whose head is global average pooling + a linear
        layer in :class:`converters.cam.CamModel`, which adds ``cam`` and ``features``; one
        with more layers after the pool (``converters.head_cam``: timm's and torchvision's
        MobileNetV3) in :class:`converters.head_cam.GradCamModel` (Grad-CAM in the graph).

        Any other model keeps its outputs and ``steps["heatmap"]`` says why. The wrapped
        network is kept in the work folder for the later steps.
        """
        c, module = self.config, self.source.module
        if isinstance(module, CamModel) or not c.heatmap or c.task != "classification":
            return self.state["steps"].get("heatmap", {})
        spec = self.spec
        reason = ""
        if {CAM_OUTPUT, FEATURES_OUTPUT} & set(spec.output_names):
            reason = "the model has its own 'cam' or 'features' output"
        elif self.source.program is not None or not self.source.trainable:
            reason = (f"a {self.source.kind} model cannot be wrapped; hand the eager module "
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
            self.state["steps"]["heatmap"] = report
            self.save_state()
            return report
        head = search.head
        assert head is not None
        wrapper = wrap(module, head, spec.output_names)
        gradient = isinstance(wrapper, GradCamModel)
        wrapped = dataclasses.replace(spec, output_names=(*spec.output_names,
                                                          *CamModel.added_outputs))
        rows = self._calibration_rows()
        size = projection_size(head.channels, 0 if rows is None else len(rows),
                               reserved=IMAGE_STATISTICS.size)
        if size:
            pooled = torch_outputs(wrapper, wrapped, rows)[FEATURES_OUTPUT]
            wrapper.set_projection(*fit_projection(pooled, size))
        save_module(wrapper, self.work / "model.pt")
        old = self.source
        self._source = SourceModel(wrapper, old.kind, old.reference, old.files)
        self._spec, self._reference, self._calibration_reference = wrapped, None, None
        self._outputs.clear()
        self._guard_bands.clear()
        self.state.setdefault("output_meanings", {}).update(
            outputs_meaning(head, gradient, size, 0 if rows is None else len(rows)))
        report = step_report(head, wrapper.feature_size, gradient, size)
        self.state["steps"]["heatmap"] = report
        self.save_state()
        log.info("heatmap: %s", report)
        return report

    def check_heatmap(self) -> dict[str, list[str]]:
        """Every artifact's ``cam`` against captum's Grad-CAM of the source on validation
        images (float artifacts must correlate ≥ ``MIN_CORRELATION``); failures by artifact."""
        module = self.source.module
        if not isinstance(module, CamModel):
            return {}
        val = self.validation
        count = min(len(val), 32)
        score = self.spec.score_output
        reference = grad_cam(module.model, module.head, val.x[:count],
                             lambda r: named_outputs(r, module.output_names)[score],
                             module.head.classes)
        measured = {"PyTorch source": grad_cam_agreement(self.reference()[CAM_OUTPUT][:count],
                                                         reference)}
        failures: dict[str, list[str]] = {}
        for record in self.records():
            agreement = grad_cam_agreement(self.outputs(record)[CAM_OUTPUT][:count], reference)
            measured[record.kind] = agreement
            low = agreement["min"] is not None and agreement["min"] < MIN_CORRELATION
            if low and record.precision != "int8":
                failures[f"{record.format} {record.precision} ({record.path})"] = [
                    f"its class-activation map correlates {agreement['min']:.4f} with captum's "
                    f"Grad-CAM (at least {MIN_CORRELATION} required)"]
        self.state["steps"].setdefault("heatmap", {})["grad_cam"] = {
            "reference": f"captum LayerGradCam on {module.head.feature_path!r}, every class",
            "images": count, "min_correlation_required": MIN_CORRELATION,
            "correlation": measured}
        log.info("heatmap vs Grad-CAM: %s", {k: v["min"] for k, v in measured.items()})
        return failures

    def fit_range(self) -> dict | None:
        """The validated range: what the input looks like as a whole (its intensity
        histogram and texture, ``converters.ood.IMAGE_STATISTICS``) and, when the model
        has a ``features`` output [N, D], those features; fitted on the calibration rows,
        threshold from the validation rows (``converters.ood``). A range the caller set in
        ``state["ood"]`` is kept."""
        spec, steps, c = self.spec, self.state["steps"], self.config
        if self.state.get("ood") and not self.state.get("ood_by_converter"):
            return self.state["ood"]  # the caller's own
        reason, fit, section = "", self._calibration_rows(), None
        held = self.reference().get(FEATURES_OUTPUT)
        output = FEATURES_OUTPUT if held is not None and held.ndim == 2 else None
        statistics = IMAGE_STATISTICS

        held_statistics = input_statistics(self.validation.x, statistics, c.mean, c.std)

        def values(features: dict[str, np.ndarray] | None, of: np.ndarray = held_statistics
                   ) -> np.ndarray:
            return measured(of, None if output is None or features is None
                            else features[FEATURES_OUTPUT])

        if fit is None:
            reason = "no calibration or training rows to fit it on"
        else:
            try:
                fitted = torch_outputs(self.source.exportable, spec, fit) if output else None
                floors = spread_floors(statistics, held.shape[1] if output else 0)
                section = fit_validated_range(
                    values(fitted, input_statistics(fit, statistics, c.mean, c.std)),
                    values(self.reference()), output=output, spread_floor=floors,
                    statistics=statistics)
            except ValueError as exc:
                reason = str(exc)
        if section is None:
            self.state.pop("ood", None)
            steps["validated_range"] = {"fitted": False, "reason": f"no validated range: {reason}"}
            return None
        self.state["ood"], self.state["ood_by_converter"] = section, True
        measures = ([f"the input's intensity histogram and texture ({statistics.size} values)"]
                    + ([f"the model's {FEATURES_OUTPUT!r} output ({held.shape[1]} values)"]
                       if output else []))
        if held is not None and output is None:
            measures.append(f"not its {FEATURES_OUTPUT!r} output: {list(held.shape[1:])} per "
                            "image, not [D]")
        steps["validated_range"] = {
            "fitted": True, "output": output, "measures": measures,
            "dimensions": len(section["mean"]), "image_statistics": statistics.size,
            "fit_rows": len(fit), "held_out_rows": len(self.validation.x),
            "threshold": section["threshold"], "held_out_flagged": section["held_out"]["flagged"],
            "artifacts_flagged": {r.kind: round(flagged_share(values(self.outputs(r)), section), 4)
                                  for r in self.records()}}
        log.info("validated range: %s", steps["validated_range"])
        return section

    def declare_heads(self) -> list[dict[str, Any]]:
        """``config.heads``, set here and only here (``converters.declared_heads``)."""
        self.config.heads = declared_heads(
            self.config.heads, self.spec, self.config.postprocessing,
            bool(self.state["steps"].get("heatmap", {}).get("added")))
        return self.config.heads

    def check_floors(self) -> list[dict]:
        """The figures below the floors; WeakModelError unless ``accept_weak_model``, which
        records them in ``state["weakness"]`` for the manifest and the report."""
        found = weaknesses(self.state.get("source_metrics", {}), self.state["metrics"],
                           self.floors)
        if found and not self.config.accept_weak_model:
            raise WeakModelError(found)
        self.state["weakness"] = [{**w, "accepted_by": "the operator (--accept-weak-model)"}
                                  for w in found]
        for entry in found:
            log.warning("accepted by the operator: %s", describe_weakness(entry))
        return self.state["weakness"]

    # -- export and the rest -------------------------------------------------------------

    def export(self) -> list[ArtifactRecord]:
        """A heatmap where the head allows (:meth:`add_heatmap`), then FP32 ONNX, then every
        float artifact the targets need."""
        self.claim("export")
        self.add_heatmap()
        c, model = self.config, self.source.exportable
        kinds = [k for k in formats.kinds_for(c.targets) if k.precision != "int8"]
        written = []
        for kind in kinds:
            start = time.perf_counter()
            path = self.out / kind.path
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind.key == "onnx-fp32":
                self._spec = export_onnx(model, self.spec, path)
                self.state["spec"] = self._spec.to_dict()
                self.state["learning"] = (
                    write_learning_model(self.out, path, self._spec, self.validation.x)
                    if self.config.data else
                    {"skipped": "no validation images in this step to recover the pool's "
                                "sharpness from"})
            elif kind.key == "onnx-fp16":
                export_onnx_fp16(self.out / formats.KINDS["onnx-fp32"].path, path)
            elif kind.format == "openvino-ir":
                export_openvino(self.out / formats.KINDS["onnx-fp32"].path, path, self.spec)
            elif kind.format == "tflite":
                export_tflite(model, self.spec, path)
            written.append(self._record(kind, {"method": kind.description,
                                               "seconds": round(time.perf_counter() - start, 1)}))
        return written

    def _record(self, kind: formats.ArtifactKind, notes: dict) -> ArtifactRecord:
        record = ArtifactRecord(
            kind=kind.key, format=kind.format, precision=kind.precision, path=kind.path,
            files=[kind.path, *kind.companions],
            profiles=formats.profiles_of(kind.key, self.config.targets), notes=notes,
            runtime_config=({"INFERENCE_PRECISION_HINT": "f32"}
                            if kind.format == "openvino-ir" else {}))
        self._add(record)
        return record

    def calibration(self) -> np.ndarray:
        """Calibration inputs from the user's data (at most ``calibration_size``)."""
        calib = self.data.subset("calibration").x[: self.config.calibration_size]
        try:
            return check_calibration(calib, self.spec)
        except ValueError as exc:
            raise DataError(f"calibration data: {exc}") from exc

    def _quantize_once(self, kind: formats.ArtifactKind, calib: np.ndarray,
                       keep: list[str]) -> dict:
        out = self.out / kind.path
        out.parent.mkdir(parents=True, exist_ok=True)
        fp32 = self.out / formats.KINDS["onnx-fp32"].path
        if kind.format == "onnx" and box_list_head(self.config.heads) is not None:
            # a detector's decode (after its last weighted layers) stays float
            keep = [*keep, *(n for n in decode_nodes(fp32, list(self.spec.output_names))
                             if n not in keep)]
        if kind.format == "onnx":
            return quantize_onnx(fp32, out, calib, self.spec, symmetric=kind.key.endswith("trt"),
                                 keep_float=keep)
        if kind.format == "openvino-ir":
            return quantize_openvino(self.out / formats.KINDS["openvino-fp32"].path, out, calib,
                                     self.spec, keep_float=keep)
        return quantize_tflite(self.source.exportable, self.spec, calib, out, keep_float=keep)

    def _kernel_failures(self, record: ArtifactRecord, notes: dict) -> list[str]:
        """An INT8 ONNX artifact must not saturate on CPUs without VNNI (int8_kernels.py);
        the check's findings go into ``notes``."""
        if record.format != "onnx" or record.precision != "int8":
            return []
        path = self.out / record.path
        notes["kernels"] = kernel_note(path)
        return saturation_failures(path)

    def quantize(self) -> list[ArtifactRecord]:
        """INT8 artifacts calibrated on the user's data; while one breaks the gate, quantise
        again with the next set of sensitive layers kept in float. When every set breaks it,
        the attempt that came closest is the one left (and reported by ``verify``), not the
        last one tried: keeping more layers in float does not always bring the artifact
        nearer its source."""
        self.claim("quantize")
        calib = self.calibration()
        if not (self.out / formats.KINDS["onnx-fp32"].path).exists():
            raise ConvertConfigError("quantize needs the FP32 export: run the export step first")
        self.state["quantiser_failed"] = []
        written = []
        for kind in [k for k in formats.kinds_for(self.config.targets) if k.precision == "int8"]:
            plans: list[list[str]] = [[]]
            if self.config.float_fallback:
                plans += fallback_plan(kind, fp32_onnx=self.out / formats.KINDS["onnx-fp32"].path,
                                       model=self.source.exportable, spec=self.spec,
                                       calibration=calib)
            attempts, distances = [], []
            with progress(f"quantize {kind.key}", total=len(plans)) as bar:
                for keep in plans:
                    start = time.perf_counter()
                    try:
                        notes = self._quantize_once(kind, calib, keep)
                    except Exception as exc:  # the quantiser's own failure on this model
                        attempts.append({"kept_float": keep, "failures": [
                            f"the quantiser failed: {str(exc).splitlines()[0][:300]}"],
                            "seconds": round(time.perf_counter() - start, 1)})
                        distances.append(NOT_MADE)
                        bar.advance(1)
                        continue
                    record = self._record(kind, notes)
                    metrics = self.measure(record)
                    failures = check_gate(metrics, kind.precision, self.gate)
                    failures += self._kernel_failures(record, notes)
                    attempts.append({"kept_float": keep, "failures": failures,
                                     "seconds": round(time.perf_counter() - start, 1)})
                    distances.append(distance_from_source(failures, metrics))
                    bar.advance(1)
                    bar.note(f"{kind.key}: {len(keep)} layers float, "
                             f"{'passes' if not failures else 'fails'} the gate")
                    if not failures:
                        break
            if all(d == NOT_MADE for d in distances):
                self._quantiser_failed(kind, attempts)
                continue
            closest = distances.index(min(distances))
            if attempts[-1]["failures"] and closest != len(attempts) - 1:
                notes = self._quantize_once(kind, calib, plans[closest])  # deterministic
                log.info("%s: no plan passes the gate; keeping the closest (%d layers float)",
                         kind.key, len(plans[closest]))
            notes["attempts"] = attempts
            written.append(self._record(kind, notes))
        return written

    def _quantiser_failed(self, kind: formats.ArtifactKind, attempts: list[dict]) -> None:
        """No INT8 artifact of ``kind`` could be made: with ``int8_optional`` (or for a
        segmenter) it is left out with the quantiser's reason, as one that breaks the gate;
        otherwise ConvertConfigError says so and what to do."""
        (self.out / kind.path).unlink(missing_ok=True)
        profiles = formats.profiles_of(kind.key, self.config.targets)
        reason = attempts[0]["failures"][0]
        if not (self.config.int8_optional or isinstance(self.source.module, MaskScore)):
            raise ConvertConfigError(
                f"{kind.key} ({kind.path}): {reason} (with {len(attempts)} sets of layers "
                f"kept in float). The float artifacts are not affected: leave out the "
                f"target profile(s) {', '.join(profiles)}, or set int8_optional = true in "
                f"convert.toml to package them without this INT8 artifact")
        self.state.setdefault("quantiser_failed", []).append({
            "kind": kind.key, "format": kind.format, "precision": kind.precision,
            "path": kind.path, "profiles": profiles, "failures": [reason],
            "attempts": len(attempts), "kept_float": [len(a["kept_float"]) for a in attempts],
            "reason": "the quantiser could not make this INT8 artifact; the profiles run "
                      "its float artifact"})
        self.save_state()
        log.warning("left out %s: %s", kind.path, reason)

    def verify(self) -> dict[str, dict]:
        """Every artifact against the PyTorch source on validation; benchmark each; check
        the heatmap against Grad-CAM and fit the validated range; raise GateFailure naming
        every artifact that breaks the gate."""
        self.claim("verify")
        records = self.records()
        if not records:
            raise ConvertConfigError("nothing to verify: run the export step first")
        failures, threshold = {}, self.threshold()
        self.state["threshold"] = threshold
        self.state["source_metrics"] = source_metrics(self.spec, self.validation.labels,
                                                       self.reference(), threshold)
        for record in records:
            metrics = self.measure(record)
            self.state["metrics"][record.kind] = metrics
            self.state["benchmarks"][record.kind] = benchmark(self.out, record, self.spec)
            broken = check_gate(metrics, record.precision, self.gate)
            broken += self._kernel_failures(record, {})
            if broken:
                failures[f"{record.format} {record.precision} ({record.path})"] = broken
            log.info("%s: %s", record.path, {k: metrics[k] for k in ("auc", "sensitivity",
                                                                   "decision_agreement")})
        for kind, speed in speedups(records, self.state["benchmarks"]).items():
            self.state["benchmarks"][kind].update(speed)  # against its own runtime's FP32
            if speed["slower_than_fp32"]:
                log.warning("%s is slower than %s on this CPU (%.2f times its speed); the box "
                            "times its candidates itself and keeps the faster", kind,
                            speed["fp32_source"], speed["speedup_vs_fp32"])
        self.leave_out_failing_int8(failures)
        for label, broken in self.check_heatmap().items():
            failures.setdefault(label, []).extend(broken)
        self.fit_range()
        for entry in weaknesses(self.state["source_metrics"], self.state["metrics"],
                                self.floors):
            log.warning("below the floor: %s", describe_weakness(entry))
        self.state["gate_failures"] = failures
        self.save_state()
        if failures:
            raise GateFailure(failures)
        return self.state["metrics"]

    def leave_out_failing_int8(self, failures: dict[str, list[str]]) -> list[dict]:
        """A segmenter's INT8 artifact that still breaks the gate after the float fallback
        is left out of the package when every float artifact passes (each profile keeps its
        float artifact): its files, record and measurements are removed, and why it was
        left out is kept in ``state["left_out"]`` for the manifest and the report, instead
        of failing the conversion (issue 55: TFLite INT8 of a softmax segmenter). So is any
        model's with ``int8_optional``; otherwise a broken gate fails the run. ``failures``
        loses the artifacts left out."""
        self.state["left_out"] = left = list(self.state.get("quantiser_failed") or [])
        records = self.records()
        labels = {r.kind: f"{r.format} {r.precision} ({r.path})" for r in records}
        segmenter = isinstance(self.source.module, MaskScore)
        if (not (segmenter or self.config.int8_optional)
                or any(labels[r.kind] in failures for r in records
                       if r.precision not in INT8_PRECISIONS)):
            return left
        for record in records:
            if record.precision not in INT8_PRECISIONS or labels[record.kind] not in failures:
                continue
            attempts = record.notes.get("attempts") or []
            left.append({"kind": record.kind, "format": record.format,
                         "precision": record.precision, "path": record.path,
                         "profiles": record.profiles, "failures": failures.pop(
                             labels[record.kind]),
                         "attempts": len(attempts),
                         "kept_float": [len(a.get("kept_float") or []) for a in attempts],
                         "reason": ("a segmenter's" if segmenter else "an int8_optional")
                         + " INT8 artifact that breaks the fidelity gate is left out; the "
                           "profiles run its float artifact"})
            for name in record.files:
                (self.out / name).unlink(missing_ok=True)
            self.state["artifacts"] = [a for a in self.state["artifacts"]
                                       if a["kind"] != record.kind]
            for section in ("metrics", "benchmarks", "artifact_thresholds"):
                (self.state.get(section) or {}).pop(record.kind, None)
            log.warning("left out %s: %s", record.path, "; ".join(left[-1]["failures"]))
        return left

    def add_stage(self) -> dict | None:
        """The ``[stage]`` of the config, exported, checked on crops of the validation
        images and declared (``converters/stage.py``); None without one."""
        self.claim("add_stage")
        from converters.stage import package_configured_stage

        if not self.config.stage:
            return None
        val = self.data.subset("validation")
        images = [row[0] * self.config.std + self.config.mean for row in val.x[:32]]
        section = package_configured_stage(self.config.stage, self.out, self.config.targets,
                                           images, log.info)
        self.state["stages"] = [section]
        self.save_state()
        return section
