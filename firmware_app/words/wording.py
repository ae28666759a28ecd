"""Findings, warnings and notices in plain words for clinic staff who are not radiologists.

Every sentence is in the current language (``clinibox_common.i18n``: the viewer's
request, or the command line's); the English ones are the catalog's source.
Sizes keep their unit symbols (``12.3 × 8.1 mm``), dates and numbers follow the
language (``clinibox_common.i18n.formats``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from clinibox_common.contracts.reasons import SAYS_RESCAN, from_records
from clinibox_common.contracts.statuses import AssessmentKind, InstanceStatus
from clinibox_common.i18n import N_, current, formats, gettext, ngettext
from firmware_app.words import labels, reasons

_ = gettext

#: Shown on every study page and report (``assist_notice()`` gives it translated).
ASSIST_NOTICE = N_("This result assists a doctor and does not replace one. "
                   "A doctor must read the images and make the diagnosis.")
#: Intended-use statements of model cards the catalog translates (the demo's, as signed in
#: its manifest); any other is shown as its maker wrote it.
KNOWN_INTENDED_USES = (
    N_("DEMONSTRATION ONLY — trained on procedurally generated phantoms; not for clinical use"),
)

#: Advice added to quality warnings that do not already say what to do.
_ADVICE = {
    "too_small": N_("send the original image if possible"),
    # their warnings already say what to check ("image saturated, check exposure")
    "saturated": N_("rescan if needed"),
    "low_contrast": N_("rescan if needed"),
}
#: Where a box lies, by (vertical, horizontal) third of the image.
_PLACES = {
    ("upper", "left"): N_("upper left of the image"),
    ("upper", "centre"): N_("upper centre of the image"),
    ("upper", "right"): N_("upper right of the image"),
    ("middle", "left"): N_("middle left of the image"),
    ("middle", "centre"): N_("centre of the image"),
    ("middle", "right"): N_("middle right of the image"),
    ("lower", "left"): N_("lower left of the image"),
    ("lower", "centre"): N_("lower centre of the image"),
    ("lower", "right"): N_("lower right of the image"),
}


def assist_notice() -> str:
    """The notice that a doctor reads the images and decides."""
    return _(ASSIST_NOTICE)


def intended_use(statement: str) -> str:
    """A model card's intended use in the current language: a statement the catalog knows is
    translated, any other shown as its maker wrote it."""
    statement = (statement or "").strip()
    return _(statement) if statement in KNOWN_INTENDED_USES else statement


def verdict(alert: bool, finding: bool, assessment: str = "",
            reason: str | Sequence[Any] = "") -> tuple[str, str]:
    """(level, headline): level is alert, finding, unassessable, outside or clear.

    An image the model cannot judge (``not_assessable``) or was not validated
    for (``outside_validated_range``) never reads "no suspicious area found".
    ``reason``: the stored reasons (``contracts/reasons.py``), or their records.
    """
    if alert:
        return "alert", _("Suspicious area found — a doctor should review this study soon")
    if finding:
        return "finding", _("Possible finding — a doctor should review this study")
    if assessment == AssessmentKind.NOT_ASSESSABLE:
        recorded = from_records(reason)
        why = reasons.reasons_text(recorded) if recorded else _("the image cannot be judged")
        if not any(r.code in SAYS_RESCAN for r in recorded):
            why = _("%(why)s; rescan suggested", why=why)
        return "unassessable", _("Not assessable: %(why)s. The model gives no result for this "
                                 "image; a doctor must read it", why=why)
    if assessment == AssessmentKind.OUTSIDE_VALIDATED_RANGE:  # how far outside is the technician's
        return "outside", _("Outside what the model was validated on. The model gives no "
                            "result for this image; a doctor must read it")
    return "clear", _("No suspicious area found by the model")


#: what the finding page adds to its headline, by level (where the headline leaves it out)
_NEXT_STEP = {
    "alert": N_("The marked areas on the image show where to look."),
    "finding": N_("The marked areas on the image show where to look."),
    "clear": N_("A doctor still reads every study as usual."),
}


def next_step(level: str, marked: bool = True) -> str:
    """What to do now, for the study's level (alert, finding, unassessable, outside, clear)
    beyond what its headline says ("" for none); ``marked``: the image has marked areas."""
    if level in ("alert", "finding") and not marked:
        return no_place()
    return _(_NEXT_STEP[level]) if level in _NEXT_STEP else ""


def no_place() -> str:
    """Said of a finding the model could not locate: no marked area to look at."""
    return _("The model finds this image suspicious but cannot point to one area: a doctor "
             "should read the whole image.")


def no_marks(judged: bool) -> str:
    """The findings of a report without a marked area: none found, or no result at all."""
    if judged:
        return _("No marked areas.")
    return _("None: the model gives no result for this image, so nothing is marked.")


def class_caution(intended_use_statement: str) -> str:
    """Said beside a lesion's kind (benign, malignant …): a guess, and for a demonstration
    model one not to act on (the model card's own caution)."""
    if (intended_use_statement or "").strip() in KNOWN_INTENDED_USES:
        return _("The kind of lesion is the guess of a demonstration model trained on "
                 "phantoms: do not act on it.")
    return _("The kind of lesion is the model's guess; only a doctor can say what it is.")


def size(lesion: dict[str, Any]) -> str:
    """A lesion's size in words: ``12.3 × 8.1 mm`` or ``40 × 25 pixels (no calibration)``."""
    if lesion.get("units") == "mm" and lesion.get("long_axis_mm") is not None:
        return axes_mm(lesion["long_axis_mm"], lesion["short_axis_mm"])
    return _("%(long)s × %(short)s pixels (the image has no calibration, so no size in mm)",
             long=formats.decimal(lesion["long_axis_px"], 0),
             short=formats.decimal(lesion["short_axis_px"], 0))


def axes_mm(long_axis: float | None, short_axis: float | None) -> str:
    """A lesion's long and short axis: ``12.3 × 8.1 mm`` ("" without a long axis)."""
    if long_axis is None:
        return ""
    return f"{formats.decimal(long_axis)} × {formats.decimal(short_axis)} mm"


def classes(probabilities: dict[str, float] | None) -> str:
    """Class probabilities in words, most probable first: ``malignant 72 %, benign 28 %``."""
    ranked = sorted((probabilities or {}).items(), key=lambda item: -item[1])
    return _(", ").join(f"{labels.class_label(label)} {percent(p)}" for label, p in ranked)


def study_summary(summary: dict[str, Any] | None) -> str:
    """The study's lesions in one sentence: how many and the largest ("" when it has none).
    Each lesion's kind is said beside it, with its caution, never summed up here."""
    if not summary or not summary.get("lesions"):
        return ""
    parts = [ngettext("%(num)d lesion in the study", "%(num)d lesions in the study",
                      summary["lesions"])]
    if summary.get("largest_diameter") is not None:
        largest = formats.decimal(summary["largest_diameter"])
        parts.append(_("largest diameter %(size)s mm", size=largest)
                     if summary.get("units") == "mm" else
                     _("largest diameter %(size)s pixels (no calibration)", size=largest))
    return _("; ").join(parts)


def metric(value: Any, digits: int = 3) -> str:
    """A validation figure of a model card (AUC, sensitivity …) to ``digits`` decimals; what
    is not a number as it is ("–" when missing)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return formats.decimal(float(value), digits)
    return formats.MISSING if value is None else str(value)


def percent(probability: float | None) -> str:
    """A probability as a whole percentage, e.g. ``87 %``."""
    return formats.percent(probability)


def where(box: dict[str, Any], rows: int, columns: int) -> str:
    """Where a box lies in the image, in words (upper left … lower right)."""
    cx = (box["x0"] + box["x1"]) / 2 / max(columns, 1)
    cy = (box["y0"] + box["y1"]) / 2 / max(rows, 1)
    vertical = "upper" if cy < 1 / 3 else ("lower" if cy > 2 / 3 else "middle")
    horizontal = "left" if cx < 1 / 3 else ("right" if cx > 2 / 3 else "centre")
    return _(_PLACES[vertical, horizontal])


def _confidence(score: float | None, kind: str) -> str:
    if kind:
        return _("model confidence %(percent)s; %(classes)s", percent=percent(score),
                 classes=kind)
    return _("model confidence %(percent)s", percent=percent(score))


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
        lesion = lesions[n - 1] if n <= len(lesions) else {}
        values = {
            "n": n, "label": labels.class_label(box.get("label", "finding")),
            # the lesion's one number (its best frame's, tracked across a cine), else the box's
            "confidence": _confidence(lesion.get("probability", box.get("score")), classes(
                lesion.get("class_probabilities") or box.get("class_probabilities")))}
        placed = bool(rows and columns)
        if placed:
            values["place"] = where(box, rows or 0, columns or 0)
        if lesion:
            values["size"] = size(lesion)
        if placed and lesion:
            line = _("Area %(n)d: possible %(label)s in the %(place)s, about %(size)s "
                     "(%(confidence)s)", **values)
        elif placed:
            line = _("Area %(n)d: possible %(label)s in the %(place)s (%(confidence)s)",
                     **values)
        elif lesion:
            line = _("Area %(n)d: possible %(label)s, about %(size)s (%(confidence)s)",
                     **values)
        else:
            line = _("Area %(n)d: possible %(label)s (%(confidence)s)", **values)
        lines.append(line)
    return lines


def other_frame_lines(boxes: list[dict[str, Any]], lesions: list[dict[str, Any]] | None
                      ) -> list[str]:
    """Lesions tracked on frames other than the key frame (after the key frame's own)."""
    return [
        _("On frame %(frame)d: possible %(label)s, about %(size)s (%(confidence)s)",
          frame=lesion.get("frame", 0) + 1,
          label=labels.class_label(lesion.get("label", "finding")), size=size(lesion),
          confidence=_confidence(lesion.get("probability"),
                                 classes(lesion.get("class_probabilities"))))
        for lesion in (lesions or [])[len(boxes):]]


def volume_lines(volumes: Any) -> list[str]:
    """The study's 3-D lesions in sentences, then why a series is read image by image
    (``storage/volumes.StudyVolumes``)."""
    return lesion_3d_lines(volumes) + series_reading_lines(volumes)


def lesion_3d_lines(volumes: Any) -> list[str]:
    """One sentence per 3-D lesion of the study's series read as volumes, numbered."""
    return [_lesion_3d_line(n, lesion) for n, lesion in enumerate(volumes.lesions, start=1)]


def series_reading_lines(volumes: Any) -> list[str]:
    """One sentence per series of several images read image by image, saying why."""
    return [ngettext("The %(num)d image of this series is looked at on its own, not as a 3-D "
                     "volume: %(why)s.",
                     "These %(num)d images of one series are looked at one by one, not together "
                     "as a 3-D volume: %(why)s.",
                     len(series.instance_ids), why=labels.series_reading(series.reason))
            for series in volumes.series
            if series.read_as != "volume" and series.reason != "single_slice"
            and len(series.instance_ids) > 1]


def _lesion_3d_line(number: int, lesion: Any) -> str:
    """A 3-D lesion in words: where it lies, its size, extent and volume."""
    values = {"n": number, "label": labels.class_label(lesion.label),
              "extent": formats.decimal(lesion.z_extent_mm),
              "volume": formats.decimal(lesion.volume_mm3, 0),
              "confidence": _confidence(lesion.probability, classes(
                  lesion.class_probabilities))}
    values["size"] = axes_mm(lesion.long_axis_mm, lesion.short_axis_mm)
    if values["size"]:
        line = ngettext("3-D lesion %(n)d: possible %(label)s on %(num)d slice (%(extent)s mm "
                        "deep), about %(size)s across, volume about %(volume)s mm³",
                        "3-D lesion %(n)d: possible %(label)s on %(num)d slices (%(extent)s "
                        "mm deep), about %(size)s across, volume about %(volume)s mm³",
                        lesion.slices, **values)
    else:
        line = ngettext("3-D lesion %(n)d: possible %(label)s on %(num)d slice (%(extent)s mm "
                        "deep), volume about %(volume)s mm³",
                        "3-D lesion %(n)d: possible %(label)s on %(num)d slices (%(extent)s "
                        "mm deep), volume about %(volume)s mm³", lesion.slices, **values)
    if lesion.volume_from == "box":
        line = _("%(line)s (estimated from the boxes: the model draws no outline)", line=line)
    return _("%(line)s (%(confidence)s)", line=line, confidence=values["confidence"])


def image_deleted(received_at: float, deleted_at: float) -> str:
    """What replaces an image that retention deleted: when, after how long, and what stays."""
    days = max(0, round((deleted_at - received_at) / 86_400))
    on = formats.day(dt.datetime.fromtimestamp(deleted_at).date())
    return ngettext("The image was deleted on %(day)s after %(num)d day (retention); the "
                    "findings are kept.",
                    "The image was deleted on %(day)s after %(num)d days (retention); the "
                    "findings are kept.", days, day=on)


def warning_text(warning: Mapping[str, Any]) -> str:
    """A quality warning (a reason record) with advice on what to do about it."""
    reason = from_records([warning])[0]
    message = reasons.reason_text(reason)
    advice = _ADVICE.get(reason.code)
    if advice:
        message = _("%(message)s — %(advice)s", message=message, advice=_(advice))
    return message[:1].upper() + message[1:]


def recorded_reason(reason: str | Sequence[Any] | None) -> tuple[str, str]:
    """Stored reasons (or their records) to show: (text in the reader's language, the same
    text again when it holds words recorded as they are, untranslated, else "")."""
    recorded = from_records(reason)
    text = reasons.reasons_text(recorded)
    return text, text if reasons.verbatim(recorded) else ""


def explained_reason(reason: str | Sequence[Any] | None) -> str:
    """Stored reasons to show in the reader's language (a decoder's own words only on the
    English pages: ``reasons.explained``)."""
    return reasons.explained(from_records(reason))


def object_reason(status: str, reason: str | Sequence[Any] | None) -> tuple[str, str]:
    """Why an object was held back or not analysed, for the worklist: (text, original).

    A reason holding words the box did not write (a decoder's own) is summed up in the
    reader's language; the technician's quarantine list shows the original.
    """
    text, untranslated = recorded_reason(reason)
    if not untranslated:
        return text, ""
    if status == InstanceStatus.NOT_ANALYSED:
        return _("no model on this box is meant for this image"), text
    return _("the box could not read this file; a technician sees why in the quarantine "
             "list"), text


def listed(items: Sequence[str]) -> str:
    """Names as one list in the reader's language ("a, b and c", "a、b和c")."""
    from babel.lists import format_list

    return format_list(list(items), locale=current().replace("-", "_")) if items else ""


def local_time(epoch: float | None, with_seconds: bool = False) -> str:
    """An epoch time as local ``YYYY-MM-DD HH:MM`` (``2026年11月23日 14:05`` in Chinese)."""
    return formats.moment(epoch, with_seconds)


def dicom_date(value: str) -> str:
    """A DICOM DA value (YYYYMMDD) as a date (``YYYY-MM-DD``); anything else as it is."""
    if len(value) == 8 and value.isdigit():
        try:
            return formats.day(dt.date(int(value[:4]), int(value[4:6]), int(value[6:])))
        except ValueError:
            return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def ago(seconds: float) -> str:
    """A duration in rough words: ``12 s``, ``5 min``, ``3 h``, ``2 days``."""
    if seconds < 90:
        return _("%(n)s s", n=max(0, round(seconds)))
    if seconds < 5400:
        return _("%(n)s min", n=round(seconds / 60))
    if seconds < 172800:
        return _("%(n)s h", n=round(seconds / 3600))
    return ngettext("%(num)d day", "%(num)d days", round(seconds / 86400))
