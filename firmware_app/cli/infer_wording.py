"""What ``clinibox infer`` says of a file, a path or a study, in the current language.

Nothing here is "quarantined": the command line received nothing. A path that
does not exist is *not found*; one the operating system will not read is *not
readable* (with its reason); a file the decoder cannot read *could not be read
as an image* (the decoder's reason); an image no model here is meant for is *not
analysed* (the routing's reason).
"""

from __future__ import annotations

from typing import Any

from clinibox_common.contracts.reasons import VERBATIM, from_records
from clinibox_common.contracts.statuses import InstanceStatus
from clinibox_common.i18n import gettext, ngettext
from firmware_app.words import labels, reasons

_ = gettext


def reason_words(value: object) -> str:
    """A record's reason in the current language: the box's reasons (codes) rendered, an
    operating system's text as it is. Outside English a decoder's own words are left out
    (the line already says the file could not be read; ``--json`` keeps them)."""
    if isinstance(value, (list, tuple)):
        recorded = from_records(value)
        if reasons.verbatim(recorded):
            recorded = [r for r in recorded if r.code not in VERBATIM]
        return reasons.reasons_text(recorded)
    return str(value or "")


def verdict_word(report: dict[str, Any]) -> str:
    """An analysed image's verdict in a word: ALERT, finding or no finding."""
    if report["alert"]:
        return _("ALERT")
    return _("finding") if report["finding"] else _("no finding")


def assessment_words(code: str) -> str:
    """A study's or image's assessment in words (``not_analysed`` included)."""
    if code == InstanceStatus.NOT_ANALYSED:
        return labels.status(code)
    return labels.assessment(code)


def problem_reason(report: dict[str, Any]) -> str:
    """Why a path or file gave no result, without its path (for a table)."""
    status, reason = report["status"], reason_words(report.get("reason"))
    if status == "no_files":
        return ngettext("no DICOM or picture file in the folder (%(num)d other file skipped)",
                        "no DICOM or picture file in the folder (%(num)d other files skipped)",
                        int(report.get("skipped") or 0))
    if status == "not_found":
        return _("not found (%(reason)s)", reason=reason) if reason else _("not found")
    if status == "not_readable":
        return _("not readable (%(reason)s)", reason=reason)
    if status == "bad_dicomdir":
        return _("DICOMDIR could not be read: %(reason)s", reason=reason)
    if status == InstanceStatus.NOT_ANALYSED:
        return _("not analysed: %(reason)s", reason=reason)
    if not reason:
        return _("could not be read as an image")
    return _("could not be read as an image: %(reason)s", reason=reason)


def problem_line(report: dict[str, Any]) -> str:
    """One line for a person about a path or file that gave no result."""
    status, path, reason = report["status"], report["file"], reason_words(report.get("reason"))
    if status == "not_found":
        return (_("not found: %(path)s (%(reason)s)", path=path, reason=reason) if reason
                else _("not found: %(path)s", path=path))
    if status == "not_readable":
        return _("not readable: %(path)s (%(reason)s)", path=path, reason=reason)
    if status == "no_files":
        return ngettext("%(path)s: no DICOM or picture file in the folder (%(num)d other file "
                        "skipped)", "%(path)s: no DICOM or picture file in the folder (%(num)d "
                        "other files skipped)", int(report.get("skipped") or 0), path=path)
    if status == "bad_dicomdir":
        return _("%(path)s: DICOMDIR could not be read: %(reason)s", path=path, reason=reason)
    if status == InstanceStatus.NOT_ANALYSED:
        return _("%(path)s: NOT ANALYSED — %(reason)s", path=path, reason=reason)
    if not reason:
        return _("%(path)s: could not be read as an image", path=path)
    return _("%(path)s: could not be read as an image: %(reason)s", path=path, reason=reason)
