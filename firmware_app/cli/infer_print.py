"""What ``clinibox infer`` prints for a person: progress on stderr, one line (or a few) per
file or path, the batch in a few lines and the accuracy against ``--labels``.

``--json`` prints none of it on stdout (``cli/infer.py``); the progress goes to stderr in
every case, so stdout stays JSON alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, TextIO

from clinibox_common.contracts.statuses import AssessmentKind, InstanceStatus
from clinibox_common.i18n import formats, gettext, ngettext
from firmware_app.cli.batch_labels import Evaluation
from firmware_app.cli.batch_stats import AreaUnderCurve, Proportion
from firmware_app.cli.batch_studies import FileResult, StudySummary
from firmware_app.cli.infer_wording import (
    assessment_words,
    problem_line,
    reason_words,
    verdict_word,
)
from firmware_app.words import labels, wording

_ = gettext


class Progress:
    """``analysing N of M: FILE`` on stderr: rewritten in place on a terminal, a line each
    otherwise (a log)."""

    def __init__(self, total: int, stream: TextIO | None, enabled: bool = True) -> None:
        self.total, self.stream = total, stream
        self.enabled = enabled and stream is not None and total > 0
        self.in_place = self.enabled and stream is not None and stream.isatty()

    def step(self, number: int, path: Path) -> None:
        """Say that file ``number`` (from 1) is being analysed."""
        if not self.enabled or self.stream is None:
            return
        text = _("analysing %(n)s of %(total)s: %(file)s", n=number, total=self.total,
                 file=str(path))
        if self.in_place:  # one line, cut to the terminal's width, rewritten
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r\033[K" + (text if len(text) <= width else
                                            "…" + text[len(text) - width + 1:]))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        """End the line rewritten in place."""
        if self.in_place and self.stream is not None:
            self.stream.write("\r\033[K")
            self.stream.flush()


def print_inferred(r: dict[str, Any]) -> None:
    """One analysed file or path of ``clinibox infer`` for a person."""
    if r["status"] != InstanceStatus.PROCESSED:
        print(problem_line(r))
        return
    if r["assessment"] == AssessmentKind.NOT_ASSESSABLE:
        print(_("%(file)s: NOT ASSESSABLE — %(reason)s (no result)", file=r["file"],
                reason=reason_words(r["assessment_reason"])))
        return
    if r["assessment"] == AssessmentKind.OUTSIDE_VALIDATED_RANGE:
        print(_("%(file)s: OUTSIDE VALIDATED RANGE — %(reason)s (no result)", file=r["file"],
                reason=reason_words(r["assessment_reason"])))
        return
    print(_("%(file)s: %(verdict)s (lesion probability %(p)s, %(boxes)s box(es))",
            file=r["file"], verdict=verdict_word(r), p=f"{r['probability']:.2f}",
            boxes=len(r["findings"])))
    for n, lesion in enumerate(r["lesions"], start=1):
        print("    " + _("lesion %(n)s: %(label)s p=%(p)s, %(size)s", n=n,
                label=labels.class_label(lesion["label"]),
                p=f"{lesion['probability']:.2f}", size=wording.size(lesion)))
    for w in r["warnings"]:
        print("    " + _("warning: %(message)s", message=reason_words([w])))


def _interval_text(value: Proportion | AreaUnderCurve, as_percent: bool) -> str:
    """``80 % (95 % interval 49 %–94 %)``, or a dash when it cannot be computed."""
    if value.value is None:
        return formats.MISSING
    show = formats.percent if as_percent else (lambda x: formats.decimal(x, 2))
    return _("%(value)s (95 %% interval %(low)s–%(high)s)", value=show(value.value),
             low=show(value.low), high=show(value.high))


def print_batch(results: list[FileResult], studies: list[StudySummary], skipped: int) -> None:
    """The batch in a few lines: images, studies by assessment, paths without a result."""
    analysed = sum(1 for r in results if r.processed)
    print(_("images analysed: %(images)s; studies: %(studies)s", images=analysed,
            studies=len(studies)))
    for code in (*AssessmentKind, InstanceStatus.NOT_ANALYSED):
        count = sum(1 for s in studies if s.assessment == code)
        if count:
            print("  " + assessment_words(code) + _(": ") + str(count))
    without = sum(1 for r in results if not r.processed)
    if without:
        print(ngettext("%(num)d path or file gave no result",
                       "%(num)d paths or files gave no result", without))
    if skipped:
        print(ngettext("%(num)d file in the folders skipped (not DICOM, not a picture)",
                       "%(num)d files in the folders skipped (not DICOM, not a picture)",
                       skipped))


def print_accuracy(evaluation: Evaluation) -> None:
    """Sensitivity, specificity and AUC with their intervals, and what was left out."""
    a = evaluation.accuracy
    scored = a.sensitivity.total + a.specificity.total
    print(_("accuracy against the labels at the model's operating threshold %(threshold)s, "
            "on %(n)s labelled studies the model gave a result for:",
            threshold=formats.decimal(evaluation.threshold, 2), n=scored))
    print("  " + _("sensitivity %(text)s: %(k)s of %(n)s with a lesion found",
                   text=_interval_text(a.sensitivity, True), k=a.true_positives,
                   n=a.sensitivity.total))
    print("  " + _("specificity %(text)s: %(k)s of %(n)s without a lesion called clear",
                   text=_interval_text(a.specificity, True), k=a.true_negatives,
                   n=a.specificity.total))
    print("  " + _("AUC %(text)s (DeLong)", text=_interval_text(a.auc, False)))
    if evaluation.not_judged:
        print("  " + _("Labelled studies the model gave no result for (not counted): %(n)s",
                       n=len(evaluation.not_judged)))
    if evaluation.unmatched:
        print("  " + _("Labels that match no analysed study (%(n)s)",
                       n=len(evaluation.unmatched)) + _(": ") + _(", ").join(evaluation.unmatched))
    if evaluation.unlabelled:
        print("  " + _("Studies without a label: %(n)s", n=len(evaluation.unlabelled)))
