"""A corpus of malformed inputs for the decoder, the picture wrapper and the ingest paths.

``build_malformed_corpus(directory)`` writes every file and returns
``{file name: expected reason}``: a lower-case substring of the message that
``engine.imaging.decode.decode`` (DICOM path) or
``engine.imaging.wrap.wrap_picture`` (pictures, recognised by
``is_picture`` on the first bytes) gives for it. An empty expected reason means
the file is valid and must be processed normally, not quarantined.

Everything is built in code (no test data downloads), deterministically: the
same bytes on every run, in well under a second.

``SENDABLE_BY_STORESCU`` names the files that dcmtk's ``/usr/bin/storescu``
actually transfers with its default options (checked against dcmtk's
``storescp``; ``tests/unit/test_corpus.py`` re-checks it): they have a readable
file meta header with SOP Class/Instance UIDs and an uncompressed syntax. They
exercise the network path of the box; ``SENDABLE_WITH_OPTIONS`` need a
compressed syntax proposed; the rest can only arrive from a USB stick.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    MPEG2MPML,
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
#: A syntax nobody registered: a private, unknown compression.
PRIVATE_SYNTAX = "1.2.826.0.1.3680043.8.498.999.1"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Corpus files that dcmtk's storescu 3.6.7 transferred (C-STORE success) to
#: dcmtk's storescp (``-pm +xa``) on loopback, all in one call as the
#: integration tests send them:
#: ``TCP_NODELAY=1 /usr/bin/storescu -v --no-halt --required 127.0.0.1 PORT FILES``
#: (default proposal: the uncompressed syntaxes). storescu skips the others
#: before sending ("larger than remaining bytes in file", "missing SOP class"):
#: truncated and garbage files, the empty file, the pictures.
SENDABLE_BY_STORESCU: frozenset[str] = frozenset(
    {
        "absurd_frames.dcm",
        "bits_allocated_0.dcm",
        "bits_allocated_7.dcm",
        "huge_dimensions.dcm",
        "missing_rows.dcm",
        "no_pixel_data_plain.dcm",
        "no_pixel_data_sr.dcm",
        "pixel_data_too_short.dcm",
        "samples_per_pixel_5.dcm",
        "uid_path_traversal.dcm",
        "uid_slash_dotdot.dcm",
        "unsupported_photometric.dcm",
        "zero_frames.dcm",
    }
)
#: Compressed corpus files storescu sends only when their syntax is proposed
#: (the extra option; the receiving SCP must accept that syntax too). Without
#: it storescu tries to decompress them first and fails ("unable to convert").
SENDABLE_WITH_OPTIONS: dict[str, tuple[str, ...]] = {
    "corrupt_jpeg.dcm": ("-xy",),  # JPEG Baseline
    "mpeg2_syntax.dcm": ("-xm",),  # MPEG2 Main Profile @ Main Level
}
#: storescu "sends" this one, but dcmtk does not know the private syntax, reads
#: the file as explicit VR little endian and transmits it as such with its
#: encapsulated bytes as plain pixel data: the box receives a different object
#: ("pixel data too short"), so it is not in SENDABLE_BY_STORESCU.
REWRITTEN_BY_STORESCU: frozenset[str] = frozenset({"private_syntax.dcm"})


def corpus_uid(*parts: object) -> str:
    """A deterministic UID for corpus objects (pydicom's test root + a hash of ``parts``)."""
    return generate_uid(entropy_srcs=["clinibox-corpus", *map(str, parts)])


def phantom_pixels(rows: int = 64, columns: int = 64) -> np.ndarray:
    """A CT-like int16 phantom: air outside, a soft-tissue disc, a bright insert."""
    y, x = np.mgrid[0:rows, 0:columns]
    cy, cx = (rows - 1) / 2, (columns - 1) / 2
    radius = np.hypot((y - cy) / (rows / 2), (x - cx) / (columns / 2))
    image = np.full((rows, columns), -1000, dtype=np.int16)  # air
    image[radius < 0.8] = 40  # soft tissue
    image[radius < 0.2] = 700  # bone-like insert
    image += ((x + 2 * y) % 7).astype(np.int16)  # fixed texture
    return image


def image_dataset(
    name: str,
    rows: int = 64,
    columns: int = 64,
    *,
    sop_instance_uid: str | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> Dataset:
    """A valid single-frame CT image (stored values = HU + 1024, window 40/400)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid or corpus_uid(name, "sop")
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = corpus_uid(name, "study")
    ds.SeriesInstanceUID = corpus_uid(name, "series")
    ds.Modality = "CT"
    ds.PatientName = "CORPUS^TEST"
    ds.PatientID = "CORPUS"
    ds.StudyDescription = "MALFORMED CORPUS OBJECT FOR DECODER TESTS"
    ds.ImageComments = "clinibox malformed-input corpus"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.5, 0.5]
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.PixelData = (phantom_pixels(rows, columns).astype(np.int32) + 1024).astype("<u2").tobytes()
    return ds


def to_bytes(ds: Dataset, *, implicit_vr: bool = False, little_endian: bool = True) -> bytes:
    """Serialise ``ds`` as a Part-10 file (preamble, DICM, file meta) in memory."""
    buffer = io.BytesIO()
    dcmwrite(
        buffer, ds, implicit_vr=implicit_vr, little_endian=little_endian, enforce_file_format=True
    )
    return buffer.getvalue()


def _element_offset(data: bytes, group: int, element: int) -> int:
    """Offset of an explicit-VR little-endian element's tag in ``data``."""
    offset = data.find(struct.pack("<HH", group, element), 132)
    if offset < 0:
        raise LookupError(f"({group:04X},{element:04X}) not found")
    return offset


def _with(name: str, **changes: object) -> bytes:
    ds = image_dataset(name)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return to_bytes(ds)


def _encapsulated(name: str, syntax: str, fragment: bytes) -> bytes:
    ds = image_dataset(name, transfer_syntax=syntax)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([fragment])
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


def j2k_bomb(name: str, claimed: int = 40000) -> bytes:
    """A real JPEG 2000 frame (pydicom's 64 × 64 MR test image) whose SIZ marker is
    rewritten to claim ``claimed`` × ``claimed`` pixels, under a 64 × 64 DICOM header:
    a decoder that trusted the stream would allocate gigabytes."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.encaps import generate_frames

    source = dcmread(get_testdata_file("emri_small_jpeg_2k_lossless.dcm"))
    frame = bytearray(next(generate_frames(source.PixelData, number_of_frames=int(
        source.NumberOfFrames))))
    assert frame[:4] == b"\xff\x4f\xff\x51"
    for offset in (8, 12, 24, 28):  # Xsiz, Ysiz, XTsiz, YTsiz
        frame[offset:offset + 4] = struct.pack(">I", claimed)
    ds = image_dataset(name, source.Rows, source.Columns,
                       transfer_syntax=source.file_meta.TransferSyntaxUID)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = encapsulate([bytes(frame)])
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


def rle_giant(name: str, side: int = 16384) -> bytes:
    """A valid RLE Lossless object of ``side`` × ``side`` 16-bit pixels (512 MB decoded
    at 16384) that compresses to about 8 MB: two PackBits segments of repeated zeros."""
    runs = side * side // 128
    segment = b"\x81\x00" * runs  # each pair: repeat the byte 0 128 times
    header = struct.pack("<16I", 2, 64, 64 + len(segment), *([0] * 13))
    ds = image_dataset(name, transfer_syntax=RLELossless)
    ds.Rows = ds.Columns = side
    ds.PixelData = encapsulate([header + segment + segment])
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


def _relabel_native(data: bytes) -> bytes:
    """Rewrite a JPEG Baseline file's transfer syntax as explicit VR little endian.

    The pixel data stays encapsulated: a mislabelled object as some devices send.
    """
    old_uid = JPEGBaseline8Bit.encode()
    new_uid = ExplicitVRLittleEndian.encode() + b"\x00"
    start = data.index(b"\x02\x00\x10\x00UI")
    element = struct.pack("<HH2sH", 0x0002, 0x0010, b"UI", len(new_uid)) + new_uid
    end = start + 8 + len(old_uid)
    shrink = (end - start) - len(element)
    patched = bytearray(data[:start] + element + data[end:])
    group_length = struct.unpack("<I", patched[140:144])[0]  # (0002,0000) UL at offset 132
    patched[140:144] = struct.pack("<I", group_length - shrink)
    return bytes(patched)


def _text_sr(name: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    meta.MediaStorageSOPInstanceUID = corpus_uid(name, "sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = corpus_uid(name, "study")
    ds.SeriesInstanceUID = corpus_uid(name, "series")
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.TextValue = "No pixel data in a structured report."
    ds.ContentSequence = [item]
    return to_bytes(ds)


def _png(width: int, height: int) -> bytes:
    """A minimal valid 8-bit grey PNG, built with zlib only (deterministic)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + bytes((x * 7 + y * 3) % 256 for x in range(width))
                    for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b""))


def build_malformed_corpus(directory: Path) -> dict[str, str]:
    """Write the malformed corpus into ``directory``; return {name: expected reason}.

    Expected reasons are lower-case substrings of the DecodeError (DICOM files)
    or wrap_picture ValueError (files whose first bytes are a PNG/JPEG
    signature) message; "" means the file is valid and must be processed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # pydicom rightly warns about the invalid values written on purpose.
        warnings.simplefilter("ignore")
        files = _build()
    expected: dict[str, str] = {}
    for name, (data, reason) in files.items():
        (directory / name).write_bytes(data)
        expected[name] = reason
    return expected


def _build() -> dict[str, tuple[bytes, str]]:
    rng = random.Random(20240611)  # fixed seed: the same bytes every run
    files: dict[str, tuple[bytes, str]] = {}

    valid = to_bytes(image_dataset("truncated_pixel_data"))
    pixel_start = _element_offset(valid, 0x7FE0, 0x0010) + 12
    files["truncated_pixel_data.dcm"] = (valid[: pixel_start + 3000], "truncated file")

    valid = to_bytes(image_dataset("truncated_in_element_header"))
    pixel_tag = _element_offset(valid, 0x7FE0, 0x0010)
    files["truncated_in_element_header.dcm"] = (valid[: pixel_tag + 6], "truncated file")

    header = to_bytes(image_dataset("truncated_header"))
    cut = header.find(b"MALFORMED CORPUS") + 7  # inside the Study Description value
    files["truncated_header.dcm"] = (header[:cut], "truncated file")

    # (0020,4000) Image Comments is LT with a 2-byte length: claim 65000 bytes,
    # far more than the rest of the file (pixel data included).
    patched = bytearray(to_bytes(image_dataset("length_past_eof")))
    at = _element_offset(bytes(patched), 0x0020, 0x4000)
    patched[at + 6 : at + 8] = struct.pack("<H", 65000)
    files["length_past_eof.dcm"] = (bytes(patched), "truncated file")

    files["huge_dimensions.dcm"] = (
        _with("huge_dimensions", Rows=60000, Columns=60000), "60000 x 60000 pixels"
    )
    files["absurd_frames.dcm"] = (
        _with("absurd_frames", NumberOfFrames=999999999), "999999999 frames"
    )
    files["zero_frames.dcm"] = (_with("zero_frames", NumberOfFrames=0), "zero frames")
    files["missing_rows.dcm"] = (_with("missing_rows", Rows=None), "missing rows/columns")
    files["no_pixel_data_sr.dcm"] = (_text_sr("no_pixel_data_sr"), "no pixel data")
    files["no_pixel_data_plain.dcm"] = (_with("no_pixel_data_plain", PixelData=None),
                                        "no pixel data")
    short = image_dataset("pixel_data_too_short", rows=256, columns=256)
    short.PixelData = bytes(1000)
    files["pixel_data_too_short.dcm"] = (to_bytes(short), "pixel data too short")
    files["mpeg2_syntax.dcm"] = (
        _encapsulated("mpeg2_syntax", MPEG2MPML, b"\x00\x00\x01\xb3" + bytes(60)),
        "cannot be decoded on this box",
    )
    files["private_syntax.dcm"] = (
        _encapsulated("private_syntax", PRIVATE_SYNTAX, bytes(64)),
        "cannot be decoded on this box",
    )
    files["corrupt_jpeg.dcm"] = (
        _encapsulated("corrupt_jpeg", JPEGBaseline8Bit,
                      b"\xff\xd8\xff\xe0" + bytes(rng.randrange(256) for _ in range(500))),
        "refused before decoding: the jpeg stream",
    )
    files["j2k_bomb.dcm"] = (j2k_bomb("j2k_bomb"),
                             "the jpeg 2000 stream says 40000 × 40000 pixels")
    files["rle_giant.dcm"] = (rle_giant("rle_giant"), "over the 40 megapixel limit")
    files["encapsulated_in_native.dcm"] = (
        _relabel_native(_encapsulated("encapsulated_in_native", JPEGBaseline8Bit, bytes(64))),
        "pixel data is compressed but",
    )
    files["bits_allocated_0.dcm"] = (_with("bits_allocated_0", BitsAllocated=0),
                                     "unsupported bits allocated")
    files["bits_allocated_7.dcm"] = (_with("bits_allocated_7", BitsAllocated=7),
                                     "unsupported bits allocated")
    files["samples_per_pixel_5.dcm"] = (_with("samples_per_pixel_5", SamplesPerPixel=5),
                                        "unsupported samples per pixel")
    files["unsupported_photometric.dcm"] = (
        _with("unsupported_photometric", PhotometricInterpretation="HSV"),
        "unsupported photometric interpretation",
    )
    files["random_bytes.dcm"] = (bytes(rng.randrange(256) for _ in range(4096)),
                                 "not a dicom file")
    files["empty.dcm"] = (b"", "empty file")
    files["dicm_then_garbage.dcm"] = (
        bytes(128) + b"DICM" + bytes(rng.randrange(256) for _ in range(2048)),
        "not a dicom file",
    )
    # Sender-controlled strings that look like paths: valid images, decoded
    # normally; the box must never build a file name from them.
    files["uid_path_traversal.dcm"] = (
        to_bytes(image_dataset("uid_path_traversal", sop_instance_uid="../../etc/passwd")), ""
    )
    files["uid_slash_dotdot.dcm"] = (
        to_bytes(image_dataset("uid_slash_dotdot", sop_instance_uid="1.2.3/../../x")), ""
    )
    png = _png(48, 40)
    files["truncated.png"] = (png[: len(png) // 2], "truncated")
    files["not_a_picture.png"] = (
        b"PK\x03\x04" + bytes(rng.randrange(256) for _ in range(1020)), "not a dicom file"
    )
    return files


def data_file(name: str) -> Path:
    """A pydicom-data test file, found locally (never downloaded)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not available locally"
    return Path(path)


def write(ds: Dataset, tmp_path: Path, name: str = "x.dcm") -> Path:
    """Write a test data set (warnings about odd values silenced) and return its path."""
    path = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path.write_bytes(to_bytes(ds))
    return path
