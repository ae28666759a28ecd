"""``clinibox infer --html FILE``: a self-contained summary of a batch, for people.

One HTML file with its style inline and its charts as inline SVG
(``cli/svg_charts.py``): no script, no font or library from the network. It
names the model, says plainly when it is the demonstration model (trained on
procedurally generated phantoms, not for clinical use), draws lesions per
study, lesion sizes and the studies' assessments, gives the accuracy against
``--labels`` when given, lists every study (with the patient's name: the file
stays on the clinic's computers) and every path without a result. Every string
from a file, a DICOM attribute or a reason is escaped.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from html import escape

from clinibox_common.contracts.statuses import AssessmentKind, InstanceStatus
from clinibox_common.i18n import current, formats, gettext, html_lang, ngettext
from firmware_app.cli.batch_labels import Evaluation
from firmware_app.cli.batch_stats import AreaUnderCurve, Proportion
from firmware_app.cli.batch_studies import FileResult, StudySummary
from firmware_app.cli.infer_wording import assessment_words, problem_reason
from firmware_app.cli.svg_charts import bar_chart, edge_digits, histogram_bins
from firmware_app.words import wording

_ = gettext
#: study assessments in the order the chart shows them
ASSESSMENT_ORDER = (*AssessmentKind, InstanceStatus.NOT_ANALYSED)
_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222;max-width:62em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.25em .5em;
text-align:left;vertical-align:top;word-break:keep-all}th{background:#f3f3f3}
.demo{border:2px solid #b00;background:#fee;padding:.6em;font-weight:bold}
.note{color:#555}.charts svg{display:block;margin:.5em 0 1em}h3{font-size:1em;margin:1.2em 0 0}
.id{word-break:break-all;font-size:.85em}
"""


@dataclass(frozen=True)
class ModelFacts:
    """The model the batch ran: its id, backend, intended use, operating threshold, and
    whether it is a demonstration package."""

    model_id: str
    backend: str
    intended_use: str
    threshold: float
    demo: bool


def _e(value: object) -> str:
    return escape("" if value is None else str(value))


def _data(value: object, css: str = "") -> str:
    """A value shown as recorded (a path, a UID, a name): escaped, not to be translated."""
    opening = f'<span translate="no" class="{css}">' if css else '<span translate="no">'
    return f"{opening}{_e(value)}</span>"


def _paragraph(text: str, css: str = "", extra: str = "") -> str:
    """A paragraph of ``text`` (escaped) and ``extra`` (already escaped HTML)."""
    opening = f'<p class="{css}">' if css else "<p>"
    after = _e(_(": ")) + extra if extra else ""
    return f"{opening}{_e(text)}{after}</p>"


def _filled(template: str, **data: str) -> str:
    """A translated ``template`` escaped, its placeholders filled with HTML (already escaped,
    e.g. :func:`_data`), so that names and ids are marked as data inside a sentence."""
    return _e(template) % data


def _heading(text: str) -> str:
    return f"<h2>{_e(text)}</h2>"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """A table of already escaped cells."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _lesions_chart(studies: list[StudySummary]) -> str:
    judged = [s.lesions for s in studies if s.judged]
    counts = Counter(judged)
    bars = [(str(n), counts.get(n, 0)) for n in range(max(judged, default=0) + 1)]
    note = _("Only studies the model gave a result for; a lesion on several slices of a series "
             "counts once.")
    title = _("Lesions per study")
    return (f"<h3>{_e(title)}</h3>" + bar_chart(title, bars, _("lesions in the study"),
                                                  _("studies")) + _paragraph(note, "note"))


def _sizes_chart(results: list[FileResult]) -> str:
    lesions = [lesion for r in results if r.processed for lesion in r.report["lesions"]]
    sizes = [lesion["long_axis_mm"] for lesion in lesions
             if lesion.get("units") == "mm" and lesion.get("long_axis_mm") is not None]
    bins = histogram_bins(sizes)
    digits = edge_digits(bins)
    bars = [(f"{formats.decimal(low, digits)}–{formats.decimal(high, digits)}", n)
            for low, high, n in bins]
    title = _("Lesion sizes (long axis)")
    html = f"<h3>{_e(title)}</h3>" + bar_chart(title, bars, _("long axis, mm"), _("lesions"))
    uncalibrated = len(lesions) - len(sizes)
    if uncalibrated:
        html += _paragraph(ngettext(
            "%(num)d lesion on an image without calibration is not shown (no size in mm).",
            "%(num)d lesions on images without calibration are not shown (no size in mm).",
            uncalibrated), "note")
    return html


def _assessments_chart(studies: list[StudySummary]) -> str:
    counts = Counter(s.assessment for s in studies)
    bars = [(assessment_words(code), counts.get(code, 0)) for code in ASSESSMENT_ORDER]
    title = _("Studies by assessment")
    return f"<h3>{_e(title)}</h3>" + bar_chart(title, bars, _("assessment"), _("studies"))


def _interval(value: Proportion | AreaUnderCurve, as_percent: bool) -> tuple[str, str]:
    """(value, interval) as text; a dash where it cannot be computed."""
    def show(x: float | None) -> str:
        return formats.percent(x) if as_percent else formats.decimal(x, 2)

    if value.value is None:
        return formats.MISSING, formats.MISSING
    return show(value.value), f"{show(value.low)} – {show(value.high)}"


def _accuracy(evaluation: Evaluation) -> str:
    a = evaluation.accuracy
    scored = a.true_positives + a.false_negatives + a.true_negatives + a.false_positives
    rows = []
    for name, value, counts, as_percent in (
            (_("Sensitivity"), a.sensitivity, f"{a.true_positives} / {a.sensitivity.total}", True),
            (_("Specificity"), a.specificity, f"{a.true_negatives} / {a.specificity.total}",
             True),
            (_("AUC"), a.auc, _("%(positives)s with a lesion, %(negatives)s without",
                                positives=a.auc.positives, negatives=a.auc.negatives), False)):
        shown, interval = _interval(value, as_percent)
        rows.append([_e(name), _e(shown), _e(interval), _e(counts)])
    parts = [_heading(_("Accuracy against the labels")),
             _paragraph(_("At the model's operating threshold %(threshold)s, on %(n)s labelled "
                          "studies the model gave a result for.",
                          threshold=formats.decimal(evaluation.threshold, 2), n=scored)),
             _table([_("measure"), _("value"), _("confidence interval (95 %)"), _("counts")], rows),
             _paragraph(_("Intervals: Wilson score for sensitivity and specificity; DeLong "
                          "standard error for the AUC."), "note")]
    if evaluation.not_judged:
        parts.append(_paragraph(_("Labelled studies the model gave no result for (not "
                                  "counted): %(n)s", n=len(evaluation.not_judged))))
        parts.append(_table([_("study"), _("truth"), _("assessment")], [
            [_data(key, "id"), _e(truth), _e(assessment_words(code))]
            for key, truth, code in evaluation.not_judged]))
    if evaluation.unmatched:
        listed = _e(_(", ")).join(_data(key, "id") for key in evaluation.unmatched)
        parts.append(_paragraph(_("Labels that match no analysed study (%(n)s)",
                                  n=len(evaluation.unmatched)), extra=listed))
    if evaluation.unlabelled:
        parts.append(_paragraph(_("Studies without a label: %(n)s",
                                  n=len(evaluation.unlabelled))))
    return "\n".join(parts)


def _patient(display: dict[str, str]) -> str:
    name = " ".join((display.get("patient_name") or "").replace("^", " ").split())
    return _data(name or formats.MISSING)


def _studies(studies: list[StudySummary], truth: dict[str, int]) -> str:
    rows = []
    for s in studies:
        size = (f"{formats.decimal(s.largest_long_axis_mm)} mm"
                if s.largest_long_axis_mm is not None else formats.MISSING)
        files = _data(s.files[0].report["file"], "id") + (
            f" (+{len(s.files) - 1})" if len(s.files) > 1 else "")
        rows.append([_data(s.key, "id"), files, _patient(s.display),
                     _e(wording.dicom_date(s.display.get("study_date", ""))), _e(s.images),
                     _e(assessment_words(s.assessment)), _e(formats.percent(s.probability)),
                     _e(s.lesions), _e(size), _e(truth.get(s.key, formats.MISSING))])
    return (_heading(_("Studies")) + _table(
        [_("study"), _("first file"), _("patient"), _("date"), _("images"), _("assessment"),
         _("probability"), _("lesions"), _("largest long axis"), _("truth")], rows))


def _problems(results: list[FileResult]) -> str:
    rows = [[_data(r.report["file"], "id"), _e(problem_reason(r.report))]
            for r in results if not r.processed]
    if not rows:
        return ""
    return (_heading(_("Paths and files without a result"))
            + _table([_("path"), _("what happened")], rows))


def render_summary(model: ModelFacts, results: list[FileResult], studies: list[StudySummary],
                   skipped: int, evaluation: Evaluation | None = None,
                   truth: dict[str, int] | None = None, generated: float | None = None) -> str:
    """The batch's summary as one HTML document."""
    title = _("clinibox batch analysis")
    analysed = sum(1 for r in results if r.processed)
    counts = [[_e(_("Images analysed")), _e(analysed)], [_e(_("Studies")), _e(len(studies))],
              [_e(_("Paths and files without a result")),
               _e(sum(1 for r in results if not r.processed))],
              [_e(_("Files skipped in folders (not DICOM, not a picture)")), _e(skipped)]]
    parts = [
        "<!DOCTYPE html>", f'<html lang="{html_lang(current())}"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
    ]
    if model.demo:
        parts.append(_paragraph(_("Demonstration model: trained on procedurally generated "
                                  "phantoms. Not for clinical use."), "demo"))
    made = formats.moment(generated if generated is not None else time.time())
    parts += [
        "<p>" + _filled(_("Model %(model)s on %(backend)s; summary made %(when)s"),
                        model=_data(model.model_id), backend=_data(model.backend),
                        when=_e(made)) + "</p>",
        _paragraph(_("intended use: %(use)s",
                     use=wording.intended_use(model.intended_use) or "-")),
        _paragraph(wording.assist_notice()),
        _paragraph(_("This summary names patients: keep it on the clinic's computers."), "note"),
        _table([_("what"), _("how many")], counts),
        '<div class="charts">', _lesions_chart(studies), _sizes_chart(results),
        _assessments_chart(studies), "</div>",
    ]
    if evaluation is not None:
        parts.append(_accuracy(evaluation))
    parts += [_studies(studies, truth or {}), _problems(results), "</body></html>"]
    return "\n".join(part for part in parts if part)
