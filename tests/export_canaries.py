"""Real DICOM objects (pydicom's test files) with every identifying attribute a canary.

For the de-identified export's tests: one study of a CT, a JPEG 2000 ultrasound
without regions, a palette ultrasound with regions, a multi-frame enhanced MR
and a multi-frame ultrasound with regions, all sharing one canary Study
Instance UID. Every text, name (a Chinese one among them), id, date, time, UID,
comment, private attribute, overlay and curve holds a value found nowhere else,
so a search of the exported bytes proves none survived.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.sequence import Sequence

from tests.canary import DATE_ATTRIBUTES, TEXT_ATTRIBUTES, CanarySet

#: the one study all canary files belong to
STUDY_UID = "1.2.826.0.1.3680043.9.7777.40.990001"
#: a Chinese patient name (ideographic), searched for in UTF-8
CHINESE_NAME = "王秀英"
#: (name, pydicom test file) of the study's objects
SOURCES = (("ct", "CT_small.dcm"), ("us_band", "US1_J2KR.dcm"), ("us_regions", "OBXXXX1A.dcm"),
           ("mr_frames", "emri_small.dcm"), ("us_frames", "US1_UNCR.dcm"))
#: the data region of the multi-frame ultrasound made from US1_UNCR (x0, y0, x1, y1)
US_FRAMES_REGION = (20, 110, 619, 330)
TIME_ATTRIBUTES = ("StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime")


@dataclass
class CanaryStudy:
    """The files written, the canaries in them, and each file's name by kind."""

    canaries: CanarySet
    files: dict[str, Path] = field(default_factory=dict)


def canary_date(n: int, i: int) -> dt.date:
    """Date ``i`` of file ``n``: three years from any other, so that no date shifted back by
    the export (at most two years) lands on another canary."""
    return dt.date(1901 + 3 * (n * 6 + i), 1 + i, 11 + n)


def _region(x0: int, y0: int, x1: int, y1: int) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = 1, 1, 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    item.PhysicalUnitsXDirection, item.PhysicalUnitsYDirection = 3, 3
    item.PhysicalDeltaX, item.PhysicalDeltaY = 0.01, 0.01
    return item


def _us_frames(ds: Dataset) -> None:
    """US1_UNCR turned into a three-frame ultrasound cine with one data region."""
    frame = np.asarray(ds.pixel_array, dtype=np.uint8)
    frames = np.stack([np.roll(frame, k, axis=1) for k in range(3)])
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    ds.set_pixel_data(frames, "RGB", 8, generate_instance_uid=False)
    ds.FrameTime = 33.3
    ds.FrameIncrementPointer = 0x00181063
    ds.SequenceOfUltrasoundRegions = Sequence([_region(*US_FRAMES_REGION)])


def _item(**values: str) -> Dataset:
    item = Dataset()
    for name, value in values.items():
        setattr(item, name, value)
    return item


def fill(ds: Dataset, n: int, canaries: CanarySet) -> None:
    """Every identifying attribute of ``ds`` a canary of file ``n`` (noted in ``canaries``)."""
    tag = f"{n:03d}"
    ds.SpecificCharacterSet = "ISO_IR 192"
    texts = {name: f"CNRY{i:02d}Q{tag}" for i, name in enumerate(TEXT_ATTRIBUTES)}
    for name, value in texts.items():
        setattr(ds, name, value)
    ds.PatientName = f"CNRY^PATIENT{tag}={CHINESE_NAME}^CNRY"
    texts["PatientName"] = f"CNRY^PATIENT{tag}"
    more = {"PatientTelephoneNumbers": f"+86-CNRYTEL{tag}", "ImageComments": f"CNRYIMGCMT{tag}",
            "AdditionalPatientHistory": f"CNRYHISTORY{tag}", "ProtocolName": f"CNRYPROTO{tag}",
            "InstitutionalDepartmentName": f"CNRYDEPT{tag}", "IssuerOfPatientID": f"CNRYISS{tag}"}
    for name, value in more.items():
        setattr(ds, name, value)
    ds.PatientSex, ds.PatientAge, ds.PatientWeight, ds.PatientSize = "F", "042Y", 61.5, 1.62
    dates = {name: canary_date(n, i).strftime("%Y%m%d") for i, name in enumerate(DATE_ATTRIBUTES)}
    for name, value in dates.items():
        setattr(ds, name, value)
    times = {name: f"{10 + i:02d}{21 + n:02d}{37 + i:02d}.{n}{i}4817"
             for i, name in enumerate(TIME_ATTRIBUTES)}
    for name, value in times.items():
        setattr(ds, name, value)
    ds.AcquisitionDateTime = canary_date(n, 5).strftime("%Y%m%d") + f"{13 + n:02d}2417.{n}33"
    uids = {"StudyInstanceUID": STUDY_UID,
            "SeriesInstanceUID": f"1.2.826.0.1.3680043.9.7777.41.{990000 + n}",
            "SOPInstanceUID": f"1.2.826.0.1.3680043.9.7777.42.{990000 + n}",
            "FrameOfReferenceUID": f"1.2.826.0.1.3680043.9.7777.43.{990000 + n}"}
    for name, value in uids.items():
        setattr(ds, name, value)
    ds.file_meta.MediaStorageSOPInstanceUID = uids["SOPInstanceUID"]
    patient_uid = f"1.2.826.0.1.3680043.9.7777.44.{990000 + n}"
    ds.OtherPatientIDsSequence = Sequence([_item(PatientID=f"CNRYOPID{tag}",
                                                 IssuerOfPatientID=f"CNRYOPISS{tag}")])
    ds.ReferencedPatientSequence = Sequence([_item(
        ReferencedSOPClassUID="1.2.840.10008.3.1.2.1.1", ReferencedSOPInstanceUID=patient_uid)])
    ds.RequestAttributesSequence = Sequence([_item(
        RequestedProcedureID=f"CNRYREQ{tag}", ScheduledProcedureStepID=f"CNRYSPS{tag}",
        RequestedProcedureDescription=f"CNRYREQDESC{tag}")])
    block = ds.private_block(0x0029, "CNRY PRIVATE", create=True)
    block.add_new(0x10, "LO", f"CNRYPRIV{tag}")
    ds.add_new(0x60000022, "LO", f"CNRYOVERLAY{tag}")  # Overlay Description
    ds.add_new(0x50002500, "LO", f"CNRYCURVE{tag}")  # Curve Label
    canaries.strings += [*texts.values(), *more.values(), *uids.values(), patient_uid,
                         CHINESE_NAME, "CNRYOPID" + tag, "CNRYOPISS" + tag, "CNRYREQ" + tag,
                         "CNRYSPS" + tag, "CNRYREQDESC" + tag, "CNRYPRIV" + tag,
                         "CNRYOVERLAY" + tag, "CNRYCURVE" + tag, ds.AcquisitionDateTime,
                         *times.values()]
    for value in dates.values():
        canaries.strings += [value, f"{value[:4]}-{value[4:6]}-{value[6:]}"]
    # the source file's own dates (pydicom's, e.g. 20040826) become this file's first canary
    # date too: one of them, shifted back by the export, could land on another file's canary
    # (2003-05-16 is 468 days before 2004-08-26) and be taken for a leak
    for element in ds.iterall():
        if element.VR == "DA" and element.value and str(element.value) not in dates.values():
            element.value = dates[DATE_ATTRIBUTES[0]]


def write_canary_study(folder: Path) -> CanaryStudy:
    """The study's five objects written under ``folder`` (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    study = CanaryStudy(CanarySet())
    for n, (name, source) in enumerate(SOURCES):
        ds = pydicom.dcmread(get_testdata_file(source))
        if name == "us_frames":
            _us_frames(ds)
        fill(ds, n, study.canaries)
        path = folder / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        study.files[name] = path
    return study


#: free text about the patient in an Acquisition Context item (a finding of issue 43)
CONTEXT_TEXT = "Pt John Smith, DOB 1 Jan 1970, MRN 12345"
#: the burned-in banner's rows (top of the image) drawn by :func:`burn_banner`
BANNER_ROWS = 12


def burn_banner(ds: Dataset) -> None:
    """Draw a bright banner (the burned-in name bar) over the top rows of ``ds``'s pixels."""
    pixels = np.array(ds.pixel_array)
    view = pixels if int(ds.get("NumberOfFrames", 1) or 1) > 1 else pixels[np.newaxis]
    view[:, :BANNER_ROWS] = np.iinfo(pixels.dtype).max if pixels.dtype.kind in "ui" else 255
    photometric = "RGB" if int(ds.SamplesPerPixel) > 1 else str(ds.PhotometricInterpretation)
    ds.set_pixel_data(pixels, photometric, int(ds.BitsStored), generate_instance_uid=False)


def nest_canaries(ds: Dataset, canaries: CanarySet) -> None:
    """Canaries in nested sequences: an Icon Image with a banner, an Acquisition Context
    Text Value, a Code Meaning with the patient's name, Digital Signatures, Original
    Attributes, MAC Parameters and Encrypted Attributes, a Content Sequence's text."""
    icon = Dataset()
    icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
    icon.Rows = icon.Columns = 16
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    icon.PixelData = b"CNRYICONBANNER" + bytes(range(256 - 14))
    ds.IconImageSequence = Sequence([icon])
    context = _item(ValueType="TEXT", TextValue=CONTEXT_TEXT)
    context.ConceptNameCodeSequence = Sequence([_item(
        CodeValue="CNRYX1", CodingSchemeDesignator="99LOCAL",
        CodeMeaning=f"Note on {ds.PatientName.family_name} today")])
    ds.AcquisitionContextSequence = Sequence([context])
    ds.AnatomicRegionSequence = Sequence([_item(
        CodeValue="CNRYX2", CodingSchemeDesignator="99LOCAL",
        CodeMeaning=f"{str(ds.PatientName.family_name).lower()} left arm")])
    ds.ContentSequence = Sequence([_item(ValueType="TEXT", TextValue="CNRYCONTENTTEXT")])
    signature = _item(DigitalSignatureUID="1.2.826.0.1.3680043.9.7777.45.1")
    signature.Signature = b"CNRYSIGNATURE00"
    ds.DigitalSignaturesSequence = Sequence([signature])
    original = Dataset()
    original.ModifiedAttributesSequence = Sequence([_item(PatientName="CNRYORIG^NAME",
                                                           PatientID="CNRYORIGID")])
    original.SourceOfPreviousValues = "CNRYSOURCE"
    ds.OriginalAttributesSequence = Sequence([original])
    mac = _item(MACCalculationTransferSyntaxUID="1.2.840.10008.1.2.1")
    mac.add_new(0x04000020, "AT", [0x00100010])
    ds.add_new(0x4FFE0001, "SQ", Sequence([mac]))  # MAC Parameters Sequence
    encrypted = Dataset()
    encrypted.EncryptedContentTransferSyntaxUID = "1.2.840.10008.1.2.1"
    encrypted.EncryptedContent = b"CNRYENCRYPTED0"
    ds.EncryptedAttributesSequence = Sequence([encrypted])
    canaries.strings += [CONTEXT_TEXT, "John Smith", "CNRYICONBANNER", "CNRYCONTENTTEXT",
                         "CNRYSIGNATURE00", "CNRYORIG^NAME", "CNRYORIGID", "CNRYSOURCE",
                         "CNRYENCRYPTED0"]
