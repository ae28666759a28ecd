"""DICOM objects whose every identifying attribute holds a unique canary value.

Privacy tests send these through the box and then search every byte that
left it (and everything the hospital stored) for any canary: a patient name,
an id, a UID, a date, a free-text description, or a run of the pixel bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from phantoms.dicom import ct_dataset, us_dataset, write_dicom
from phantoms.images import generate

#: attributes that identify a patient, a study or a place (strings)
TEXT_ATTRIBUTES = (
    "PatientName", "PatientID", "OtherPatientIDs", "PatientAddress", "PatientComments",
    "AccessionNumber", "InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "StudyDescription", "SeriesDescription",
    "StudyID", "StationName", "DeviceSerialNumber",
)
DATE_ATTRIBUTES = ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate",
                   "ContentDate")
UID_ATTRIBUTES = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                  "FrameOfReferenceUID")


@dataclass
class CanarySet:
    """The canary values written, and the files that carry them."""

    files: list[Path] = field(default_factory=list)
    strings: list[str] = field(default_factory=list)
    pixel_runs: list[bytes] = field(default_factory=list)

    def found_in(self, data: bytes) -> list[str]:
        """Every canary (string, date, UID or pixel run) that occurs in ``data``."""
        hits = [s for s in self.strings if s.encode() in data]
        hits += [f"pixel run {i}" for i, run in enumerate(self.pixel_runs) if run in data]
        return hits


def _distinctive_run(pixels: bytes, length: int = 32) -> bytes:
    """The run of pixel bytes with the most distinct values (textured, not background)."""
    best, best_score = pixels[:length], -1
    for start in range(0, len(pixels) - length, 97):
        run = pixels[start:start + length]
        score = len(set(run))
        if score > best_score:
            best, best_score = run, score
    return best


def write_canary_studies(folder: Path, count: int, lesion: bool = True) -> CanarySet:
    """``count`` single-instance studies (CT and US in turn) full of canaries."""
    folder.mkdir(parents=True, exist_ok=True)
    canaries = CanarySet()
    for n in range(count):
        tag = f"{n:03d}"
        # at most 16 characters (SH), unique per attribute and study
        identity = {name: f"CNRY{i:02d}Q{tag}" for i, name in enumerate(TEXT_ATTRIBUTES)}
        identity["PatientName"] = f"CNRY^PATIENT{tag}"
        # distinctive dates, in DICOM (YYYYMMDD) form; ISO forms are searched too
        dates = {name: f"19{31 + n % 60:02d}0{1 + i}{11 + n % 17:02d}"
                 for i, name in enumerate(DATE_ATTRIBUTES)}
        uids = {name: f"1.2.826.0.1.3680043.9.7777.{41 + i}.{900000 + n}"
                for i, name in enumerate(UID_ATTRIBUTES)}
        phantom = generate("ct" if n % 2 == 0 else "us", np.random.default_rng(900 + n),
                           lesion=lesion)
        base = {**{k: v for k, v in identity.items()
                   if k in ("PatientName", "PatientID", "AccessionNumber", "InstitutionName",
                            "ReferringPhysicianName", "StudyID", "StudyDescription",
                            "SeriesDescription")},
                "PatientBirthDate": dates["PatientBirthDate"], "StudyDate": dates["StudyDate"],
                "StudyInstanceUID": uids["StudyInstanceUID"],
                "SeriesInstanceUID": uids["SeriesInstanceUID"],
                "SOPInstanceUID": uids["SOPInstanceUID"]}
        ds = ct_dataset(phantom, base) if n % 2 == 0 else us_dataset(phantom, base)
        for name, value in identity.items():
            setattr(ds, name, value)
        for name, value in dates.items():
            setattr(ds, name, value)
        ds.FrameOfReferenceUID = uids["FrameOfReferenceUID"]
        path = folder / f"canary-{tag}.dcm"
        write_dicom(ds, path)
        canaries.files.append(path)
        canaries.strings += [*identity.values(), *uids.values()]
        for value in dates.values():
            canaries.strings += [value, f"{value[:4]}-{value[4:6]}-{value[6:]}"]
        canaries.pixel_runs.append(_distinctive_run(bytes(ds.PixelData)))
    return canaries
