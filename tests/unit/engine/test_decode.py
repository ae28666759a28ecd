"""decode(): pydicom's real test files, constructed datasets with known answers, the
malformed corpus, and the limits."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, pixel_array

from engine.imaging import decode as decode_module
from engine.imaging.decode import (
    DecodeError,
    decode,
    decode_guard,
    frame_pixels,
    open_dataset,
    select_frames,
)
from engine.imaging.wrap import is_picture
from engine.settings import LimitsConfig
from tests.corpus import build_malformed_corpus, data_file, image_dataset, to_bytes, write

LIMITS = LimitsConfig()

# name: (frames decoded with max_frames=8, rows, columns, modality)
REAL_FILES = {
    "CT_small.dcm": (1, 128, 128, "CT"),  # explicit VR little endian
    "MR_small.dcm": (1, 64, 64, "MR"),
    "MR_small_implicit.dcm": (1, 64, 64, "MR"),  # implicit VR little endian
    "MR_small_bigendian.dcm": (1, 64, 64, "MR"),  # explicit VR big endian
    "image_dfl.dcm": (1, 512, 512, "OT"),  # deflated
    "MR_small_RLE.dcm": (1, 64, 64, "MR"),  # RLE
    "emri_small_RLE.dcm": (8, 64, 64, "MR"),  # RLE, enhanced MR, 10 frames
    "SC_rgb_rle.dcm": (1, 100, 100, "OT"),
    "SC_rgb_jpeg_dcmtk.dcm": (1, 100, 100, "OT"),  # JPEG baseline, YBR_FULL
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": (1, 100, 100, "OT"),  # JPEG baseline, YBR_FULL_422
    "color3d_jpeg_baseline.dcm": (8, 480, 640, "US"),  # US multi-frame, 120 frames
    "examples_ybr_color.dcm": (8, 240, 320, "US"),  # US multi-frame, 30 frames
    "JPGExtended.dcm": (1, 1024, 256, "NM"),  # JPEG extended 12-bit
    "JPEG-LL.dcm": (1, 1024, 256, "NM"),  # JPEG lossless SV1, 16-bit
    "JPGLosslessP14SV1_1s_1f_8b.dcm": (1, 768, 1024, "US"),  # JPEG lossless SV1, 8-bit
    "SC_rgb_jpeg_gdcm.dcm": (1, 100, 100, "OT"),  # JPEG lossless SV1, RGB
    "MR_small_jpeg_ls_lossless.dcm": (1, 64, 64, "MR"),  # JPEG-LS lossless
    "emri_small_jpeg_ls_lossless.dcm": (8, 64, 64, "MR"),
    "JPEGLSNearLossless_08.dcm": (1, 45, 10, ""),  # JPEG-LS near-lossless
    "JPEGLSNearLossless_16.dcm": (1, 50, 10, ""),
    "SC_rgb_jls_lossy_line.dcm": (1, 100, 100, ""),
    "MR_small_jp2klossless.dcm": (1, 64, 64, "MR"),  # JPEG 2000 lossless
    "emri_small_jpeg_2k_lossless.dcm": (8, 64, 64, "MR"),
    "US1_J2KR.dcm": (1, 480, 640, "US"),  # JPEG 2000 lossless, YBR_RCT
    "US1_J2KI.dcm": (1, 480, 640, "US"),  # JPEG 2000 lossy, YBR_ICT
    "JPEG2000.dcm": (1, 1024, 256, "NM"),  # JPEG 2000 lossy, grey
    "MR2_J2KI.dcm": (1, 1024, 1024, "MR"),
    "693_J2KI.dcm": (1, 512, 512, "CT"),
    "RG1_J2KI.dcm": (1, 1955, 1841, "CR"),  # JPEG 2000 lossy CR, MONOCHROME1
    "US1_UNCR.dcm": (1, 480, 640, "US"),  # RGB
    "RG1_UNCR.dcm": (1, 1955, 1841, "CR"),  # MONOCHROME1, window
    "RG3_UNCR.dcm": (1, 1760, 1760, "CR"),
    "6154": (1, 16, 16, "CR"),  # CR (MONOCHROME1) from the DICOMDIR test set
    "eCT_Supplemental.dcm": (2, 512, 512, "CT"),  # enhanced CT
    "emri_small.dcm": (8, 64, 64, "MR"),  # enhanced MR
    "SC_rgb.dcm": (1, 100, 100, "OT"),
    "SC_rgb_2frame.dcm": (2, 100, 100, "OT"),
    "SC_rgb_16bit.dcm": (1, 100, 100, "OT"),
    "SC_ybr_full_uncompressed.dcm": (1, 100, 100, "OT"),
    "SC_ybr_full_422_uncompressed.dcm": (1, 100, 100, "OT"),
    "examples_palette.dcm": (1, 350, 800, "US"),  # PALETTE COLOR, 8-bit LUT
    "gdcm-US-ALOKA-16.dcm": (1, 480, 640, "US"),  # PALETTE COLOR, 16-bit LUT
    "OBXXXX1A.dcm": (1, 600, 800, "US"),
    "mlut_18.dcm": (1, 512, 512, "OT"),  # modality LUT sequence
    "vlut_04.dcm": (1, 512, 512, "OT"),  # VOI LUT sequence
    "liver.dcm": (3, 512, 512, "SEG"),  # 1 bit allocated
    "MR-SIEMENS-DICOM-WithOverlays.dcm": (1, 484, 484, "MR"),
}

REQUIRED_SYNTAXES = {
    "1.2.840.10008.1.2": "implicit VR little endian",
    "1.2.840.10008.1.2.1": "explicit VR little endian",
    "1.2.840.10008.1.2.2": "explicit VR big endian",
    "1.2.840.10008.1.2.1.99": "deflated",
    "1.2.840.10008.1.2.5": "RLE",
    "1.2.840.10008.1.2.4.50": "JPEG baseline",
    "1.2.840.10008.1.2.4.51": "JPEG extended",
    "1.2.840.10008.1.2.4.70": "JPEG lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
}


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_files_decode_to_unit_range_float32(name: str) -> None:
    frames, rows, columns, modality = REAL_FILES[name]
    image = decode(data_file(name), LIMITS, max_frames=8)
    assert image.frames.dtype == np.float32
    assert image.frames.shape == (frames, rows, columns)
    assert (image.rows, image.columns) == (rows, columns)
    assert image.modality == modality
    assert len(image.frame_indices) == frames
    assert image.frames.min() >= 0.0 and image.frames.max() <= 1.0
    assert np.isfinite(image.frames).all()
    assert image.frames.max() > image.frames.min(), "a real image is not uniform"
    assert image.sop_instance_uid and image.sop_class_uid
    assert image.decode_ms > 0


def test_real_files_cover_every_required_transfer_syntax() -> None:
    covered = {
        str(pydicom.filereader.read_file_meta_info(data_file(n)).TransferSyntaxUID)
        for n in REAL_FILES
    }
    covered.add("1.2.840.10008.1.2.4.51")  # JPGExtended.dcm, checked below
    assert set(REQUIRED_SYNTAXES) <= covered, set(REQUIRED_SYNTAXES) - covered
    image = decode(data_file("JPGExtended.dcm"), LIMITS, 8)
    assert image.transfer_syntax == "1.2.840.10008.1.2.4.51"


def test_identity_fields_and_spacing() -> None:
    image = decode(data_file("CT_small.dcm"), LIMITS, 8)
    ds = pydicom.dcmread(data_file("CT_small.dcm"))
    assert image.sop_instance_uid == ds.SOPInstanceUID
    assert image.study_instance_uid == ds.StudyInstanceUID
    assert image.series_instance_uid == ds.SeriesInstanceUID
    assert image.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert image.photometric == "MONOCHROME2"
    assert image.pixel_spacing == pytest.approx((0.661468, 0.661468))
    assert image.total_frames == 1 and image.frame_indices == [0]
    enhanced = decode(data_file("eCT_Supplemental.dcm"), LIMITS, 8)
    assert enhanced.pixel_spacing is not None  # from the functional groups


def test_jpeg_lossy_nm_file_is_refused_cleanly() -> None:
    # pylibjpeg's libjpeg rejects this old file ("misplaced marker segment"); GDCM
    # would read it. The box must quarantine it with a reason, not crash.
    with pytest.raises(DecodeError, match=r"^cannot decode: "):
        decode(data_file("JPEG-lossy.dcm"), LIMITS, 8)


def test_ct_rescale_and_window_numerically(tmp_path: Path) -> None:
    ds = image_dataset("ct-window", rows=8, columns=8)
    hu = np.array([-1000, -160, -100, 40, 240, 1000, 39, 41], dtype=np.int32)
    stored = np.tile(hu, (8, 1)) // 2 + 512  # slope 2, intercept -1024
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = stored.astype("<u2").tobytes()
    frame = decode(write(ds, tmp_path), LIMITS, 8).frames[0]
    values = stored[0] * 2 - 1024
    expected = np.clip((values - 39.5) / 399 + 0.5, 0, 1)
    np.testing.assert_allclose(frame[0], expected, atol=1e-6)
    assert frame[0, 0] == 0.0 and frame[0, 5] == 1.0
    assert frame[0, 3] == pytest.approx(0.5 + 0.5 / 399, abs=1e-6)


# frames whose every pixel's grey follows from its own stored value: a window (MR, CT,
# enhanced CT per frame, MONOCHROME1 radiographs, big endian), a VOI LUT, shown as stored
TABLE_FILES = ["MR_small.dcm", "MR_small_bigendian.dcm", "693_J2KI.dcm", "eCT_Supplemental.dcm",
               "RG3_UNCR.dcm", "vlut_04.dcm", "JPEGLSNearLossless_08.dcm"]


@pytest.mark.parametrize("name", TABLE_FILES)
def test_a_frame_shown_through_a_table_of_its_stored_values_is_equal_bit_for_bit(
        name: str) -> None:
    """decode windows such frames once per stored value (``_display_table``), not once per
    pixel: the model sees exactly the numbers the per-pixel arithmetic gives."""
    image = decode(data_file(name), LIMITS, 1)
    frame, index = image.frames[0], image.frame_indices[0]
    ds, header = open_dataset(data_file(name), LIMITS)
    with decode_guard():
        array, photometric = frame_pixels(ds, header, index)
    assert decode_module._display_table(ds, header, index, array, photometric) is not None
    grey, _values = decode_module._grey_to_display(array, ds, header, index)
    per_pixel = decode_module._finish_grey(grey, photometric)
    assert frame.dtype == per_pixel.dtype == np.float32
    np.testing.assert_array_equal(frame, per_pixel)


def test_a_percentile_window_is_not_a_table_of_stored_values() -> None:
    ds, header = open_dataset(data_file("CT_small.dcm"), LIMITS)  # no window of its own
    with decode_guard():
        array, photometric = frame_pixels(ds, header, 0)
    assert decode_module._display_table(ds, header, 0, array, photometric) is None


def test_monochrome1_is_the_inverse_of_monochrome2(tmp_path: Path) -> None:
    ds = image_dataset("mono", rows=32, columns=32)
    mono2 = decode(write(ds, tmp_path, "m2.dcm"), LIMITS, 8).frames[0]
    ds.PhotometricInterpretation = "MONOCHROME1"
    mono1 = decode(write(ds, tmp_path, "m1.dcm"), LIMITS, 8).frames[0]
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert mono2.std() > 0.1
    # the air outside the phantom is black on MONOCHROME2 and white on MONOCHROME1
    assert mono2[0, 0] == 0.0 and mono1[0, 0] == 1.0


def test_percentile_window_without_window_attributes(tmp_path: Path) -> None:
    ds = image_dataset("percentile", rows=100, columns=100)
    del ds.WindowCenter, ds.WindowWidth, ds.RescaleSlope, ds.RescaleIntercept
    values = np.arange(10000, dtype=np.uint16).reshape(100, 100) + 1000
    ds.PixelData = values.astype("<u2").tobytes()
    frame = decode(write(ds, tmp_path), LIMITS, 8).frames[0]
    low, high = np.percentile(values, [0.5, 99.5])
    np.testing.assert_allclose(frame, np.clip((values - low) / (high - low), 0, 1), atol=1e-6)
    assert (frame == 0).mean() == pytest.approx(0.005, abs=0.001)


def test_digital_xray_and_mammography_constructed(tmp_path: Path) -> None:
    for modality, sop, photometric in (
        ("DX", "1.2.840.10008.5.1.4.1.1.1.1", "MONOCHROME1"),
        ("MG", "1.2.840.10008.5.1.4.1.1.1.2", "MONOCHROME2"),
    ):
        ds = image_dataset(modality, rows=64, columns=48)
        ds.Modality, ds.SOPClassUID, ds.file_meta.MediaStorageSOPClassUID = modality, sop, sop
        ds.PhotometricInterpretation = photometric
        ds.BitsStored, ds.HighBit = 12, 11
        ds.WindowCenter, ds.WindowWidth = 0, 2000  # HU-like after the rescale
        ds.ImagerPixelSpacing = [0.1, 0.1]
        del ds.PixelSpacing
        image = decode(write(ds, tmp_path, f"{modality}.dcm"), LIMITS, 8)
        assert image.modality == modality and image.photometric == photometric
        assert image.pixel_spacing == (0.1, 0.1)
        corner = image.frames[0, 0, 0]  # air: -1000 → window bottom
        assert corner == pytest.approx(1.0 if photometric == "MONOCHROME1" else 0.0, abs=1e-3)


def test_enhanced_per_frame_windows_are_used(tmp_path: Path) -> None:
    ds = image_dataset("enhanced", rows=16, columns=16)
    del ds.WindowCenter, ds.WindowWidth
    ds.NumberOfFrames = 3
    one = np.frombuffer(ds.PixelData, dtype="<u2")
    ds.PixelData = np.concatenate([one, one, one]).tobytes()
    shared = Dataset()
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = 1, -1024
    shared.PixelValueTransformationSequence = [transform]
    del ds.RescaleSlope, ds.RescaleIntercept
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for centre, width in ((40, 400), (-600, 1500), (400, 2000)):
        group, voi = Dataset(), Dataset()
        voi.WindowCenter, voi.WindowWidth = centre, width
        group.FrameVOILUTSequence = [voi]
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    image = decode(write(ds, tmp_path), LIMITS, 8)
    hu = np.frombuffer(one.tobytes(), dtype="<u2").astype(float).reshape(16, 16) - 1024
    for k, (centre, width) in enumerate(((40, 400), (-600, 1500), (400, 2000))):
        expected = np.clip((hu - (centre - 0.5)) / (width - 1) + 0.5, 0, 1)
        np.testing.assert_allclose(image.frames[k], expected, atol=1e-6)
    assert not np.allclose(image.frames[0], image.frames[1])


def test_colour_is_reduced_to_luma() -> None:
    ds = pydicom.dcmread(data_file("SC_rgb.dcm"))
    rgb = pixel_array(ds).astype(float)
    expected = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255
    frame = decode(data_file("SC_rgb.dcm"), LIMITS, 8).frames[0]
    np.testing.assert_allclose(frame, expected, atol=1e-6)
    # the same picture stored as YBR_FULL gives the same grey (Y is the luma)
    ybr = decode(data_file("SC_ybr_full_uncompressed.dcm"), LIMITS, 8).frames[0]
    np.testing.assert_allclose(ybr, expected, atol=2 / 255)


def test_palette_colour_uses_the_palette() -> None:
    ds = pydicom.dcmread(data_file("examples_palette.dcm"))
    rgb = apply_color_lut(pixel_array(ds), ds)
    assert rgb.dtype == np.uint16  # 16-bit palette entries
    expected = (rgb.astype(float) @ np.array([0.299, 0.587, 0.114])) / 65535
    frame = decode(data_file("examples_palette.dcm"), LIMITS, 8).frames[0]
    np.testing.assert_allclose(frame, expected, atol=1e-5)


def test_voi_lut_sequence_is_applied() -> None:
    ds = pydicom.dcmread(data_file("vlut_04.dcm"))
    assert "VOILUTSequence" in ds and "WindowCenter" not in ds
    item = ds.VOILUTSequence[0]
    table = np.asarray(item.LUTData, dtype=float)
    first = int(item.LUTDescriptor[1])
    raw = pixel_array(ds).astype(int)
    expected = table[np.clip(raw - first, 0, table.size - 1)]
    expected = (expected - table.min()) / (table.max() - table.min())
    frame = decode(data_file("vlut_04.dcm"), LIMITS, 8).frames[0]
    np.testing.assert_allclose(frame, expected, atol=1e-6)


def test_multi_frame_sampling_decodes_only_the_chosen_frames() -> None:
    path = data_file("color3d_jpeg_baseline.dcm")
    image = decode(path, LIMITS, max_frames=5)
    assert image.total_frames == 120
    assert image.frame_indices == select_frames(120, 5)
    assert len(image.frame_indices) == 5 and 60 in image.frame_indices
    ds = pydicom.dcmread(path)
    position = image.frame_indices.index(60)
    rgb = pixel_array(ds, index=60).astype(float)  # pydicom gives RGB for YBR JPEG
    luma = (rgb @ np.array([0.299, 0.587, 0.114])) / 255
    assert np.abs(image.frames[position] - luma).max() < 1e-6
    other = pixel_array(ds, index=0).astype(float) @ np.array([0.299, 0.587, 0.114]) / 255
    assert np.abs(image.frames[position] - other).max() > 0.1  # a different frame
    single = decode(path, LIMITS, max_frames=1)
    assert single.frame_indices == [60] and single.frames.shape == (1, 480, 640)


@pytest.mark.parametrize("total", [1, 2, 3, 7, 10, 30, 120, 4000])
@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 16])
def test_select_frames_even_with_middle(total: int, count: int) -> None:
    picks = select_frames(total, count)
    assert len(picks) == min(total, count)
    assert picks == sorted(set(picks)) and picks[0] >= 0 and picks[-1] < total
    assert total // 2 in picks
    if count >= 3 and total > count:
        assert picks[0] == 0 and picks[-1] == total - 1
        gaps = np.diff(picks)
        assert gaps.max() <= 2 * np.ceil(total / (count - 1)), picks


def test_malformed_corpus_gives_the_expected_reasons(tmp_path: Path) -> None:
    expected = build_malformed_corpus(tmp_path)
    checked = 0
    for name, reason in expected.items():
        path = tmp_path / name
        if is_picture(path.read_bytes()[:132]):
            continue  # pictures go to wrap_picture (tests/unit/engine/test_wrap.py)
        if reason == "":
            image = decode(path, LIMITS, 8)
            assert image.frames.shape == (1, 64, 64), name
            assert "/" in image.sop_instance_uid  # kept as sent, used as data only
        else:
            with pytest.raises(DecodeError) as caught:
                decode(path, LIMITS, 8)
            assert reason in str(caught.value).lower(), (name, str(caught.value))
            assert caught.value.reason == str(caught.value)
        checked += 1
    assert checked >= 20


def test_limits_are_honoured(tmp_path: Path) -> None:
    path = write(image_dataset("limits", rows=128, columns=96), tmp_path)
    with pytest.raises(DecodeError, match=r"image is 96 x 128 pixels, over the 100 limit"):
        decode(path, LimitsConfig(max_rows=100), 8)
    with pytest.raises(DecodeError, match=r"over the 64 limit"):
        decode(path, LimitsConfig(max_columns=64), 8)
    with pytest.raises(DecodeError, match=r"10 frames, over the 5 frame limit"):
        decode(data_file("emri_small.dcm"), LimitsConfig(max_frames=5), 8)
    big = write(image_dataset("big", rows=1024, columns=1024), tmp_path, "big.dcm")
    with pytest.raises(DecodeError, match=r"decoded image would need 2 MB, over the 1 MB limit"):
        decode(big, LimitsConfig(max_decoded_mb=1), 8)
    assert decode(big, LimitsConfig(max_decoded_mb=2), 8).frames.shape == (1, 1024, 1024)


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = write(image_dataset("sparse"), tmp_path)
    with path.open("r+b") as handle:
        handle.truncate(70 * 1024 * 1024)  # sparse: cheap to make
    with pytest.raises(DecodeError, match=r"file is 70 MB, over the 65 MB limit"):
        decode(path, LimitsConfig(max_decoded_mb=1), 8)


def test_deflate_bomb_is_refused(tmp_path: Path) -> None:
    meta = to_bytes(image_dataset("bomb", transfer_syntax="1.2.840.10008.1.2.1.99"))
    group_length = struct.unpack("<I", meta[140:144])[0]
    head = meta[: 132 + 12 + group_length]
    compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    size = 80 * 1024 * 1024
    body = [compressor.compress(struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, size))]
    zeros = bytes(1024 * 1024)
    body += [compressor.compress(zeros) for _ in range(80)]
    body.append(compressor.flush())
    path = tmp_path / "bomb.dcm"
    path.write_bytes(head + b"".join(body))
    assert path.stat().st_size < 1_000_000  # 80 MB inflated
    with pytest.raises(DecodeError, match="deflated data would expand past 65 MB"):
        decode(path, LimitsConfig(max_decoded_mb=1), 8)


def test_unexpected_library_errors_become_decode_errors(tmp_path: Path) -> None:
    ds = image_dataset("palette-without-lut")
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = bytes(64 * 64)
    with pytest.raises(DecodeError, match=r"^cannot decode: "):
        decode(write(ds, tmp_path), LIMITS, 8)


def test_missing_file_is_a_box_fault_not_a_bad_object(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        decode(tmp_path / "gone.dcm", LIMITS, 8)


def test_files_without_preamble_are_refused() -> None:
    for name in ("no_meta.dcm", "ExplVR_BigEndNoMeta.dcm"):
        with pytest.raises(DecodeError, match="not a DICOM file"):
            decode(data_file(name), LIMITS, 8)


def test_non_images_and_truncated_real_files() -> None:
    cases = {
        "rtplan.dcm": "no pixel data (not an image: RT Plan Storage)",
        "test-SR.dcm": "no pixel data (not an image: Comprehensive SR Storage)",
        "waveform_ecg.dcm": "no pixel data",
        "MR_truncated.dcm": "truncated file",
        "rtplan_truncated.dcm": "truncated file",
        "emri_small_jpeg_2k_lossless_too_short.dcm": "truncated file",
    }
    for name, reason in cases.items():
        with pytest.raises(DecodeError) as caught:
            decode(data_file(name), LIMITS, 8)
        assert reason in str(caught.value), (name, str(caught.value))


@pytest.mark.slow
def test_damaged_copies_of_real_files_only_raise_decode_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    sources = [data_file(n).read_bytes() for n in (
        "CT_small.dcm", "emri_small_RLE.dcm", "US1_J2KR.dcm", "SC_rgb_jpeg_dcmtk.dcm",
        "MR_small_bigendian.dcm", "image_dfl.dcm", "examples_palette.dcm", "JPEG-LL.dcm",
    )]
    outcomes = {"decoded": 0, "refused": 0}
    for attempt in range(160):
        data = bytearray(sources[attempt % len(sources)])
        if attempt % 2:
            data = data[: int(rng.integers(132, len(data)))]
        else:
            for position in rng.integers(132, len(data), size=int(rng.integers(1, 12))):
                data[int(position)] = int(rng.integers(0, 256))
        path = tmp_path / "damaged.dcm"
        path.write_bytes(bytes(data))
        try:
            image = decode(path, LIMITS, 4)
        except DecodeError as exc:
            assert str(exc)
            outcomes["refused"] += 1
        else:
            assert image.frames.dtype == np.float32 and image.frames.min() >= 0
            assert image.frames.max() <= 1
            outcomes["decoded"] += 1
    assert outcomes["refused"] > 40 and outcomes["decoded"] > 10, outcomes
