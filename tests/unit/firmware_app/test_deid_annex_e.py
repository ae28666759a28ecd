"""PS3.15 Table E.1-1 as data, applied at every level, and pixels cleaned by the image's kind.

Real images (pydicom's test files) with canaries in nested sequences (Icon Image
with a banner, Acquisition Context text, a Code Meaning with the patient's name,
Digital Signatures, Original Attributes, MAC Parameters, Encrypted Attributes)
and burned-in banners in ultrasound sent as OT, a `NO\\YES` annotation and a
secondary capture: each written file is read back, searched byte by byte
(case-insensitive) for every canary, and its banner rows checked blank.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, tag_for_keyword

from firmware_app.dicom_out.annex_e_table import TABLE
from firmware_app.dicom_out.confidentiality import ACTIONS, resolved_action
from firmware_app.dicom_out.deidentify import Deidentifier
from firmware_app.dicom_out.leaks import identifying_values, leaked
from tests.canary import CanarySet
from tests.export_canaries import BANNER_ROWS, burn_banner, fill, nest_canaries

#: (name, pydicom test file, what is done to it) of the objects with a banner
CASES = (("us_as_ot", "US1_UNCR.dcm"), ("ct_no_yes", "CT_small.dcm"),
         ("secondary_capture", "SC_rgb_small_odd.dcm"))


def _prepared(name: str, source: str, canaries: CanarySet) -> Dataset:
    ds = pydicom.dcmread(get_testdata_file(source))
    fill(ds, 7, canaries)
    nest_canaries(ds, canaries)
    burn_banner(ds)
    if name == "us_as_ot":
        ds.Modality = "OT"  # an ultrasound SOP class whatever the Modality says
    elif name == "ct_no_yes":
        ds.BurnedInAnnotation = ["NO", "YES"]
    else:
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.pop("BurnedInAnnotation", None)
    return ds


@pytest.fixture(scope="module")
def exported() -> tuple[CanarySet, dict[str, tuple[Dataset, bytes, list[str]]]]:
    canaries, out = CanarySet(), {}
    deidentifier = Deidentifier()
    for name, source in CASES:
        ds = _prepared(name, source, canaries)
        values = identifying_values(ds)
        deidentifier.deidentify(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        out[name] = (pydicom.dcmread(io.BytesIO(data)), data, leaked(data, values))
    return canaries, out


def test_the_table_holds_every_row_and_resolves_to_one_action():
    assert len(TABLE) > 600
    for tag, (_name, basic, _dates, _content) in TABLE.items():
        try:
            vr = str(dictionary_VR(tag))
        except KeyError:
            vr = ""
        assert resolved_action(tag, vr) in ACTIONS, (hex(tag), basic)
    assert resolved_action(tag_for_keyword("IconImageSequence"), "SQ") == "X"
    assert resolved_action(tag_for_keyword("ReferencedImageSequence"), "SQ") == "U"
    assert resolved_action(tag_for_keyword("AcquisitionContextSequence"), "SQ") == "Z"
    assert resolved_action(tag_for_keyword("OperatorsName"), "PN") == "D"
    assert resolved_action(tag_for_keyword("StudyDate"), "DA") == "C"  # modified dates
    assert resolved_action(0x60023000, "OW") == "X"  # an overlay's data, any 60xx group
    assert resolved_action(tag_for_keyword("Rows"), "US") is None  # not listed: kept


def test_no_canary_survives_in_any_byte_case_insensitive(exported):
    canaries, files = exported
    lowered = [s.lower().encode() for s in canaries.strings]
    for name, (_ds, data, survivors) in files.items():
        assert [s for s in lowered if s in data.lower()] == [], name
        assert survivors == [], name  # the leak check agrees: nothing left out


def test_nested_sequences_are_cleaned(exported):
    _canaries, files = exported
    for name, (ds, _data, _) in files.items():
        for keyword in ("IconImageSequence", "DigitalSignaturesSequence",
                        "OriginalAttributesSequence", "MACParametersSequence",
                        "EncryptedAttributesSequence"):
            assert keyword not in ds, (name, keyword)
        assert len(ds.AcquisitionContextSequence) == 0
        assert ds.ContentSequence[0].TextValue == "DEIDENTIFIED"  # not the box's report
        region = ds.AnatomicRegionSequence[0]
        assert region.CodeMeaning == "(CNRYX2, 99LOCAL)"  # the name in it: replaced


def test_banners_are_blank_and_the_rule_is_recorded(exported):
    _canaries, files = exported
    expected = {"us_as_ot": "US-FRAME", "ct_no_yes": "ALL", "secondary_capture": "ALL"}
    for name, (ds, _data, _) in files.items():
        pixels = np.asarray(ds.pixel_array)
        assert not pixels[..., :BANNER_ROWS, :].any() if pixels.ndim == 3 and \
            ds.SamplesPerPixel == 1 else not pixels[:BANNER_ROWS].any(), name
        assert f"CLEAN PIXEL DATA {expected[name]}" in ds.DeidentificationMethod, name
        assert "113101" in [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    us = np.asarray(files["us_as_ot"][0].pixel_array)
    assert us[200:400, 100:500].any()  # the ultrasound's data is kept


def test_a_short_identifier_is_found_as_a_whole_token_in_the_header_not_by_chance():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID, ds.PatientName = "12345", "Li^Wei"
    values = identifying_values(ds)
    assert b"12345" in values and b"Li" in values
    ds.StudyID = "12345"  # a survivor in the header, as a whole value
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert "PatientID" in leaked(buffer.getvalue(), values)
    clean = Deidentifier().deidentify(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    clean.PixelData = b"12345LI" * (len(clean.PixelData) // 7) + b"\0" * (
        len(clean.PixelData) % 7)  # by chance in pixel data: no survivor
    clean.ImageComments = "seen by dr li"  # lower case, a whole token: a survivor
    buffer = io.BytesIO()
    clean.save_as(buffer, enforce_file_format=True)
    assert leaked(buffer.getvalue(), values) == ["PatientName"]
