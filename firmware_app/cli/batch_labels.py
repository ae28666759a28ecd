"""``clinibox infer --labels CSV``: the truth of each study, and the model's accuracy on it.

The labels file is CSV (UTF-8) with a header row naming at least two columns:

* ``study``: a Study Instance UID, or the path of one of the study's files (absolute,
  or relative to the labels file's folder or to the current folder);
* ``label``: ``1`` when the study has a lesion, ``0`` when it has none.

Other columns are ignored; blank lines are skipped. Two rows that give one study
different labels are an error.

Only studies the model gave a result for (``finding`` / ``no_finding``) are scored:
a study is predicted positive when its assessment is ``finding`` (the package's
operating threshold) and its score is the study's probability. Labelled studies
that are ``not_assessable``, ``outside_validated_range`` or not analysed are
listed apart, never counted as negatives; labels that match no analysed study,
and studies without a label, are listed too.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from clinibox_common.contracts.statuses import AssessmentKind
from clinibox_common.errors import EXIT_USAGE, CliniboxError
from clinibox_common.i18n import gettext
from firmware_app.cli.batch_stats import Accuracy, diagnostic_accuracy
from firmware_app.cli.batch_studies import StudySummary

_ = gettext
#: the labels file's required columns
STUDY_COLUMN, LABEL_COLUMN = "study", "label"


@dataclass(frozen=True)
class Label:
    """One row of the labels file: what it names, its truth (0/1) and its line."""

    key: str
    truth: int
    line: int


@dataclass
class Evaluation:
    """The model's accuracy on the labelled studies it judged, and what was left out."""

    accuracy: Accuracy
    threshold: float
    #: labelled studies the model gave no result for: (study key, truth, assessment)
    not_judged: list[tuple[str, int, str]] = field(default_factory=list)
    #: label keys that match no analysed study
    unmatched: list[str] = field(default_factory=list)
    #: studies with no label
    unlabelled: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready values (``None`` where a figure cannot be computed)."""
        a = self.accuracy

        def interval(value: object) -> dict[str, object]:
            return {k: getattr(value, k) for k in ("value", "low", "high")}

        return {
            "operating_threshold": self.threshold, "confidence": 0.95,
            "counts": {"true_positives": a.true_positives, "false_negatives": a.false_negatives,
                       "true_negatives": a.true_negatives,
                       "false_positives": a.false_positives},
            "sensitivity": {**interval(a.sensitivity), "method": "wilson"},
            "specificity": {**interval(a.specificity), "method": "wilson"},
            "auc": {**interval(a.auc), "standard_error": a.auc.standard_error,
                    "method": "delong"},
            "not_judged": [{"study_key": k, "truth": t, "assessment": s}
                           for k, t, s in self.not_judged],
            "unmatched_labels": self.unmatched, "unlabelled_studies": self.unlabelled,
        }


def _usage(message: str) -> CliniboxError:
    return CliniboxError(message, exit_status=EXIT_USAGE)


def read_labels(path: Path) -> list[Label]:
    """The rows of the labels file; CliniboxError (usage) when it cannot be read or is not
    in the format of the module's docstring."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _usage(_("labels file %(path)s: %(reason)s", path=str(path),
                       reason=getattr(exc, "strerror", None) or str(exc))) from None
    header = [name.strip().lower() for name in rows[0]] if rows else []
    if STUDY_COLUMN not in header or LABEL_COLUMN not in header:
        raise _usage(_("labels file %(path)s: the first row must name the columns "
                       "'study' and 'label'", path=str(path)))
    study_at, label_at = header.index(STUDY_COLUMN), header.index(LABEL_COLUMN)
    labels = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        key = row[study_at].strip() if study_at < len(row) else ""
        value = row[label_at].strip() if label_at < len(row) else ""
        if not key or value not in ("0", "1"):
            raise _usage(_("labels file %(path)s, line %(line)s: needs a study and a label "
                           "0 or 1", path=str(path), line=line))
        labels.append(Label(key, int(value), line))
    return labels


def _study_of(label: Label, studies: dict[str, StudySummary],
              file_studies: dict[Path, str], base: Path) -> str | None:
    """The study key ``label`` names: a study key, or the study of the file it names."""
    if label.key in studies:
        return label.key
    named = Path(label.key)
    for candidate in ([named] if named.is_absolute() else [base / named, named]):
        key = file_studies.get(candidate.resolve())
        if key is not None:
            return key
    return None


def match_labels(labels: list[Label], studies: list[StudySummary], labels_path: Path
                 ) -> tuple[dict[str, int], list[str]]:
    """(truth by study key, the label keys that match no study); CliniboxError (usage)
    when two rows give one study different labels."""
    by_key = {study.key: study for study in studies}
    file_studies = {Path(f.report["file"]).resolve(): study.key
                    for study in studies for f in study.files}
    truth: dict[str, int] = {}
    unmatched = []
    for label in labels:
        key = _study_of(label, by_key, file_studies, labels_path.parent)
        if key is None:
            unmatched.append(label.key)
        elif truth.setdefault(key, label.truth) != label.truth:
            raise _usage(_("labels file %(path)s, line %(line)s: study %(study)s has "
                           "another label on an earlier line", path=str(labels_path),
                           line=label.line, study=key))
    return truth, unmatched


def evaluate(studies: list[StudySummary], truth: dict[str, int], unmatched: list[str],
             threshold: float) -> Evaluation:
    """Sensitivity, specificity and AUC on the labelled studies the model judged."""
    scored = [s for s in studies if s.key in truth and s.judged]
    accuracy = diagnostic_accuracy(
        [truth[s.key] for s in scored], [s.assessment == AssessmentKind.FINDING for s in scored],
        [s.probability if s.probability is not None else 0.0 for s in scored])
    return Evaluation(
        accuracy, threshold,
        not_judged=[(s.key, truth[s.key], s.assessment) for s in studies
                    if s.key in truth and not s.judged],
        unmatched=unmatched, unlabelled=[s.key for s in studies if s.key not in truth])
