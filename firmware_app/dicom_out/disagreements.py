"""The cases clinicians disagreed with, de-identified in one step for the model's makers.

``export_disagreements`` takes every study with a ``disagree`` verdict
(``storage/disagreements.py``) not exported this way before (or all of them),
exports each with the one de-identified study export (``export.py``: the same
profile, leak check and record in ``exports`` and the audit trail, the target
reading ``disagreements …``), and writes it as ``CASE0001/`` … with a
``case.json`` beside its ``IMAGE*.dcm`` files: the clinicians' verdicts, the
model's output (model id and version, assessment, probability, lesion records
without frames' times or anything of the patient) and the de-identified Study
Instance UID, so the JSON matches the images. Clinicians' comments are not
stored by the box, and the export's profile removes every free text, so none
is written. The cases go into a new or empty folder or one zip file.
``clinibox convert --extra-validation`` reads such an export back
(``converters/feedback.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from clinibox_common.contracts.statuses import Verdict
from clinibox_common.fs import fsync_dir
from firmware_app.dicom_out.export import ExportError, check_target, export_study
from firmware_app.dicom_out.leaks import identifying_values, leaked
from firmware_app.storage import exports as export_queries
from firmware_app.storage.disagreements import (
    TARGET_PREFIX,
    DisagreementCase,
    ImageOpinion,
    list_cases,
)

#: what ``case.json`` says it is (``converters/feedback.py`` checks it)
CASE_FORMAT = "clinibox-disagreement/1"
CASE_FILE = "case.json"
#: the keys of a lesion record that go into ``case.json`` (label, probabilities, box, sizes)
LESION_KEYS = ("label", "probability", "class_probabilities", "box", "long_axis_px",
               "short_axis_px", "area_px2", "long_axis_mm", "short_axis_mm", "area_mm2",
               "units", "size_from")
COMMENT_RULE = ("clinicians' comments are not exported: the de-identification profile "
                "removes every free text")


@dataclass
class DisagreementSummary:
    """What one disagreement export wrote: its cases (folder name → study id) and skips."""

    target: str
    cases: dict[str, int] = field(default_factory=dict)
    export_ids: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """The summary as plain data (``--json``)."""
        return {"target": self.target, "cases": self.cases, "export_ids": self.export_ids,
                "skipped": self.skipped, "left_out": self.left_out}


def case_record(case: DisagreementCase, study_uid: str,
                files: list[tuple[str, ImageOpinion]]) -> dict[str, Any]:
    """``case.json`` for one exported case: nothing but verdicts, the model's output and the
    de-identified UIDs the images carry."""
    images = []
    for name, image in files:
        name_part, _, version = image.model_id.partition("@")
        images.append({
            "file": name, "model_id": name_part, "model_version": version,
            "assessment": image.assessment, "probability": round(image.probability, 6),
            "finding": image.finding, "verdict": image.verdict,
            "verdicts": [{"finding": finding, "verdict": verdict}
                         for finding, values in sorted(image.verdicts.items())
                         for verdict in values],
            "lesions": [{k: lesion[k] for k in LESION_KEYS if k in lesion}
                        for lesion in image.lesions]})
    model, _, version = case.model_id.partition("@")
    return {"format": CASE_FORMAT, "study_instance_uid": study_uid, "modality": case.modality,
            "model_id": model, "model_version": version, "assessment": case.assessment,
            "probability": round(case.probability, 6),
            "verdict": Verdict.DISAGREE.value, "comment": None, "comment_rule": COMMENT_RULE,
            "images": images}


def export_disagreements(conn: sqlite3.Connection, out: Path, *, as_zip: bool = False,
                         account: str, address: str = "", since: float | None = None,
                         include_exported: bool = False, target_label: str | None = None,
                         ) -> DisagreementSummary:
    """Export the listed disagreement cases into the folder (or zip) ``out``; see the module
    docstring. Raises :class:`ExportError` when there is no case to export."""
    out = Path(out)
    label = target_label or str(out)
    cases = [c for c in list_cases(conn, since) if include_exported or not c.exported]
    if not cases:
        raise ExportError("no disagreement case to export (every listed case was exported "
                          "before; ask for all of them to export them again)")
    check_target(out, as_zip)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".clinibox-disagreements-", dir=out.parent))
    summary = DisagreementSummary(label)
    try:
        bundle = staging / "bundle"
        bundle.mkdir()
        for case in cases:
            name = f"CASE{len(summary.cases) + 1:04d}"
            try:
                _export_case(conn, case, bundle / name, summary, account=account,
                             address=address, label=f"{TARGET_PREFIX} to {label}")
            except ExportError as exc:
                summary.skipped.append(f"study {case.study_id}: {exc}")
                continue
            summary.cases[name] = case.study_id
        if not summary.cases:
            raise ExportError("no disagreement case could be exported: "
                              + "; ".join(summary.skipped))
        _place(bundle, out, as_zip)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _export_case(conn: sqlite3.Connection, case: DisagreementCase, folder: Path,
                 summary: DisagreementSummary, *, account: str, address: str,
                 label: str) -> None:
    """One case: its images through the study export, then ``case.json`` beside them."""
    result = export_study(conn, str(case.study_id), folder, account=account, address=address,
                          target_label=label)
    summary.export_ids.append(result.export_id)
    summary.left_out += [f"study {case.study_id} {x.what}: {x.reason}" for x in result.left_out]
    gone = {x.what for x in result.left_out}
    instances = export_queries.study_instances(conn, case.study_key)
    written = [i for i in instances if f"instance {i.id}" not in gone]
    opinions = {image.instance_id: image for image in case.images}
    images = [name for name in result.files if name.startswith("IMAGE")]
    files = [(name, opinions[i.id]) for name, i in zip(images, written, strict=True)
             if i.id in opinions]
    uids = {str(pydicom.dcmread(folder / name, stop_before_pixels=True).StudyInstanceUID)
            for name in images}
    if len(uids) != 1:
        raise ExportError(f"the exported images of study {case.study_id} do not share one "
                          "Study Instance UID")
    data = json.dumps(case_record(case, uids.pop(), files), indent=2,
                      ensure_ascii=False).encode()
    values: dict[bytes, str] = {}
    for instance in written:
        values.update(identifying_values(pydicom.dcmread(instance.spool_path,
                                                         stop_before_pixels=True)))
    survivors = leaked(data, values)
    if survivors:  # cannot happen with the fields above; refuse rather than trust that
        raise ExportError(f"case.json of study {case.study_id} would carry "
                          + ", ".join(survivors))
    (folder / CASE_FILE).write_bytes(data)


def _place(bundle: Path, out: Path, as_zip: bool) -> None:
    """Move the staged cases to ``out`` (a folder) or write them as the zip ``out``."""
    if as_zip:
        staged = bundle.parent / "bundle.zip"
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(bundle.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(bundle).as_posix())
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())
        staged.replace(out)
    else:
        if out.is_dir():
            out.rmdir()
        bundle.replace(out)
    fsync_dir(out.parent)

