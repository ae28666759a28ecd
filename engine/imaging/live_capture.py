"""The DICOM objects a bedside live session keeps: key frames and short clips (issue 47).

Pure functions from uint8 pixels (``[H, W]`` grey or ``[H, W, 3]`` RGB) and the
session's :class:`CaptureContext` to Part-10 bytes, which then take the box's
normal path (spool, worker, results, PACS). By the context's modality:

* ``US``: key frame as Ultrasound Image Storage, uncompressed (the box's model reads it
  again: lossless): 8-bit MONOCHROME2 from a grey picture, RGB from a coloured one (colour
  Doppler: ``is_colour``); clip as Ultrasound Multi-frame Image Storage, each frame JPEG
  baseline, MONOCHROME2 or, when any frame has colour, YBR_FULL_422 (what DICOM asks of
  lossy JPEG colour). A calibrated source (``mm_per_pixel > 0``) gets one ultrasound region
  covering the image, deltas in cm, as scanners write it and the box reads it
  (``imaging/geometry.py``).
* ``ES``: key frame as VL Endoscopic Image Storage, RGB uncompressed (grey is
  replicated); clip as Multi-frame True Color Secondary Capture, JPEG baseline frames
  (YBR_FULL_422).
* anything else: Secondary Capture key frames (Conversion Type ``DV``, digitised
  video), MONOCHROME2 or RGB as for US; clips as Multi-frame Grayscale Byte Secondary
  Capture, or Multi-frame True Color Secondary Capture when any frame has colour.

A picture is grey when its colour samples agree everywhere (within the tolerance a video
codec's chroma leaves on a grey picture): such a picture is kept as one grey sample, with
nothing lost.

Every object carries the session's study and series UIDs and the patient attributes as
entered or picked from the clinic's worklist (empty allowed; a birth date or sex DICOM
cannot hold is left empty), and the worklist's accession number and scheduled procedure step
ID when the patient was picked (``RequestAttributesSequence``); nothing identifying is
invented (without a pick the accession number, referring physician and study ID stay empty).
DICOM text is English: it is not translated.
"""

from __future__ import annotations

import datetime
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    VLEndoscopicImageStorage,
    generate_uid,
)

from clinibox_common.errors import CliniboxError

MANUFACTURER = "clinibox"
CHARACTER_SET = "ISO_IR 192"  # UTF-8: patient names may be Chinese
IMPLEMENTATION_VERSION = "CLINIBOX_LIVE1"
SERIES_NUMBER = 901
KEY_FRAME_DESCRIPTION = "Live session"
CLIP_DESCRIPTION = "Live session"
JPEG_QUALITY = 90
FRAME_TIME_POINTER = 0x00181063  # (0018,1063) Frame Time
LUMA_601 = np.array([0.299, 0.587, 0.114])
#: a pixel whose colour samples spread by more than this (0-255) has colour; a grey picture
#: through a video codec's 4:2:0 chroma and back to RGB spreads by a few levels at most
CHROMA_TOLERANCE = 24
#: a picture has colour when at least this share of its (sub-sampled) pixels has: a colour
#: Doppler box or a coloured scale in the image area, not a stray pixel of codec noise
COLOUR_SHARE = 0.001
#: colour is judged on every COLOUR_STEP-th pixel each way
COLOUR_STEP = 2


class CaptureError(CliniboxError):
    """Pixels that cannot be kept as asked (wrong type or shape, no frames, mixed sizes)."""


@dataclass(frozen=True)
class CaptureContext:
    """What a live session's objects share: its UIDs, the patient, the source."""

    study_uid: str
    series_uid: str
    modality: str  # "US", "ES" or anything else (Secondary Capture)
    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    station: str  # the box's device name ('' allowed)
    source_label: str  # e.g. "Ultrasound, room 1"
    started: datetime.datetime  # session start: StudyDate/StudyTime
    mm_per_pixel: float  # 0 = not calibrated
    burned_in: bool  # whether the pixels may show burned-in text
    accession_number: str = ""  # the worklist's order the session was picked from ('' none)
    sps_id: str = ""  # its scheduled procedure step ID ('' none)


def key_frame(pixels: np.ndarray, ctx: CaptureContext, instance_number: int,
              acquired: datetime.datetime) -> tuple[str, bytes]:
    """One kept frame as an uncompressed single-frame object, RGB where it has colour
    (always for ES), else MONOCHROME2: (SOP Instance UID, bytes)."""
    frame = _checked(pixels)
    modality = _modality(ctx)
    frame = _rgb(frame) if modality == "ES" or is_colour(frame) else _grey(frame)
    if modality == "US":
        sop_class = UltrasoundImageStorage
    elif modality == "ES":
        sop_class = VLEndoscopicImageStorage
    else:
        sop_class = SecondaryCaptureImageStorage
    ds = _base(ctx, sop_class, instance_number, acquired, KEY_FRAME_DESCRIPTION)
    ds.set_pixel_data(frame, "RGB" if frame.ndim == 3 else "MONOCHROME2", 8,
                      generate_instance_uid=False)
    if modality == "ES":
        ds.LossyImageCompression = ""  # type 2: the source's own history is not known here
        ds.AcquisitionContextSequence = DicomSequence()
    elif modality != "US":
        _secondary_capture(ds, acquired)
    _calibrate(ds, ctx, frame.shape[:2])
    return ds.SOPInstanceUID, _part10(ds, ExplicitVRLittleEndian)


def clip(frames: Sequence[np.ndarray], ctx: CaptureContext, instance_number: int,
         acquired: datetime.datetime, frame_time_ms: float) -> tuple[str, bytes]:
    """Kept frames as one multi-frame cine object, JPEG baseline (quality 90) per frame:
    YBR_FULL_422 when any frame has colour (always for ES), else MONOCHROME2."""
    if not frames:
        raise CaptureError("a clip needs at least one frame")
    if not frame_time_ms > 0:
        raise CaptureError(f"frame time must be positive, not {frame_time_ms}")
    checked = [_checked(f) for f in frames]
    if len({f.shape[:2] for f in checked}) != 1:
        raise CaptureError("the frames of a clip must all have the same size")
    modality = _modality(ctx)
    colour = modality == "ES" or any(is_colour(f) for f in checked)
    stack = [_rgb(f) if colour else _grey(f) for f in checked]
    if modality == "US":
        sop_class = UltrasoundMultiFrameImageStorage
    elif colour:
        sop_class = MultiFrameTrueColorSecondaryCaptureImageStorage
    else:
        sop_class = MultiFrameGrayscaleByteSecondaryCaptureImageStorage
    ds = _base(ctx, sop_class, instance_number, acquired, CLIP_DESCRIPTION)
    height, width = stack[0].shape[:2]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "YBR_FULL_422" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = height, width
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = len(stack)
    ds.FrameIncrementPointer = FRAME_TIME_POINTER
    ds.FrameTime = _ds(frame_time_ms)
    ds.CineRate = max(1, round(1000.0 / frame_time_ms))
    encoded = [_jpeg(f) for f in stack]
    ds.LossyImageCompression = "01"
    ratio = sum(f.nbytes for f in stack) / max(1, sum(len(e) for e in encoded))
    ds.LossyImageCompressionRatio = _ds(ratio)
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if modality != "US":
        _secondary_capture(ds, acquired)
        if not colour:  # Multi-frame Grayscale Byte SC: identity rescale and presentation,
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
            ds.PresentationLUTShape = "IDENTITY"
            # and the full 8-bit range as window, so the box sees stored / 255 as for US
            ds.WindowCenter, ds.WindowWidth = 128, 256
    _calibrate(ds, ctx, (height, width))
    return ds.SOPInstanceUID, _part10(ds, JPEGBaseline8Bit)


def _modality(ctx: CaptureContext) -> str:
    """The context's modality, upper case; "OT" when none was given."""
    return ctx.modality.strip().upper() or "OT"


def _checked(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` as a contiguous uint8 ``[H, W]`` or ``[H, W, 3]`` array, else CaptureError."""
    array = np.asarray(pixels)
    if array.dtype != np.uint8:
        raise CaptureError(f"pixels must be uint8, not {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise CaptureError(f"pixels must be [H, W] or [H, W, 3], not {list(array.shape)}")
    if min(array.shape[:2]) < 1:
        raise CaptureError("pixels must not be empty")
    return np.ascontiguousarray(array)


def is_colour(pixels: np.ndarray) -> bool:
    """Whether a uint8 picture has colour: ``[H, W, 3]`` whose samples spread by more than
    CHROMA_TOLERANCE on at least COLOUR_SHARE of its pixels (a grey picture, or one with
    the faint chroma a video codec leaves on grey, has none)."""
    if pixels.ndim != 3:
        return False
    sample = pixels[::COLOUR_STEP, ::COLOUR_STEP]
    spread = sample.max(axis=2).astype(np.int16) - sample.min(axis=2)
    return bool(np.count_nonzero(spread > CHROMA_TOLERANCE) >= COLOUR_SHARE * spread.size)


def _grey(frame: np.ndarray) -> np.ndarray:
    """Grey ``[H, W]``: colour reduced with the ITU-R BT.601 luma weights."""
    if frame.ndim == 2:
        return frame
    return np.clip(np.rint(frame @ LUMA_601), 0, 255).astype(np.uint8)


def _rgb(frame: np.ndarray) -> np.ndarray:
    """RGB ``[H, W, 3]``: grey replicated to the three samples."""
    return frame if frame.ndim == 3 else np.repeat(frame[:, :, None], 3, axis=2)


def _jpeg(frame: np.ndarray) -> bytes:
    """One frame as a JPEG baseline bitstream (4:2:2 chroma for colour: YBR_FULL_422)."""
    buffer = io.BytesIO()
    options = {"subsampling": "4:2:2"} if frame.ndim == 3 else {}
    Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=False,
                                progressive=False, **options)
    return buffer.getvalue()


def _birth_date(text: str) -> str:
    """A DICOM date (DA) from ``YYYYMMDD`` or ``YYYY-MM-DD`` (a browser's date field);
    empty (type 2: unknown) for anything else, which DA could not hold."""
    digits = text.strip().replace("-", "")
    return digits if len(digits) == 8 and digits.isdigit() else ""


def _sex(text: str) -> str:
    """Patient's Sex (CS): M, F or O; empty (unknown) for anything else."""
    value = text.strip().upper()[:1]
    return value if value in ("M", "F", "O") else ""


def _ds(value: float) -> str:
    """A decimal string (DS) of at most 16 characters."""
    return f"{value:.10g}"[:16]


def _date(moment: datetime.datetime) -> str:
    return moment.strftime("%Y%m%d")


def _time(moment: datetime.datetime) -> str:
    return moment.strftime("%H%M%S.%f")


def _base(ctx: CaptureContext, sop_class: str, instance_number: int,
          acquired: datetime.datetime, description: str) -> Dataset:
    """The attributes every kept object has: patient, study, series, equipment, image."""
    ds = Dataset()
    ds.SpecificCharacterSet = CHARACTER_SET
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid(prefix=None)  # 2.25.<uuid>, as the session's UIDs
    ds.InstanceCreationDate, ds.InstanceCreationTime = _date(acquired), _time(acquired)
    ds.PatientName = ctx.patient_name
    ds.PatientID = ctx.patient_id
    ds.PatientBirthDate = _birth_date(ctx.birth_date)
    ds.PatientSex = _sex(ctx.sex)
    ds.StudyInstanceUID = ctx.study_uid
    ds.StudyDate, ds.StudyTime = _date(ctx.started), _time(ctx.started)
    ds.AccessionNumber = ctx.accession_number[:16]
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.SeriesInstanceUID = ctx.series_uid
    ds.Modality = _modality(ctx)
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDate, ds.SeriesTime = _date(ctx.started), _time(ctx.started)
    ds.SeriesDescription = description
    if ctx.sps_id or ctx.accession_number:  # the scheduled step this series answers
        request = Dataset()
        request.AccessionNumber = ctx.accession_number[:16]
        request.ScheduledProcedureStepID = ctx.sps_id[:16]
        request.RequestedProcedureID = ""
        ds.RequestAttributesSequence = [request]
    ds.Laterality = ""  # type 2C: the side, if any, is not known here
    ds.Manufacturer = MANUFACTURER
    if ctx.station:
        ds.StationName = ctx.station[:16]
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ""
    ds.ContentDate, ds.ContentTime = _date(acquired), _time(acquired)
    ds.AcquisitionDateTime = acquired.strftime("%Y%m%d%H%M%S.%f%z")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    source = f" of {ctx.source_label}" if ctx.source_label else ""
    ds.DerivationDescription = f"Kept by clinibox live capture from the live video{source}"
    ds.BurnedInAnnotation = "YES" if ctx.burned_in else "NO"
    return ds


def _secondary_capture(ds: Dataset, acquired: datetime.datetime) -> None:
    """The SC Equipment and SC Image modules: digitised video, captured when acquired."""
    ds.ConversionType = "DV"
    ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = _date(acquired), _time(acquired)


def _calibrate(ds: Dataset, ctx: CaptureContext, shape: tuple[int, int]) -> None:
    """Ultrasound only: one calibrated region covering the image (deltas in cm)."""
    if ds.Modality != "US" or not ctx.mm_per_pixel > 0:
        return
    height, width = shape
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D (tissue or flow)
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = width - 1, height - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX = region.PhysicalDeltaY = ctx.mm_per_pixel / 10.0
    ds.SequenceOfUltrasoundRegions = DicomSequence([region])


def _part10(ds: Dataset, syntax: str) -> bytes:
    """``ds`` with its file meta, written as Part-10 explicit VR little endian bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
