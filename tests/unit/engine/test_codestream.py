"""Compressed frames are checked against the DICOM header before any decoder sees them.

Real encoders' output (pydicom's own test images: JPEG baseline, extended and
lossless, JPEG-LS, JPEG 2000, RLE, one and several frames) must pass; the same
streams with their headers rewritten must be refused with a plain reason.
"""

from __future__ import annotations

import struct

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames

from engine.imaging.codestream import (
    StreamMismatch,
    check_frames,
    j2k_facts,
    jpeg_facts,
    rle_segments,
)

REAL = ["JPEG2000.dcm", "emri_small_RLE.dcm", "SC_rgb_rle.dcm", "SC_rgb_rle_16bit.dcm",
        "SC_rgb_rle_2frame.dcm", "JPEG-LL.dcm", "JPEG-lossy.dcm", "SC_rgb_jpeg_dcmtk.dcm",
        "color3d_jpeg_baseline.dcm", "emri_small_jpeg_2k_lossless.dcm", "693_J2KR.dcm",
        "MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_16.dcm", "GDCMJ2K_TextGBR.dcm"]


def _check(ds, pixel_data=None, **header) -> None:
    facts = {"rows": ds.Rows, "columns": ds.Columns, "samples": ds.SamplesPerPixel,
             "bits_allocated": ds.BitsAllocated, "frames": int(ds.get("NumberOfFrames", 1))}
    facts.update(header)
    check_frames(ds.file_meta.TransferSyntaxUID, pixel_data or ds.PixelData, **facts)


def _first_frame(ds) -> bytes:
    return next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1))))


@pytest.mark.parametrize("name", REAL)
def test_real_encoders_streams_match_their_headers(name):
    _check(dcmread(get_testdata_file(name)))


@pytest.mark.parametrize("name", ["JPEG-lossy.dcm", "JPEG2000.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm"])
def test_a_header_that_understates_the_stream_is_refused(name):
    ds = dcmread(get_testdata_file(name))
    with pytest.raises(StreamMismatch, match=rf"stream says {ds.Columns} × {ds.Rows} pixels, "
                                             rf"the DICOM header 256 × 256"):
        _check(ds, rows=256, columns=256)
    with pytest.raises(StreamMismatch, match="components, the DICOM header 3 samples"):
        _check(ds, samples=3)


def test_a_j2k_siz_claiming_40000_pixels_is_read_without_decoding():
    frame = bytearray(_first_frame(dcmread(get_testdata_file("emri_small_jpeg_2k_lossless.dcm"))))
    for offset in (8, 12):
        frame[offset:offset + 4] = struct.pack(">I", 40000)
    facts = j2k_facts(bytes(frame))
    assert (facts.columns, facts.rows, facts.components) == (40000, 40000, 1)
    wrapped = (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + struct.pack(">I4s", 8 + len(frame), b"jp2c")
               + bytes(frame))
    assert j2k_facts(wrapped) == facts  # the same codestream inside a JP2 file


def test_jpeg_frame_header_is_found_after_other_segments():
    facts = jpeg_facts(_first_frame(dcmread(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))))
    assert (facts.kind, facts.columns, facts.rows, facts.components) == ("JPEG", 100, 100, 3)
    with pytest.raises(StreamMismatch, match="no frame header"):
        jpeg_facts(b"\xff\xd8\xff\xda\x00\x02" + bytes(50))


def test_rle_segments_must_match_samples_and_bits():
    ds = dcmread(get_testdata_file("SC_rgb_rle_16bit.dcm"))  # 3 samples × 2 bytes = 6 segments
    assert rle_segments(_first_frame(ds)) == 6
    with pytest.raises(StreamMismatch, match="6 segments, the DICOM header needs 3"):
        _check(ds, bits_allocated=8)
    broken = struct.pack("<16I", 2, 64, 40, *([0] * 13)) + bytes(100)  # offsets go backwards
    with pytest.raises(StreamMismatch, match="RLE header is inconsistent"):
        check_frames(ds.file_meta.TransferSyntaxUID, encapsulate([broken]), rows=8, columns=8,
                     samples=1, bits_allocated=16, frames=1)
