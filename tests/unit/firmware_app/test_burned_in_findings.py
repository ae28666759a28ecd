"""Issue 56's pixel findings in the header rules of ``burned_in.py``, on pydicom's real files.

A CT screen save that does not say Burned In Annotation, a name drawn in the
unused high bits of a 12-bit image, and an ultrasound region that covers the
whole image: each once kept its text, each now loses it.
"""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import RLELossless

from firmware_app.dicom_out.burned_in import WHOLE_IMAGE, clean_burned_in_text
from firmware_app.dicom_out.deidentify import Deidentifier


def _region(x1: int, y1: int, x0: int = 0, y0: int = 0) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = 1, 1, 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    return item


def test_a_ct_screen_save_without_burned_in_annotation_loses_its_name_plate():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    ds.pop("BurnedInAnnotation", None)
    plate = np.array(ds.pixel_array)
    plate[2:10, 2:60] = 3000  # the name plate
    ds.PixelData = plate.astype("<i2").tobytes()
    out = Deidentifier().deidentify(ds)
    assert not np.asarray(out.pixel_array).any()
    assert "CLEAN PIXEL DATA ALL" in out.DeidentificationMethod
    says_no = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    says_no.ImageType, says_no.BurnedInAnnotation = ["DERIVED", "PRIMARY", "SCREEN SAVE"], "NO"
    assert clean_burned_in_text(says_no).code == "ALL"  # its header is not believed
    plain = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # ORIGINAL\PRIMARY\AXIAL
    assert clean_burned_in_text(plain).code == ""


def test_a_name_in_the_unused_high_bits_is_cleared_and_the_stored_bits_kept():
    ds = pydicom.dcmread(get_testdata_file("emri_small.dcm"))  # 12 bits stored of 16
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 12, 11)
    stored = np.array(ds.pixel_array)
    hidden = stored.copy()
    hidden[:, 4:12, 4:40] |= 0x8000  # a name drawn in bit 15, invisible to a 12-bit viewer
    ds.PixelData = hidden.astype("<u2").tobytes()
    compressed = pydicom.dcmread(get_testdata_file("emri_small.dcm"))
    compressed.PixelData = hidden.astype("<u2").tobytes()
    compressed.compress(RLELossless)  # the codestream keeps all 16 bits
    for source in (ds, compressed):
        out = Deidentifier().deidentify(source)
        raw = np.frombuffer(out.PixelData, dtype="<u2")
        assert not (raw & 0xF000).any()
        assert np.array_equal(raw.reshape(stored.shape), stored)
        assert "HIGH-BITS" in " ".join(out.DeidentificationMethod)
        assert not out.file_meta.TransferSyntaxUID.is_encapsulated
    clean = pydicom.dcmread(get_testdata_file("emri_small.dcm"))
    before = clean.PixelData
    assert clean_burned_in_text(clean).code == "" and clean.PixelData == before


def test_signed_high_bits_become_the_sign_and_a_sign_extended_image_is_kept():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.BitsStored, ds.HighBit = 12, 11
    values = np.clip(np.array(ds.pixel_array), -2048, 2047).astype(np.int16)
    ds.PixelData = values.astype("<i2").tobytes()  # two's complement: sign-extended
    assert clean_burned_in_text(ds).code == ""
    hidden = values.view(np.uint16).copy()
    hidden[0:4, 0:30] ^= 0x4000  # a name in bit 14
    ds.PixelData = hidden.astype("<u2").tobytes()
    assert clean_burned_in_text(ds).code == "HIGH-BITS"
    assert np.array_equal(np.frombuffer(ds.PixelData, dtype="<i2").reshape(values.shape),
                          values)


def test_an_ultrasound_region_over_the_whole_image_counts_as_no_region():
    ds = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"))  # 640 x 480 RGB
    ds.BurnedInAnnotation = "YES"
    ds.SequenceOfUltrasoundRegions = [_region(639, 479)]
    banner = np.array(ds.pixel_array)
    banner[4:24, 100:500] = 255
    ds.PixelData = banner.tobytes()
    out = Deidentifier().deidentify(ds)
    assert "CLEAN PIXEL DATA US-FRAME" in out.DeidentificationMethod
    assert not np.asarray(out.pixel_array)[:24].any()
    # two regions that together cover 95 % of it are the whole image too …
    ds = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"))
    ds.SequenceOfUltrasoundRegions = [_region(639, 240), _region(639, 479, 0, 241 + 4)]
    assert WHOLE_IMAGE <= 1 - 4 * 640 / (640 * 480)
    assert clean_burned_in_text(ds).code == "US-FRAME"
    # … and a real one is kept with the pixels outside it blanked
    ds = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"))
    ds.SequenceOfUltrasoundRegions = [_region(520, 420, 120, 90)]
    assert clean_burned_in_text(ds).code == "US-REGIONS"
