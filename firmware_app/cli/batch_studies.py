"""``clinibox infer``'s files rolled up into studies (by Study Instance UID).

A study's assessment, in clinical order (as the worklist bands them):

1. ``finding`` when any image has a finding (``alert`` when any image alerts);
2. otherwise, when any image is ``not_assessable`` or ``outside_validated_range``, that
   assessment (the first of the two in that order): the model gives no result for the
   study as a whole and a doctor must read it, however clear its other images were;
3. otherwise ``no_finding`` when the model judged at least one image;
4. otherwise ``not_analysed`` (no image of it was one the model is meant for).

Its probability is the highest of the images the model gave a result for, shown only
for ``finding`` and ``no_finding``; for the others the highest raw figure is kept as
``probability_not_shown`` (for audit, never shown as a result). Lesions are counted as the
box counts them: a lesion on several slices of a CT or MR series read as a volume once
(``inference/volume.py``), elsewhere per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clinibox_common.contracts.statuses import AssessmentKind, InstanceStatus
from engine.inference.assessment import JUDGED, UNJUDGED, is_judged
from engine.inference.volume import SeriesSlice, series_volume

#: a study no image of which the model analysed
NOT_ANALYSED = InstanceStatus.NOT_ANALYSED


@dataclass
class FileResult:
    """One file's report (the ``--json`` record) and the patient strings of its image, which
    stay out of the JSON and the CSV (the HTML summary names the patient)."""

    report: dict[str, Any]
    display: dict[str, str] = field(default_factory=dict)

    @property
    def processed(self) -> bool:
        """True when the model analysed the image."""
        return self.report["status"] == InstanceStatus.PROCESSED


@dataclass
class StudySummary:
    """One study of the batch, rolled up from its files (the rules of the module)."""

    key: str
    files: list[FileResult] = field(default_factory=list)
    assessment: str = NOT_ANALYSED
    alert: bool = False
    probability: float | None = None
    probability_not_shown: float | None = None
    #: why the box gives no result for the study's unjudged image: reason records
    #: (``contracts/reasons.py``)
    assessment_reason: list[dict[str, Any]] = field(default_factory=list)
    lesions: int = 0
    largest_long_axis_mm: float | None = None
    display: dict[str, str] = field(default_factory=dict)
    #: (file, lesion index in the file) -> the number of the 3-D lesion it is part of (a
    #: series read as a volume; the study's 3-D lesions numbered from 1)
    lesion_3d: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def images(self) -> int:
        """How many of its images the model analysed."""
        return sum(1 for f in self.files if f.processed)

    @property
    def judged(self) -> bool:
        """True when the model gave a result for the study (finding or no finding)."""
        return self.assessment in JUDGED

    def to_dict(self) -> dict[str, Any]:
        """The study as JSON-ready values."""
        return {"study_key": self.key, "assessment": self.assessment, "alert": self.alert,
                "probability": self.probability,
                "probability_not_shown": self.probability_not_shown,
                "assessment_reason": self.assessment_reason, "images": self.images,
                "files": [f.report["file"] for f in self.files], "lesions": self.lesions,
                "largest_long_axis_mm": self.largest_long_axis_mm}


def _roll_up(study: StudySummary) -> None:
    """Fill ``study``'s assessment, probability and lesions from its files."""
    reports = [f.report for f in study.files if f.processed]
    assessments = [r["assessment"] for r in reports]
    judged = [r for r in reports if is_judged(r["assessment"])]
    unjudged = [code for code in UNJUDGED if code in assessments]
    if AssessmentKind.FINDING in assessments:
        study.assessment = AssessmentKind.FINDING
    elif unjudged:
        study.assessment = unjudged[0]
        study.assessment_reason = next(r["assessment_reason"] for r in reports
                                       if r["assessment"] == unjudged[0])
    elif judged:
        study.assessment = AssessmentKind.NO_FINDING
    study.alert = any(r["alert"] for r in reports)
    shown = [r["probability"] for r in judged if r["probability"] is not None]
    if study.judged and shown:
        study.probability = max(shown)
    elif reports:
        raw = [r["probability"] if r["probability"] is not None
               else r.get("probability_not_shown") for r in reports]
        study.probability_not_shown = max((p for p in raw if p is not None), default=None)
    lesions = [lesion for r in reports for lesion in r["lesions"]]
    study.lesions, study.lesion_3d = _lesions_in_3d(reports)
    sizes = [lesion["long_axis_mm"] for lesion in lesions if lesion.get("units") == "mm"
             and lesion.get("long_axis_mm") is not None]
    study.largest_long_axis_mm = max(sizes, default=None)
    study.display = next((f.display for f in study.files if f.display), {})


def _lesions_in_3d(reports: list[dict[str, Any]]
                   ) -> tuple[int, dict[tuple[str, int], int]]:
    """How many lesions the study's images show, a lesion across a series' slices once, and
    which 3-D lesion each lesion of a file is part of."""
    series: dict[str, list[SeriesSlice]] = {}
    for number, report in enumerate(reports):
        lesions = report["lesions"] if report["assessment"] == AssessmentKind.FINDING else []
        series.setdefault(report.get("series_uid") or f"file:{number}", []).append(
            SeriesSlice.from_geometry(number, report.get("geometry"), lesions))
    volumes = [series_volume(slices) for slices in series.values()]
    lesions = [lesion for volume in volumes for lesion in volume.lesions]
    parts = {(reports[part.instance_id]["file"], part.lesion_index): number
             for number, lesion in enumerate(lesions, start=1) for part in lesion.parts}
    return sum(volume.lesion_count for volume in volumes), parts


def roll_up_studies(results: list[FileResult]) -> list[StudySummary]:
    """The studies of ``results`` (files without a study key left out), in order of first
    appearance."""
    studies: dict[str, StudySummary] = {}
    for result in results:
        key = result.report.get("study_key")
        if key:
            studies.setdefault(key, StudySummary(key)).files.append(result)
    for study in studies.values():
        _roll_up(study)
    return list(studies.values())
