"""What the DICOM results tests share: the box's device name, the codes their measurements
are read by, and a document written to disk and checked by dicom3tools' ``dciodvfy``
(``tests/unit/firmware_app/test_dicom_results*.py``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes

from firmware_app.dicom_out.document import Document

DEVICE = "box-0042"
LONG_AXIS = hd.sr.CodedConcept(*codes.SCT.LongAxis)
SHORT_AXIS = hd.sr.CodedConcept(*codes.SCT.ShortAxis)
AREA = hd.sr.CodedConcept(*codes.SCT.Area)
MORPHOLOGY = hd.sr.CodedConcept(*codes.SCT.AssociatedMorphology)


def write_document(document: Document, folder: Path) -> Path:
    """``document`` saved in ``folder``, named by its kind and SOP Instance UID."""
    path = folder / f"{document.kind}-{document.sop_instance_uid}.dcm"
    document.dataset.save_as(path, enforce_file_format=True)
    return path


def dciodvfy(path: Path) -> list[str]:
    """dciodvfy's warnings about ``path``; fails the test on any error."""
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    assert errors == [], f"{path.name}: {errors}"
    return [line for line in lines if line.startswith("Warning")]


def allowed_warning(warning: str) -> bool:
    """Whether ``warning`` is one the module docstring of test_dicom_results.py explains."""
    return ("<99CLINIBOX>" in warning and "Coding Scheme Designator" in warning) or (
        "Patient's Weight" in warning) or warning.endswith("attribute <Laterality>")


def text_items(sr: pydicom.Dataset) -> list[str]:
    """The TEXT items of an SR's content tree, depth first."""
    found = []

    def walk(items) -> None:
        for item in items:
            if item.get("ValueType") == "TEXT":
                found.append(str(item.TextValue))
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return found


def imperfect_orientation(ds: pydicom.Dataset) -> None:
    """An orientation of five cosines, as some modalities write it."""
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1]
