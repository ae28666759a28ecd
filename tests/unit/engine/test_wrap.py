"""wrap_picture(): PNG/JPEG → Secondary Capture that decode() reads back; no metadata
leaks; anything else refused with a clear message."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, PngImagePlugin

from engine.imaging.decode import decode
from engine.imaging.wrap import MAX_SIDE, is_picture, wrap_picture
from engine.settings import LimitsConfig
from tests.corpus import build_malformed_corpus

CANARY = "CANARY-Jane-Doe-1961-MRN-884422"
LUMA = np.array([0.299, 0.587, 0.114])


def grey_pixels(height: int = 96, width: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return ((x * 2 + y) % 256).astype(np.uint8)


def colour_pixels(height: int = 96, width: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 2 % 256, y * 2 % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def png(array: np.ndarray, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", **save)
    return buffer.getvalue()


def jpeg(array: np.ndarray, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95, **save)
    return buffer.getvalue()


def read_back(data: bytes, tmp_path: Path) -> tuple[pydicom.Dataset, np.ndarray]:
    path = tmp_path / "wrapped.dcm"
    path.write_bytes(data)
    image = decode(path, LimitsConfig(), 8)
    return pydicom.dcmread(path), image.frames[0]


def test_grey_png_round_trips_exactly(tmp_path: Path) -> None:
    pixels = grey_pixels()
    ds, frame = read_back(wrap_picture(png(pixels)), tmp_path)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.SamplesPerPixel == 1
    assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored) == (96, 128, 8, 8)
    np.testing.assert_allclose(frame, pixels / 255.0, atol=1e-6)


def test_colour_png_stays_rgb_and_decodes_to_luma(tmp_path: Path) -> None:
    pixels = colour_pixels()
    ds, frame = read_back(wrap_picture(png(pixels)), tmp_path)
    assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
    assert ds.PlanarConfiguration == 0
    np.testing.assert_array_equal(ds.pixel_array, pixels)
    np.testing.assert_allclose(frame, (pixels @ LUMA) / 255.0, atol=1e-5)


def test_jpeg_round_trips_within_jpeg_loss(tmp_path: Path) -> None:
    pixels = colour_pixels()
    ds, frame = read_back(wrap_picture(jpeg(pixels)), tmp_path)
    assert ds.PhotometricInterpretation == "RGB"
    assert ds.LossyImageCompression == "01"
    error = np.abs(frame - (pixels @ LUMA) / 255.0)
    assert error.mean() < 0.02 and error.max() < 0.25
    grey = grey_pixels()
    ds, frame = read_back(wrap_picture(jpeg(grey)), tmp_path)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert np.abs(frame - grey / 255.0).mean() < 0.02


def test_secondary_capture_attributes(tmp_path: Path) -> None:
    data = wrap_picture(png(grey_pixels()), source_name="Jane_Doe_chest_xray.png")
    assert data[128:132] == b"DICM"
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.Modality == "OT" and ds.ConversionType == "WSD"
    assert str(ds.PatientName) == "" and ds.PatientID == ""
    assert b"Jane_Doe" not in data and b"chest_xray" not in data
    for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID):
        assert uid.is_valid
    again = pydicom.dcmread(io.BytesIO(wrap_picture(png(grey_pixels()))))
    assert len({ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                again.SOPInstanceUID, again.StudyInstanceUID}) == 5


def test_png_text_chunks_are_not_copied() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", CANARY)
    info.add_text("Author", CANARY, zip=True)
    info.add_itxt("Description", CANARY, lang="en", tkey="Description")
    exif = Image.Exif()
    exif[0x010E] = CANARY  # ImageDescription
    data = png(colour_pixels(), pnginfo=info, exif=exif)
    assert CANARY.encode() in data  # the canary really is in the input
    out = wrap_picture(data)
    assert CANARY.encode() not in out
    assert CANARY.encode("utf-16-le") not in out
    assert b"Jane" not in out


def test_jpeg_exif_and_comment_are_not_copied() -> None:
    exif = Image.Exif()
    exif[0x010E] = CANARY  # ImageDescription
    exif[0x013B] = CANARY  # Artist
    exif[0x8298] = CANARY  # Copyright
    data = jpeg(colour_pixels(), exif=exif, comment=CANARY.encode())
    assert data.count(CANARY.encode()) >= 2
    out = wrap_picture(data)
    assert CANARY.encode() not in out and b"Jane" not in out


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    ds = pydicom.dcmread(io.BytesIO(wrap_picture(jpeg(colour_pixels(96, 128), exif=exif))))
    assert (ds.Rows, ds.Columns) == (128, 96)


def test_other_picture_modes(tmp_path: Path) -> None:
    wide = (grey_pixels().astype(np.uint16) * 257).astype(np.uint16)  # 16-bit grey
    ds, frame = read_back(wrap_picture(png(wide)), tmp_path)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    np.testing.assert_allclose(frame, grey_pixels() / 255.0, atol=1e-6)
    rgba = np.dstack([colour_pixels(), np.full((96, 128), 128, np.uint8)])
    ds, _ = read_back(wrap_picture(png(rgba)), tmp_path)
    assert ds.PhotometricInterpretation == "RGB"
    palette = Image.fromarray(grey_pixels()).convert("P")
    buffer = io.BytesIO()
    palette.save(buffer, "PNG")
    ds, frame = read_back(wrap_picture(buffer.getvalue()), tmp_path)
    assert ds.PhotometricInterpretation == "MONOCHROME2"  # a grey palette is grey


def test_is_picture_uses_magic_bytes() -> None:
    assert is_picture(png(grey_pixels())[:132])
    assert is_picture(jpeg(grey_pixels())[:132])
    assert not is_picture(b"GIF89a" + bytes(20))
    assert not is_picture(bytes(128) + b"DICM")
    assert not is_picture(b"")


@pytest.mark.parametrize("data", [
    b"", b"GIF89a" + bytes(100), b"%PDF-1.7\n", bytes(128) + b"DICM" + bytes(100),
    b"PK\x03\x04" + bytes(100),
])
def test_non_pictures_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a PNG or JPEG picture"):
        wrap_picture(data, source_name="photo.png")


def test_truncated_pictures_are_refused(tmp_path: Path) -> None:
    expected = build_malformed_corpus(tmp_path)
    truncated = (tmp_path / "truncated.png").read_bytes()
    assert is_picture(truncated[:132])
    with pytest.raises(ValueError) as caught:
        wrap_picture(truncated)
    assert expected["truncated.png"] in str(caught.value).lower()
    half_jpeg = jpeg(colour_pixels())
    with pytest.raises(ValueError, match="JPEG picture is truncated"):
        wrap_picture(half_jpeg[: len(half_jpeg) // 2])
    with pytest.raises(ValueError, match="PNG picture is truncated"):
        wrap_picture(png(grey_pixels())[:20])
    damaged = bytearray(png(grey_pixels()))
    start = damaged.index(b"IDAT") + 4
    damaged[start + 2 : start + 40] = bytes(range(38))  # garbage deflate data
    with pytest.raises(ValueError, match="PNG picture is damaged"):
        wrap_picture(bytes(damaged))


def _png_header_only(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + header) & 0xFFFFFFFF)
    idat = zlib.compress(b"\x00" * 16)
    idat_chunk = (struct.pack(">I", len(idat)) + b"IDAT" + idat
                  + struct.pack(">I", zlib.crc32(b"IDAT" + idat) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + header + crc + idat_chunk)


@pytest.mark.parametrize("width, height, message", [
    (MAX_SIDE + 1, 10, "over the 16384 pixel limit per side"),
    (9000, 9000, "over the 80 megapixel limit"),
    (9500, 9500, "too large to import"),  # Pillow's bomb warning, made an error
    (60000, 60000, "too large to import"),  # Pillow refuses it at open
])
def test_oversized_pictures_are_refused_before_decoding(width: int, height: int,
                                                        message: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=message):
            wrap_picture(_png_header_only(width, height))
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
