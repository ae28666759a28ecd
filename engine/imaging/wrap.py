"""Wrap a PNG or JPEG picture (USB exports) as a DICOM Secondary Capture object.

``wrap_picture(data)`` decodes the picture with Pillow and writes a Part-10
Secondary Capture Image Storage object (explicit VR little endian,
uncompressed, 8 bits): MONOCHROME2 for grey pictures, RGB for colour ones (the
decoder turns colour into grey later). The object gets fresh local UIDs,
Modality ``OT`` and Conversion Type ``WSD``; patient name and id are left
empty. Nothing from the picture's metadata (EXIF, text chunks, comments, ICC
names) and nothing from its file name is copied: ``source_name`` only makes
error messages clearer.

Pictures are recognised by their signature, never by file name. Oversized
pictures are refused from the header, before any pixel is decoded; Pillow's
decompression-bomb warning is turned into the same clear refusal.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from engine.imaging.decode import DecodedImage, decode
from engine.settings import LimitsConfig

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
#: Largest picture side accepted (pixels).
MAX_SIDE = 16384
#: Largest picture accepted in total pixels (240 MB as RGB); below Pillow's own
#: decompression-bomb threshold, so this check, with its clearer message, comes first.
MAX_PIXELS = 80_000_000
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L"})
IMPLEMENTATION_VERSION = "CLINIBOX_WRAP1"


def is_picture(data_head: bytes) -> bool:
    """True when the first bytes are a PNG or JPEG signature."""
    return data_head.startswith(PNG_SIGNATURE) or data_head.startswith(JPEG_SIGNATURE)


def wrap_picture(data: bytes, *, source_name: str | None = None) -> bytes:
    """Turn PNG or JPEG bytes into a Secondary Capture DICOM file (bytes).

    Raises ValueError with a readable reason for anything that is not a
    readable PNG/JPEG within the size limits.
    """
    where = f"{source_name}: " if source_name else ""
    if data.startswith(PNG_SIGNATURE):
        kind = "PNG"
    elif data.startswith(JPEG_SIGNATURE):
        kind = "JPEG"
    else:
        raise ValueError(f"{where}not a PNG or JPEG picture")
    pixels = _read_pixels(data, kind, where)
    return _secondary_capture(pixels, lossy=kind == "JPEG")


def _read_pixels(data: bytes, kind: str, where: str) -> np.ndarray:
    """Decode the picture to uint8 [H, W] (grey) or [H, W, 3] (colour)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            picture = Image.open(io.BytesIO(data), formats=[kind])
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ValueError(f"{where}picture is too large to import ({exc})") from None
    except Exception as exc:
        raise _unreadable(exc, kind, where) from None
    width, height = picture.size
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ValueError(f"{where}picture is {width} x {height} pixels, over the "
                         f"{MAX_SIDE} pixel limit per side")
    if width * height > MAX_PIXELS:
        raise ValueError(f"{where}picture is {width} x {height} pixels, over the "
                         f"{MAX_PIXELS // 1_000_000} megapixel limit")
    if width == 0 or height == 0:
        raise ValueError(f"{where}picture has no pixels")
    try:
        picture.load()
        return _to_array(picture)
    except Exception as exc:
        raise _unreadable(exc, kind, where) from None


def _unreadable(exc: Exception, kind: str, where: str) -> ValueError:
    message = str(exc).lower()
    state = "truncated" if "truncated" in message or "eof" in message else "damaged"
    return ValueError(f"{where}{kind} picture is {state} and cannot be read ({exc})")


def _to_array(picture: Image.Image) -> np.ndarray:
    with contextlib.suppress(Exception):  # a broken orientation tag is no reason to refuse
        picture = ImageOps.exif_transpose(picture) or picture
    if picture.mode in GREY_MODES:
        if picture.mode.startswith("I"):  # 16-bit grey: 0..65535 → 0..255
            wide = np.asarray(picture, dtype=np.float64)
            return np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        return np.asarray(picture.convert("L"), dtype=np.uint8)
    rgb = np.asarray(picture.convert("RGB"), dtype=np.uint8)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0])  # a grey picture stored as colour
    return rgb


def _secondary_capture(pixels: np.ndarray, *, lossy: bool) -> bytes:
    """Build the SC object around uint8 ``pixels`` and return its Part-10 bytes."""
    sop_instance_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    if lossy:
        ds.LossyImageCompression = "01"
    colour = pixels.ndim == 3
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    ds["PixelData"].VR = "OB"

    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return buffer.getvalue()


def decode_file(path: Path, limits: LimitsConfig, max_frames: int) -> DecodedImage:
    """Decode a DICOM file, or a PNG/JPEG export wrapped as Secondary Capture first."""
    with open(path, "rb") as handle:
        head = handle.read(132)
    if not is_picture(head):
        return decode(path, limits, max_frames)
    with tempfile.NamedTemporaryFile(suffix=".dcm") as tmp:
        tmp.write(wrap_picture(Path(path).read_bytes()))
        tmp.flush()
        return decode(Path(tmp.name), limits, max_frames)
