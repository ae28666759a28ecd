"""``clinibox infer --csv FILE``: one row per study, per lesion and per file without a result.

``row_type`` says which: ``study`` (the study rolled up: ``cli/batch_studies.py``),
``lesion`` (one lesion of one image; ``lesion_3d``: the number of the study's 3-D lesion it
is part of, where its series is read as a volume, so a lesion on six slices is six rows of
one ``lesion_3d``) or ``problem`` (a path or file that gave no
result: ``status`` and ``reason`` say why). Codes and numbers, never words in a
language: ``assessment`` is the box's code, ``assessment_reason`` and a problem's
``reason`` the box's reason codes (``contracts/reasons.py``, "; " between two);
``probability`` is empty where the model gives no result (``not_assessable``,
``outside_validated_range``), the raw figure then in ``probability_not_shown``, for
audit only. Sizes in mm are empty when the image has no calibration (``units`` =
``px``); ``truth`` is the study's label from ``--labels`` (empty without). No patient
names. A text cell that a spreadsheet would run as a formula (starting ``=``, ``+``,
``-``, ``@``) is written with a leading ``'``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clinibox_common.contracts.reasons import from_records
from clinibox_common.contracts.statuses import InstanceStatus
from firmware_app.cli.batch_studies import FileResult, StudySummary

COLUMNS = (
    "row_type", "study_key", "file", "series_uid", "instance_uid", "modality", "status",
    "assessment", "alert", "probability", "probability_not_shown", "assessment_reason",
    "images", "lesions", "lesion", "lesion_3d", "lesion_label", "long_axis_mm",
    "short_axis_mm", "area_mm2",
    "long_axis_px", "short_axis_px", "units", "size_from", "truth", "reason",
)


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{round(float(value), digits)}"


def _text(value: object) -> str:
    """``value`` as a cell a spreadsheet shows as text, never runs as a formula."""
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _reason_cell(value: object) -> str:
    """The box's reasons as their codes ("blank; too_dark"); an operating system's reason
    (a path not found or not readable) as its text."""
    if isinstance(value, (list, tuple)):
        return _text("; ".join(reason.code.value for reason in from_records(value)))
    return _text(value)


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _study_row(study: StudySummary, truth: dict[str, int]) -> dict[str, Any]:
    return {"row_type": "study", "study_key": _text(study.key),
            "modality": _text(next((f.report.get("modality") for f in study.files), "")),
            "status": (InstanceStatus.PROCESSED if study.images
                       else InstanceStatus.NOT_ANALYSED),
            "assessment": study.assessment, "alert": _flag(study.alert),
            "probability": _number(study.probability, 4),
            "probability_not_shown": _number(study.probability_not_shown, 4),
            "assessment_reason": _reason_cell(study.assessment_reason), "images": study.images,
            "lesions": study.lesions, "truth": truth.get(study.key, "")}


def _lesion_rows(study: StudySummary, truth: dict[str, int]) -> Iterator[dict[str, Any]]:
    for result in study.files:
        r = result.report
        for number, lesion in enumerate(r.get("lesions") or [], start=1):
            yield {"row_type": "lesion", "study_key": _text(study.key),
                   "file": _text(r["file"]), "series_uid": _text(r.get("series_uid")),
                   "instance_uid": _text(r.get("instance_uid")),
                   "modality": _text(r.get("modality")),
                   "status": r["status"], "assessment": r["assessment"],
                   "alert": _flag(r["alert"]), "probability": _number(lesion["probability"], 4),
                   "lesion": number,
                   "lesion_3d": study.lesion_3d.get((r["file"], number - 1), ""),
                   "lesion_label": _text(lesion["label"]),
                   "long_axis_mm": _number(lesion.get("long_axis_mm"), 2),
                   "short_axis_mm": _number(lesion.get("short_axis_mm"), 2),
                   "area_mm2": _number(lesion.get("area_mm2"), 2),
                   "long_axis_px": _number(lesion["long_axis_px"], 1),
                   "short_axis_px": _number(lesion["short_axis_px"], 1),
                   "units": lesion["units"], "size_from": lesion.get("size_from", ""),
                   "truth": truth.get(study.key, "")}


def _problem_row(result: FileResult) -> dict[str, Any]:
    r = result.report
    return {"row_type": "problem", "study_key": _text(r.get("study_key")),
            "file": _text(r["file"]), "series_uid": _text(r.get("series_uid")),
            "instance_uid": _text(r.get("instance_uid")), "modality": _text(r.get("modality")),
            "status": r["status"], "reason": _reason_cell(r.get("reason"))}


def csv_rows(results: list[FileResult], studies: list[StudySummary],
             truth: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """Each study's row followed by its lesions' rows, then a row for each path or file
    without a result, in the order analysed."""
    truth = truth or {}
    for study in studies:
        yield _study_row(study, truth)
        yield from _lesion_rows(study, truth)
    for result in results:
        if not result.processed:
            yield _problem_row(result)


def write_csv(path: Path, results: list[FileResult], studies: list[StudySummary],
              truth: dict[str, int] | None = None) -> None:
    """Write the batch's rows (:func:`csv_rows`) to ``path`` (UTF-8, a header row)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(csv_rows(results, studies, truth))
