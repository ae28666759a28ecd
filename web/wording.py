"""Findings, warnings and notices in plain words for clinic staff who are not radiologists."""

from __future__ import annotations

import datetime as dt
from typing import Any

#: Shown on every study page and report.
ASSIST_NOTICE = ("This result assists a doctor and does not replace one. "
                 "A doctor must read the images and make the diagnosis.")

#: Advice added to quality warnings that do not already say what to do.
_ADVICE = {
    "too_small": "send the original image if possible",
    "saturated": "check exposure, rescan if needed",
    "low_contrast": "check window/exposure, rescan if needed",
}


def verdict(alert: bool, finding: bool, assessment: str = "", reason: str = ""
            ) -> tuple[str, str]:
    """(level, headline): level is alert, finding, unassessable, outside or clear.

    An image the model cannot judge (``not_assessable``) or was not validated
    for (``outside_validated_range``) never reads "no suspicious area found".
    """
    if alert:
        return "alert", "Suspicious area found — a doctor should review this study soon"
    if finding:
        return "finding", "Possible finding — a doctor should review this study"
    if assessment == "not_assessable":
        why = reason or "the image cannot be judged"
        advice = "" if "rescan suggested" in why else "; rescan suggested"
        return "unassessable", (f"Not assessable: {why}{advice}. The model gives no result "
                                "for this image; a doctor must read it")
    if assessment == "outside_validated_range":
        why = f" ({reason[:1].lower()}{reason[1:]})" if reason else ""
        return "outside", (f"Outside what the model was validated on{why}. The model gives "
                           "no result for this image; a doctor must read it")
    return "clear", "No suspicious area found by the model"


def size(lesion: dict[str, Any]) -> str:
    """A lesion's size in words: ``12.3 × 8.1 mm`` or ``40 × 25 pixels (no calibration)``."""
    if lesion.get("units") == "mm" and lesion.get("long_axis_mm") is not None:
        return f"{lesion['long_axis_mm']:.1f} × {lesion['short_axis_mm']:.1f} mm"
    return (f"{lesion['long_axis_px']:.0f} × {lesion['short_axis_px']:.0f} pixels "
            "(the image has no calibration, so no size in mm)")


def classes(probabilities: dict[str, float] | None) -> str:
    """Class probabilities in words, most probable first: ``malignant 72 %, benign 28 %``."""
    ranked = sorted((probabilities or {}).items(), key=lambda item: -item[1])
    return ", ".join(f"{label} {percent(p)}" for label, p in ranked)


def study_summary(summary: dict[str, Any] | None) -> str:
    """The study's lesions in one sentence ("" when it has none)."""
    if not summary or not summary.get("lesions"):
        return ""
    n = summary["lesions"]
    parts = [f"{n} lesion{'' if n == 1 else 's'} in the study"]
    if summary.get("largest_diameter") is not None:
        unit = "mm" if summary.get("units") == "mm" else "pixels (no calibration)"
        parts.append(f"largest diameter {summary['largest_diameter']:.1f} {unit}")
    for label, p in sorted(summary.get("highest_class_probabilities", {}).items()):
        parts.append(f"highest {label} probability {percent(p)}")
    return "; ".join(parts)


def percent(probability: float | None) -> str:
    """A probability as a whole percentage, e.g. ``87 %``."""
    return "–" if probability is None else f"{round(100 * probability)} %"


def where(box: dict[str, Any], rows: int, columns: int) -> str:
    """Where a box lies in the image, in words (upper left … lower right)."""
    cx = (box["x0"] + box["x1"]) / 2 / max(columns, 1)
    cy = (box["y0"] + box["y1"]) / 2 / max(rows, 1)
    vertical = "upper" if cy < 1 / 3 else ("lower" if cy > 2 / 3 else "middle")
    horizontal = "left" if cx < 1 / 3 else ("right" if cx > 2 / 3 else "centre")
    if vertical == "middle" and horizontal == "centre":
        return "centre of the image"
    return f"{vertical} {horizontal} of the image"


def finding_lines(boxes: list[dict[str, Any]], rows: int | None,
                  columns: int | None, lesions: list[dict[str, Any]] | None = None
                  ) -> list[str]:
    """One sentence per marked area, numbered as on the image, with its size when known.

    Without the image's size (an image deleted before its size was kept) the
    place in the image is left out rather than guessed. ``lesions`` are the
    lesion records in the boxes' order.
    """
    lines = []
    lesions = lesions or []
    for n, box in enumerate(boxes, start=1):
        place = f" in the {where(box, rows, columns)}" if rows and columns else ""
        lesion = lesions[n - 1] if n <= len(lesions) else {}
        measured = f", about {size(lesion)}" if lesion else ""
        kind = classes(lesion.get("class_probabilities") or box.get("class_probabilities"))
        kind = f"; {kind}" if kind else ""
        lines.append(f"Area {n}: possible {box.get('label', 'finding')}{place}{measured}"
                     f" (model confidence {percent(box.get('score'))}{kind})")
    return lines


def other_frame_lines(boxes: list[dict[str, Any]], lesions: list[dict[str, Any]] | None
                      ) -> list[str]:
    """Lesions tracked on frames other than the key frame (after the key frame's own)."""
    lines = []
    for lesion in (lesions or [])[len(boxes):]:
        kind = classes(lesion.get("class_probabilities"))
        lines.append(f"On frame {lesion.get('frame', 0) + 1}: possible "
                     f"{lesion.get('label', 'finding')}, about {size(lesion)} (model confidence "
                     f"{percent(lesion.get('probability'))}{'; ' + kind if kind else ''})")
    return lines


def image_deleted(received_at: float, deleted_at: float) -> str:
    """What replaces an image that retention deleted: when, after how long, and what stays."""
    days = max(0, round((deleted_at - received_at) / 86_400))
    on = dt.datetime.fromtimestamp(deleted_at).strftime("%Y-%m-%d")
    return (f"The image was deleted on {on} after {days} day{'' if days == 1 else 's'} "
            "(retention); the findings are kept.")


def warning_text(warning: dict[str, str]) -> str:
    """A quality warning with advice on what to do about it."""
    message = warning.get("message", "")
    advice = _ADVICE.get(warning.get("code", ""))
    if advice and advice not in message:
        message = f"{message} — {advice}"
    return message[:1].upper() + message[1:]


def local_time(epoch: float | None, with_seconds: bool = False) -> str:
    """An epoch time as local ``YYYY-MM-DD HH:MM``."""
    if epoch is None:
        return "–"
    fmt = "%Y-%m-%d %H:%M:%S" if with_seconds else "%Y-%m-%d %H:%M"
    return dt.datetime.fromtimestamp(epoch).strftime(fmt)


def dicom_date(value: str) -> str:
    """A DICOM DA value (YYYYMMDD) as YYYY-MM-DD; anything else as it is."""
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def ago(seconds: float) -> str:
    """A duration in rough words: ``12 s``, ``5 min``, ``3 h``, ``2 days``."""
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    if seconds < 172800:
        return f"{round(seconds / 3600)} h"
    return f"{round(seconds / 86400)} days"
