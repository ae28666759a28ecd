"""Run the model on one display-ready frame: preprocess → backend → postprocess.

Everything model-specific comes from the package manifest (preprocessing and
postprocessing names, input shape, normalisation, thresholds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from clinibox_common.contracts.manifest import ModelPackage
from clinibox_common.contracts.reasons import Reason, ReasonCode
from clinibox_common.contracts.statuses import AssessmentKind
from engine.imaging.decode import DecodedImage
from engine.imaging.preprocess import get_preprocessor
from engine.imaging.quality import (
    check_quality,
    grey_statistics,
    size_warnings,
)
from engine.inference import hotspot
from engine.inference.aggregate import InstanceFindings, aggregate_frames
from engine.inference.assessment import frame_blockers
from engine.inference.heads import decoder_for
from engine.inference.postprocess import FrameFindings
from engine.inference.stage import LesionStage
from engine.inference.tracking import track_lesions
from engine.inference.validated_range import (
    RangeGuard,
    RangeScore,
    instance_outside,
    outside_reason,
)
from engine.runtime.base import RuntimeBackend


@dataclass
class Analysis:
    """Everything the box concludes about one decoded instance."""

    findings: InstanceFindings
    #: the instance's quality warnings (and the heatmap's), one per code, as reasons
    warnings: list[Reason]
    frames_inferred: int
    timings: dict[str, float]
    #: mean and standard deviation of the inferred frames' grey values (drift figures)
    intensity: tuple[float, float] = (0.0, 0.0)


class ModelRunner:
    """A loaded model package ready to infer frames (with its second stage, when the
    package declares one: ``inference/stage.py``), judged at the operating thresholds of
    the artifact that runs."""

    def __init__(self, package: ModelPackage, backend: RuntimeBackend, artifact_label: str,
                 stage: LesionStage | None = None,
                 thresholds: dict[str, float] | None = None):
        self.package = package
        self.stage = stage
        self.backend = backend
        self.artifact_label = artifact_label
        manifest = package.manifest
        self.spec = package.input
        self.pre_params = manifest["preprocessing"].get("params", {})
        self.preprocess = get_preprocessor(manifest["preprocessing"]["name"])
        self.decoder = decoder_for(manifest)
        self.guard = RangeGuard.from_manifest(manifest)
        #: the operating thresholds of the artifact that runs (``thresholds_for``)
        self.thresholds = package.thresholds if thresholds is None else dict(thresholds)
        #: those thresholds as the package ships them (a clinic may set its own finding
        #: threshold in ``thresholds``: firmware_app/models/calibration.py)
        self.shipped_thresholds = dict(self.thresholds)
        #: the running artifact's validation figures (``artifacts[].validation``; set by the
        #: loader, empty when unknown)
        self.validation: dict[str, Any] = {}
        #: whether this runtime is a fallback: the one chosen first failed the golden cases
        self.fell_back = False

    @property
    def backend_label(self) -> str:
        """e.g. ``onnxruntime:onnx/int8``, stored with every result (with the second stage's,
        ``… + onnxruntime:onnx/fp32``, when there is one)."""
        label = f"{self.backend.key}:{self.artifact_label}"
        return f"{label} + {self.stage.backend_label}" if self.stage is not None else label

    def close(self) -> None:
        """Release the runtimes (the stage's too)."""
        self.backend.close()
        if self.stage is not None:
            self.stage.close()

    def run(self, image: np.ndarray, refine: bool = True
            ) -> tuple[FrameFindings, dict[str, float]]:
        """Infer one grey [0,1] frame; return findings and per-stage milliseconds.

        With a validated range, ``findings.range_score`` says how far the frame
        lies from the data the model was validated on. ``refine`` False leaves the
        second stage out (``analyse`` runs it only on the frames that count)."""
        t0 = time.perf_counter()
        tensor, transform = self.preprocess(
            image, self.spec.shape, self.spec.mean, self.spec.std, self.pre_params
        )
        t1 = time.perf_counter()
        outputs = self.backend.infer({self.spec.name: tensor})
        t2 = time.perf_counter()
        findings = self.decoder.decode(outputs, transform)
        if self.guard is not None:
            findings.range_score = self.guard.score(outputs, tensor)
        t3 = time.perf_counter()
        if refine and self.stage is not None and findings.boxes:
            findings.boxes = self.stage.refine(image, findings.boxes)
        t4 = time.perf_counter()
        return findings, {
            "preprocess": (t1 - t0) * 1000,
            "inference": (t2 - t1) * 1000,
            "postprocess": (t3 - t2) * 1000,
            "stage": (t4 - t3) * 1000,
        }

    def analyse(self, decoded: DecodedImage, min_rows: int) -> Analysis:
        """Quality-check and infer every decoded frame, then aggregate to the instance.

        Only frames whose quality allows a judgement and that lie within the
        model's validated range count towards the verdict. When no frame can be
        judged, the instance is ``not_assessable`` with its reason; when at
        least half of its judged frames lie outside the range, it is
        ``outside_validated_range``.
        Either way: no finding, no alert, no lesion and no heatmap, whatever the
        model answered (its probability is kept for the record, never shown). The same lesion in
        several frames is one lesion (``inference/tracking.py``).
        """
        frames, judged = [], []
        means, stds = [], []
        warnings: dict[ReasonCode, Reason] = {}
        blocked: dict[ReasonCode, Reason] = {}
        timings = {"quality": 0.0, "preprocess": 0.0, "inference": 0.0, "postprocess": 0.0,
                   "stage": 0.0}
        measured = decoded.frame_warnings is not None and decoded.frame_grey is not None
        for position, index in enumerate(decoded.frame_indices):
            image = decoded.frames[position]
            t0 = time.perf_counter()
            if measured:  # by the decoder, as it decoded the frame
                mean, std = decoded.frame_grey[position]
                quality = size_warnings(decoded.rows, decoded.columns, min_rows) + [
                    Reason(ReasonCode(code)) for code in decoded.frame_warnings[position]]
            else:
                mean, std = grey_statistics(image)
                quality = check_quality(image, decoded.rows, decoded.columns, min_rows)
            means.append(mean)
            stds.append(std)
            blockers = frame_blockers([w.code for w in quality])
            for warning in quality:
                warnings.setdefault(warning.code, warning)
                if warning.code in blockers:
                    blocked.setdefault(warning.code, warning)
            timings["quality"] += (time.perf_counter() - t0) * 1000
            findings, stage_ms = self.run(image, refine=False)
            for stage, ms in stage_ms.items():
                timings[stage] += ms
            frames.append((index, findings))
            if not blockers:
                judged.append((index, findings))
        instance = self._judge(frames, judged, blocked, decoded, timings)
        if instance.heatmap is not None and hotspot.hot_spot_on_annotation(
                decoded.frames[decoded.frame_indices.index(instance.key_frame)],
                instance.heatmap, decoded.modality):
            warnings.setdefault(hotspot.WARNING.code, hotspot.WARNING)
        return Analysis(
            findings=instance,
            warnings=list(warnings.values()),
            frames_inferred=len(frames),
            timings=timings,
            intensity=(float(np.mean(means)), float(np.mean(stds))),
        )

    def _refine(self, in_range: list[tuple[int, FrameFindings]], decoded: DecodedImage
                ) -> float:
        """The second stage on the lesions of the frames that count (judged and in the
        validated range: no other frame's lesion is ever reported); its milliseconds."""
        if self.stage is None:
            return 0.0
        start = time.perf_counter()
        images = dict(zip(decoded.frame_indices, decoded.frames, strict=True))
        for index, findings in in_range:
            if findings.boxes:
                findings.boxes = self.stage.refine(images[index], findings.boxes)
        return (time.perf_counter() - start) * 1000

    def _judge(self, frames: list[tuple[int, FrameFindings]],
               judged: list[tuple[int, FrameFindings]], blocked: dict[ReasonCode, Reason],
               decoded: DecodedImage, timings: dict[str, float]) -> InstanceFindings:
        """The instance's findings from its frames: judged, in range, refined by the second
        stage, tracked."""
        scores: list[RangeScore] = [f.range_score for _, f in judged if f.range_score]
        in_range = [] if instance_outside(scores) else [
            (i, f) for i, f in judged if f.range_score is None or not f.range_score.outside]
        timings["stage"] += self._refine(in_range, decoded)
        instance = aggregate_frames(in_range or judged or frames, self.thresholds)
        if in_range:
            instance.lesions = track_lesions(in_range, instance.key_frame,
                                             decoded.pixel_spacing, instance.classes)
        else:
            # no result: no finding, no lesion and no heatmap to show (the probability is
            # kept for the record, never shown: ``inference/assessment.shown_probability``)
            instance.finding = instance.alert = False
            instance.boxes, instance.lesions, instance.heatmap = [], [], None
            if judged:
                instance.assessment = AssessmentKind.OUTSIDE_VALIDATED_RANGE
                instance.assessment_reason = [outside_reason(scores)]
            else:
                instance.assessment = AssessmentKind.NOT_ASSESSABLE
                instance.assessment_reason = list(blocked.values())
        return instance
