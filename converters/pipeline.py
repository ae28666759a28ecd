"""The conversion chain, one method per step, sharing one working folder.

``chain.run_all(Conversion(config))`` chains distill → prune → export → quantize →
verify → package; each step also runs alone (``clinibox convert prune …``)
and leaves its results in ``OUT/.convert/``: ``state.json`` (what has been
written and measured so far) and ``model.pt`` (the distilled, pruned or
heatmap-wrapped network, a full pickled module, which later steps take instead
of ``--model``). The quantize step and the heatmap and validated range are modules of their
own (``converters.quantize_step``, ``converters.heatmap_step``); their methods here hand over.

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
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters import formats, heatmap_step, quantize_step
from converters.artifacts import ArtifactRecord, open_artifact, run_batch
from converters.benchmark import benchmark, speedups
from converters.box_lists import box_list_head, compare_boxes
from converters.config import ConvertConfig, ConvertConfigError, require
from converters.data import LabelledData, Preprocessing, load_data
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
from converters.image_score import with_image_score
from converters.learning_artifact import write_learning_model
from converters.prune import save_module
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

    def adopt_model(self, source: SourceModel, spec: ModelSpec) -> None:
        """Take ``source`` with ``spec`` as the current model (the heatmap's wrapper),
        forgetting every output and guard band measured of the former one."""
        self._source, self._spec = source, spec
        self._reference = self._calibration_reference = None
        self._outputs.clear()
        self._guard_bands.clear()

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

    # -- heatmap and validated range (converters.heatmap_step) ------------------------------

    def add_heatmap(self) -> dict:
        """Before export: the heatmap where the head allows (:func:`heatmap_step.add_heatmap`)."""
        return heatmap_step.add_heatmap(self)

    def check_heatmap(self) -> dict[str, list[str]]:
        """Every artifact's ``cam`` against captum's Grad-CAM; failures by artifact
        (:func:`heatmap_step.check_heatmap`)."""
        return heatmap_step.check_heatmap(self)

    def fit_range(self) -> dict | None:
        """The validated range (:func:`heatmap_step.fit_range`)."""
        return heatmap_step.fit_range(self)

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
            written.append(self.record_artifact(
                kind, {"method": kind.description,
                       "seconds": round(time.perf_counter() - start, 1)}))
        return written

    def record_artifact(self, kind: formats.ArtifactKind, notes: dict) -> ArtifactRecord:
        """The record of an artifact just written, added to the state."""
        record = ArtifactRecord(
            kind=kind.key, format=kind.format, precision=kind.precision, path=kind.path,
            files=[kind.path, *kind.companions],
            profiles=formats.profiles_of(kind.key, self.config.targets), notes=notes,
            runtime_config=({"INFERENCE_PRECISION_HINT": "f32"}
                            if kind.format == "openvino-ir" else {}))
        self._add(record)
        return record

    # -- quantisation (converters.quantize_step) -------------------------------------------

    def calibration(self) -> np.ndarray:
        """Calibration inputs from the user's data (:func:`quantize_step.calibration`)."""
        return quantize_step.calibration(self)

    def quantize(self) -> list[ArtifactRecord]:
        """INT8 artifacts calibrated on the user's data (:func:`quantize_step.quantize`)."""
        return quantize_step.quantize(self)

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
            broken += quantize_step.kernel_failures(self.out, record, {})
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
        """An INT8 artifact that breaks the gate left out where that is allowed
        (:func:`quantize_step.leave_out_failing_int8`)."""
        return quantize_step.leave_out_failing_int8(self, failures)

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
