"""Decode one untrusted DICOM Part-10 file into display-ready grey frames.

``decode`` validates the header against ``LimitsConfig`` before any pixel is
decoded, decodes at most ``max_frames`` frames one at a time (spread evenly,
middle included) and makes each float32 grey in [0, 1]: modality LUT, VOI
(window, VOI LUT, else a 0.5-99.5 % percentile window), MONOCHROME1 inverted,
colour reduced to luma. Images of 8 stored bits or fewer with no modality/VOI
transform (ultrasound, secondary capture, imported pictures) are shown as
stored (0..2^bits-1 → 0..1). Every problem becomes a ``DecodeError`` readable
by clinic staff; only ``FileNotFoundError`` (a spool fault) escapes as is.
Files without the preamble and ``DICM`` marker are refused as "not a DICOM
file": the box writes file meta for everything it receives over the network,
and a headerless file from a USB stick is too ambiguous to trust.

Display previews (``engine.imaging.preview``) are made from the same
decode through ``decode``'s ``each_frame`` hook, which sees every decoded
frame's stored values, and the public building blocks: ``open_dataset``
(read + validate under ``decode_guard``), ``frame_pixels``, ``is_colour``,
``colour_samples``, ``modality_values``, ``has_modality_transform``,
``modality_transform``, ``shown_as_stored``, ``frame_window``, ``window`` and
``percentile_bounds``.

Where a frame's grey follows from each pixel's stored value alone (a window, a
VOI LUT, or shown as stored: most CT, MR and radiographs), the arithmetic runs
once per stored value and the frame is one table look-up (``_display_table``).
"""

from __future__ import annotations

import math
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, as_pixel_options, get_decoder
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from engine.imaging.codestream import StreamMismatch, check_frames
from engine.imaging.dataset_values import integer as _int
from engine.imaging.dataset_values import number as _float
from engine.imaging.dataset_values import text as _text
from engine.imaging.dataset_values import value as _get
from engine.imaging.errors import NOT_ENOUGH_MEMORY, DecodeError
from engine.imaging.geometry import as_list, slice_geometry
from engine.imaging.geometry import pixel_spacing as _pixel_spacing
from engine.imaging.quality import grey_statistics, pixel_warnings
from engine.imaging.windowing import window
from engine.settings import LimitsConfig

MB = 1024 * 1024
#: Room for headers, overlays and icons on top of the decoded-pixel budget.
FILE_HEADROOM_MB = 64
#: Percentiles used as the window when the object carries none.
PERCENTILE_LOW, PERCENTILE_HIGH = 0.5, 99.5
#: Pixels sampled (at most) to estimate the percentile window.
PERCENTILE_SAMPLES = 1 << 20
#: Rec. 601 luma weights for RGB → grey.
LUMA = np.array([0.299, 0.587, 0.114])

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
PALETTE = "PALETTE COLOR"
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float, Double Float
UNDEFINED_LENGTH = 0xFFFFFFFF
REQUIRED = ("SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
            "PixelRepresentation")


#: the reason a decode that ran out of memory gives


@dataclass
class DecodedImage:
    """Display-ready grey frames of one DICOM instance, with what identifies it locally."""

    frames: np.ndarray  # float32 [F, H, W] in [0, 1]
    frame_indices: list[int]  # original (0-based) frame numbers of ``frames``
    total_frames: int
    rows: int
    columns: int
    modality: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    photometric: str
    transfer_syntax: str
    pixel_spacing: tuple[float, float] | None  # (row, column) mm per pixel
    decode_ms: float = field(default=0.0)
    #: where ``pixel_spacing`` comes from ("Pixel Spacing", "Imager Pixel Spacing",
    #: "ultrasound region"); empty when the image has no calibration
    spacing_source: str = ""
    #: Patient and study strings for the clinic viewer (stay on the box).
    display: dict[str, str] = field(default_factory=dict)
    #: what the routing rules read besides modality, SOP class and size (stay on the box)
    body_part: str = ""
    series_description: str = ""
    #: per frame of ``frames``, measured where it was decoded (the worker's core is the
    #: pipeline's busiest): its pixel quality warnings' reason codes
    #: (``quality.pixel_warnings``) and the mean and standard deviation of its grey values
    #: (``quality.grey_statistics``); None when not measured
    frame_warnings: list[list[str]] | None = None
    frame_grey: list[tuple[float, float]] | None = None
    #: where the image lies in the patient (``slice_geometry``): Image Position (Patient)
    #: (the first pixel's centre, mm), Image Orientation (Patient) (row then column
    #: direction cosines), Slice Thickness and Spacing Between Slices (mm), Frame of
    #: Reference UID; None ("") when absent or malformed
    image_position: tuple[float, float, float] | None = None
    image_orientation: tuple[float, float, float, float, float, float] | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    frame_of_reference_uid: str = ""

    def geometry(self) -> dict[str, Any]:
        """The image's place in the patient as JSON-ready values (stored per instance;
        ``inference/volume.py`` reads a series as a volume from them). ``pixel_spacing``
        only when it is the patient plane's (Pixel Spacing)."""
        in_plane = self.pixel_spacing if self.spacing_source == "Pixel Spacing" else None
        return {
            "image_position": as_list(self.image_position),
            "image_orientation": as_list(self.image_orientation),
            "pixel_spacing": as_list(in_plane),
            "slice_thickness": self.slice_thickness,
            "spacing_between_slices": self.spacing_between_slices,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "frames": self.total_frames,
        }


@dataclass(frozen=True)
class Header:
    """What ``_validate`` checked and the pixel pipeline needs: geometry, bits, encoding."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    photometric: str
    syntax: UID


def select_frames(total: int, max_frames: int) -> list[int]:
    """At most ``max_frames`` frame indices spread evenly over ``total``, middle included.

    The middle frame (``total // 2``) is always chosen; the other picks are
    spaced evenly below it (from frame 0) and above it (up to the last frame).
    """
    if total <= 0:
        return []
    count = max(1, min(max_frames, total))
    if count == total:
        return list(range(total))
    middle = total // 2
    below = (count - 1) // 2
    above = count - 1 - below
    picks = [math.floor(i * middle / below + 0.5) for i in range(below)] if below else []
    picks.append(middle)
    span = total - 1 - middle
    picks += [middle + math.floor(i * span / above + 0.5) for i in range(1, above + 1)]
    return sorted(set(picks))


#: ``each_frame(ds, header, index, stored_values, photometric, modality_values)``: sees every
#: decoded frame; ``modality_values`` are a grey frame's values in modality units (float64,
#: read-only), the ones its display was made from; None for colour, and for a frame whose
#: display came from a table of its stored values (``_display_table``: the hook makes them
#: from ``stored_values`` if it needs them)
FrameHook = Callable[[Dataset, "Header", int, np.ndarray, str, "np.ndarray | None"], None]


def decode(path: Path, limits: LimitsConfig, max_frames: int, *,
           each_frame: FrameHook | None = None) -> DecodedImage:
    """Decode the DICOM file at ``path`` into display-ready frames, or raise DecodeError.

    ``each_frame`` is called with each chosen frame's stored values as it is
    decoded (inside the same guard: its errors become DecodeError too), so
    other views of the frame are made without decoding it again.
    """
    started = time.perf_counter()
    with decode_guard() as caught:
        ds = _read(Path(path), limits, caught)
        header = _validate(ds, limits)
        indices = select_frames(header.frames, max_frames)
        decoded, checked, grey = [], [], []
        for index in indices:
            array, photometric = frame_pixels(ds, header, index)
            display, values = _display_frame(ds, header, index, array, photometric)
            decoded.append(display)
            checked.append([w.code.value for w in pixel_warnings(display)])
            grey.append(grey_statistics(display))
            if each_frame is not None:
                each_frame(ds, header, index, array, photometric, values)
        frames = np.stack(decoded)
        spacing, spacing_source = _pixel_spacing(ds)
        return DecodedImage(
            frames=frames,
            frame_indices=indices,
            total_frames=header.frames,
            rows=header.rows,
            columns=header.columns,
            modality=_text(ds, "Modality").upper(),
            sop_class_uid=_text(ds, "SOPClassUID"),
            sop_instance_uid=_text(ds, "SOPInstanceUID"),
            study_instance_uid=_text(ds, "StudyInstanceUID"),
            series_instance_uid=_text(ds, "SeriesInstanceUID"),
            photometric=header.photometric,
            transfer_syntax=str(header.syntax),
            pixel_spacing=spacing,
            decode_ms=(time.perf_counter() - started) * 1000,
            display=display_strings(ds),
            spacing_source=spacing_source,
            body_part=_text(ds, "BodyPartExamined").upper(),
            series_description=_text(ds, "SeriesDescription"),
            frame_warnings=checked,
            frame_grey=grey,
            **slice_geometry(ds),
        )


#: ``warnings.catch_warnings`` swaps process-wide state: one guarded section at a time.
_GUARD_LOCK = threading.RLock()


@contextmanager
def decode_guard() -> Iterator[list[warnings.WarningMessage]]:
    """Record warnings and turn unexpected errors into ``DecodeError``, as ``decode`` does.

    Yields the list of caught warnings (``_read`` looks for pydicom's end-of-file
    warning in it). ``DecodeError``, ``FileNotFoundError`` and interpreter exits
    pass through; ``MemoryError`` and anything else (codec panics included)
    become ``DecodeError("cannot decode: ...")``. Guarded sections are serialised
    by a re-entrant lock because the warning capture is process-wide.
    """
    with _GUARD_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield caught
        except (DecodeError, FileNotFoundError, KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except MemoryError:
            raise DecodeError(NOT_ENOUGH_MEMORY) from None
        except BaseException as exc:  # codec panics (e.g. PyO3 PanicException) are BaseException
            raise DecodeError(f"cannot decode: {_short(exc)}") from exc


def open_dataset(path: Path, limits: LimitsConfig) -> tuple[Dataset, Header]:
    """Read and validate the DICOM file at ``path`` (no pixel decoded), or raise DecodeError.

    The same checks, warning capture and error conversion as ``decode``; decode
    frames afterwards with ``frame_pixels`` inside ``decode_guard``.
    """
    with decode_guard() as caught:
        ds = _read(Path(path), limits, caught)
        return ds, _validate(ds, limits)


def text_value(ds: Dataset, keyword: str, limit: int = 128) -> str:
    """An attribute as printable text (first value of a multi-value), at most ``limit`` chars."""
    return _text(ds, keyword, limit)


def display_strings(ds: Dataset) -> dict[str, str]:
    """Patient name and id, study date and description as printable text (may be empty)."""
    return {
        "patient_name": _text(ds, "PatientName"),
        "patient_id": _text(ds, "PatientID", 64),
        "study_date": _text(ds, "StudyDate", 8),
        "study_description": _text(ds, "StudyDescription"),
    }


# -- reading ----------------------------------------------------------------


def _read(path: Path, limits: LimitsConfig, caught: list[warnings.WarningMessage]) -> Dataset:
    size = path.stat().st_size
    if size == 0:
        raise DecodeError("empty file")
    with path.open("rb") as handle:
        head = handle.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        raise DecodeError("not a DICOM file (no DICM marker)")
    budget = (limits.max_decoded_mb + FILE_HEADROOM_MB) * MB
    if size > budget:
        raise DecodeError(f"file is {size / MB:,.0f} MB, over the "
                          f"{limits.max_decoded_mb + FILE_HEADROOM_MB} MB limit")
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception as exc:
        raise DecodeError(f"not a DICOM file (damaged header: {_short(exc)})") from exc
    syntax = meta.get("TransferSyntaxUID")
    if not syntax:
        raise DecodeError("not a DICOM file (no transfer syntax in the file meta header)")
    deflated = syntax == DeflatedExplicitVRLittleEndian
    if deflated:
        _check_inflated_size(path, budget)
    try:
        ds = pydicom.dcmread(path, force=False)
    except InvalidDicomError as exc:
        raise DecodeError(f"not a DICOM file ({_short(exc)})") from exc
    except (EOFError, struct.error) as exc:
        raise DecodeError("truncated file") from exc
    if any("End of file" in str(w.message) for w in caught):
        raise DecodeError("truncated file (ends inside an element)")
    if not deflated:
        _check_complete(ds, size)
    return ds


def _check_inflated_size(path: Path, budget: int) -> None:
    """Refuse a deflated file whose data set would inflate past ``budget`` bytes."""
    with path.open("rb") as handle:
        handle.seek(132)
        group = handle.read(12)
        if group[:4] != b"\x02\x00\x00\x00" or len(group) < 12:
            raise DecodeError("not a DICOM file (deflated, without a file meta group length)")
        handle.seek(132 + 12 + struct.unpack("<I", group[8:12])[0])
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        total = 0
        try:
            while chunk := handle.read(MB):
                while chunk:
                    total += len(inflater.decompress(chunk, 16 * MB))
                    chunk = inflater.unconsumed_tail
                    if total > budget:
                        raise DecodeError(
                            f"deflated data would expand past {budget // MB} MB, over the limit"
                        )
        except zlib.error as exc:
            raise DecodeError(f"damaged deflated data ({_short(exc)})") from exc
        if not inflater.eof:
            raise DecodeError("truncated file (deflated data ends early)")


def _check_complete(ds: Dataset, size: int) -> None:
    """Raise 'truncated file' when the last element runs past the end of the file."""
    tags = list(ds.keys())
    if not tags:
        raise DecodeError("truncated file (no data after the file meta header)")
    last = ds.get_item(tags[-1])
    if not isinstance(last, RawDataElement) or last.value_tell is None:
        return
    value = last.value or b""
    if last.length == UNDEFINED_LENGTH:
        end = last.value_tell + len(value) + 8  # + sequence delimiter
    else:
        end = last.value_tell + last.length
    if end > size or (last.length != UNDEFINED_LENGTH and len(value) < last.length):
        raise DecodeError(f"truncated file (element {last.tag} runs past the end of the file)")
    if 0 < size - end < 12:  # a partial element header that pydicom silently dropped
        raise DecodeError("truncated file (ends inside an element header)")


# -- validation -------------------------------------------------------------


def _validate(ds: Dataset, limits: LimitsConfig) -> Header:
    pixel_tag = next((tag for tag in PIXEL_TAGS if tag in ds), None)
    if pixel_tag is None:
        sop = _text(ds, "SOPClassUID")
        kind = UID(sop).name if sop else (_text(ds, "Modality") or "unknown object")
        raise DecodeError(f"no pixel data (not an image: {kind})")
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    if rows is None or columns is None:
        raise DecodeError("missing Rows/Columns")
    if rows <= 0 or columns <= 0:
        raise DecodeError(f"image has zero rows or columns ({columns} x {rows})")
    if rows > limits.max_rows or columns > limits.max_columns:
        limit = limits.max_rows if rows > limits.max_rows else limits.max_columns
        raise DecodeError(f"image is {columns} x {rows} pixels, over the {limit} limit")
    frames = _int(ds, "NumberOfFrames") if "NumberOfFrames" in ds else 1
    if frames is None or frames < 0:
        raise DecodeError(f"invalid Number of Frames: {ds.get('NumberOfFrames')!r}")
    if frames == 0:
        raise DecodeError("image has zero frames")
    if frames > limits.max_frames:
        raise DecodeError(f"{frames} frames, over the {limits.max_frames} frame limit")
    for keyword in REQUIRED:
        if keyword not in ds or ds[keyword].value in (None, ""):
            raise DecodeError(f"missing {keyword}")
    samples, allocated, stored = (
        _int(ds, "SamplesPerPixel"), _int(ds, "BitsAllocated"), _int(ds, "BitsStored")
    )
    if samples not in (1, 3):
        raise DecodeError(f"unsupported samples per pixel: {samples}")
    allowed = {0x7FE00010: (1, 8, 16, 32), 0x7FE00008: (32,), 0x7FE00009: (64,)}[pixel_tag]
    if allocated not in allowed or (allocated == 1 and samples != 1):
        raise DecodeError(f"unsupported bits allocated: {allocated}")
    if stored is None or not 1 <= stored <= allocated:
        raise DecodeError(f"unsupported bits stored: {stored} (bits allocated {allocated})")
    photometric = _text(ds, "PhotometricInterpretation").upper()
    if photometric not in (*MONOCHROME, *COLOUR, PALETTE):
        raise DecodeError(f"unsupported photometric interpretation: {photometric}")
    if samples != (3 if photometric in COLOUR else 1):
        raise DecodeError(f"unsupported photometric interpretation: {photometric} "
                          f"with {samples} samples per pixel")
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        name = syntax.name if syntax.name != str(syntax) else "unknown"
        raise DecodeError(f"transfer syntax {syntax} ({name}) cannot be decoded on this box")
    per_sample = 1 if allocated <= 8 else allocated // 8
    needed = rows * columns * frames * samples * per_sample
    if needed > limits.max_decoded_mb * MB:
        raise DecodeError(f"decoded image would need {needed / MB:,.0f} MB, "
                          f"over the {limits.max_decoded_mb} MB limit")
    megapixels = rows * columns / 1e6
    if megapixels > limits.max_megapixels:
        raise DecodeError(f"each frame is {columns} × {rows} = {megapixels:,.1f} megapixels, "
                          f"over the {limits.max_megapixels:g} megapixel limit")
    element = ds.get_item(pixel_tag)
    value = element.value or b""
    undefined = getattr(element, "length", None) == UNDEFINED_LENGTH or getattr(
        element, "is_undefined_length", False
    )
    if undefined and not syntax.is_encapsulated:
        raise DecodeError(f"pixel data is compressed but the transfer syntax {syntax} "
                          f"({syntax.name}) says it is not")
    if syntax.is_encapsulated and value:
        try:  # what the compressed stream claims, before a decoder sizes its buffers by it
            check_frames(syntax, value, rows=rows, columns=columns, samples=samples,
                         bits_allocated=allocated, frames=frames)
        except StreamMismatch as exc:
            raise DecodeError(f"refused before decoding: {exc}") from None
    if not syntax.is_encapsulated:
        bits = rows * columns * frames * allocated * samples
        if photometric == "YBR_FULL_422":
            bits = bits * 2 // 3
        expected = (bits + 7) // 8
        if len(value) < expected:
            raise DecodeError(f"pixel data too short: {len(value)} bytes, expected {expected}")
    elif not value:
        raise DecodeError("pixel data is empty")
    return Header(rows, columns, frames, samples, allocated, stored, photometric, syntax)


# -- pixels -------------------------------------------------------------------


def frame_pixels(ds: Dataset, header: Header, index: int) -> tuple[np.ndarray, str]:
    """Stored values of frame ``index`` and the photometric interpretation they are in.

    Colour comes back as RGB samples ``[H, W, 3]`` (the decoder converts YBR),
    palette colour as indices ``[H, W]`` with ``"PALETTE COLOR"``; call inside
    ``decode_guard`` (codec errors become ``DecodeError``).
    """
    decoder = get_decoder(header.syntax)
    array, meta = decoder.as_array(ds, index=index, validate=True, **as_pixel_options(ds))
    photometric = str(meta.get("photometric_interpretation", header.photometric)).upper()
    return array, photometric


def is_colour(array: np.ndarray, photometric: str) -> bool:
    """True for palette colour and three-sample (RGB/YBR) frames from ``frame_pixels``."""
    return photometric == PALETTE or array.ndim == 3


def colour_samples(array: np.ndarray, ds: Dataset, header: Header,
                   photometric: str) -> tuple[np.ndarray, float]:
    """Colour samples ``[H, W, 3]`` (palette applied) and the value that means full scale.

    The samples are RGB, or YBR (Y first) if the decoder left them so
    (``photometric`` says which).
    """
    if photometric == PALETTE:
        rgb = apply_color_lut(array, ds)
        return rgb, float(np.iinfo(rgb.dtype).max)
    return array, float(2 ** header.bits_stored - 1)


def _display_frame(ds: Dataset, header: Header, index: int, array: np.ndarray,
                   photometric: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's view of one frame: float32 grey in [0, 1]; and, for a grey frame, its
    values in modality units (float64) that view was made from."""
    if is_colour(array, photometric):
        samples, full_scale = colour_samples(array, ds, header, photometric)
        channels = samples.astype(np.float64)
        # YBR: Y is the luma already
        grey = channels[..., 0] if photometric.startswith("YBR") else channels @ LUMA
        return _finish_grey(grey / full_scale, photometric), None
    attrs = _frame_attributes(ds, index)  # read once: the table and the pixels share them
    table = _display_table(ds, header, index, array, photometric, attrs)
    if table is not None:
        lookup, low = table
        positions = array.astype(np.intp)  # np.take's own index type: no cast inside
        positions -= low
        return np.take(lookup, positions), None
    grey, values = _grey_to_display(array, ds, header, index, attrs)
    values.flags.writeable = False  # shared with the previews
    return _finish_grey(grey, photometric), values


def _finish_grey(grey: np.ndarray, photometric: str) -> np.ndarray:
    """MONOCHROME1 inverted, non-finite values replaced, clipped to [0, 1], float32."""
    if photometric == "MONOCHROME1":
        grey = 1.0 - grey
    if not np.isfinite(grey).all():
        grey = np.nan_to_num(grey, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(grey, 0.0, 1.0, out=grey).astype(np.float32)


def _display_table(ds: Dataset, header: Header, index: int, array: np.ndarray,
                   photometric: str, attrs: dict[str, Any] | None = None
                   ) -> tuple[np.ndarray, int] | None:
    """The model's view of every stored value from the frame's lowest to its highest, and
    the lowest; None where a pixel's grey depends on more than its own stored value (the
    percentile window) or the values are not integers of at most 16 bits.

    The same arithmetic as ``_grey_to_display`` and ``_finish_grey``, on each stored value
    once instead of on every pixel: the frame becomes one table look-up, equal bit for bit.
    A 512 × 512 CT slice spans a few thousand stored values, not 262,144 pixels.
    ``attrs``: the frame's ``_frame_attributes`` when the caller has read them."""
    if array.dtype.kind not in "iu" or array.itemsize > 2 or array.size == 0:
        return None
    attrs = _frame_attributes(ds, index) if attrs is None else attrs
    transformed = _modality_kind(ds, attrs) is not None
    if (_own_window(attrs) is None and not ds.get("VOILUTSequence")
            and not shown_as_stored(header, array, transformed)):
        return None
    low, high = int(array.min()), int(array.max())
    if high - low + 1 > array.size:  # a tiny frame: the table would be the larger
        return None
    domain = np.arange(low, high + 1, dtype=array.dtype)
    grey, _ = _grey_to_display(domain, ds, header, index, attrs)
    return _finish_grey(grey, photometric), low


def _grey_to_display(array: np.ndarray, ds: Dataset, header: Header, index: int,
                     attrs: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Modality LUT, then VOI (window, VOI LUT or percentile), scaled to [0, 1]; and the
    modality values. ``attrs``: frame ``index``'s ``_frame_attributes``, if read already."""
    attrs = _frame_attributes(ds, index) if attrs is None else attrs
    values, transformed = _modality(array, ds, attrs)
    own = _own_window(attrs)
    if own is not None:
        return window(values, *own), values
    if ds.get("VOILUTSequence"):
        return _apply_lut(values, ds.VOILUTSequence[0], ds, normalise=True), values
    if shown_as_stored(header, array, transformed):
        return values / float(2 ** header.bits_stored - 1), values
    return _percentile_window(values), values


def modality_values(ds: Dataset, header: Header, index: int,
                    array: np.ndarray | None = None) -> np.ndarray:
    """Frame ``index`` of a grey image in modality units (modality LUT or rescale), float64.

    ``array`` is the frame's stored values from ``frame_pixels`` (decoded here
    when not given). Units are e.g. Hounsfield units for CT; stored values when
    the object has no modality transform.
    """
    if array is None:
        array, _ = frame_pixels(ds, header, index)
    return _modality(array, ds, _frame_attributes(ds, index))[0]


def has_modality_transform(ds: Dataset, index: int) -> bool:
    """True when frame ``index`` has a modality LUT or a rescale slope and intercept."""
    return modality_transform(ds, index) is not None


def modality_transform(ds: Dataset, index: int) -> tuple[str, float, float] | None:
    """Frame ``index``'s modality transform: ``("rescale", slope, intercept)``,
    ``("lut", 1.0, 0.0)`` for a Modality LUT, or None when it has none."""
    attrs = _frame_attributes(ds, index)
    kind = _modality_kind(ds, attrs)
    if kind == "rescale":
        return kind, attrs["RescaleSlope"], attrs["RescaleIntercept"]
    return None if kind is None else (kind, 1.0, 0.0)


def shown_as_stored(header: Header, array: np.ndarray, transformed: bool) -> bool:
    """True for 8-bit-or-less stored values without a modality transform (shown 0..2^bits-1).

    ``decode`` uses it when the object has no window and no VOI LUT.
    """
    return not transformed and header.bits_stored <= 8 and array.dtype.kind in "ub"


def frame_window(ds: Dataset, index: int) -> tuple[float, float, str] | None:
    """The frame's own window: (centre, width, VOI LUT function), or None when it has none.

    Per-frame functional groups first, then shared, then the top level; a
    width of zero or less counts as no window.
    """
    return _own_window(_frame_attributes(ds, index))


def _modality_kind(ds: Dataset, attrs: dict[str, Any]) -> str | None:
    if ds.get("ModalityLUTSequence"):
        return "lut"
    if attrs.get("RescaleSlope") is not None and attrs.get("RescaleIntercept") is not None:
        return "rescale"
    return None


def _modality(array: np.ndarray, ds: Dataset, attrs: dict[str, Any]) -> tuple[np.ndarray, bool]:
    """Stored values through the modality LUT or rescale; also whether one was applied."""
    values = array.astype(np.float64)
    kind = _modality_kind(ds, attrs)
    if kind == "lut":
        return _apply_lut(values, ds.ModalityLUTSequence[0], ds, normalise=False), True
    if kind == "rescale":  # in place: the same arithmetic without two more copies
        values *= attrs["RescaleSlope"]
        values += attrs["RescaleIntercept"]
        return values, True
    return values, False


def _own_window(attrs: dict[str, Any]) -> tuple[float, float, str] | None:
    centre, width = attrs.get("WindowCenter"), attrs.get("WindowWidth")
    if centre is not None and width is not None and width > 0:
        return centre, width, attrs.get("VOILUTFunction", "LINEAR")
    return None


def _apply_lut(values: np.ndarray, item: Dataset, ds: Dataset, normalise: bool) -> np.ndarray:
    """Apply a Modality or VOI LUT item; VOI output is scaled to [0, 1] by the LUT's range."""
    entries, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
    raw = item.LUTData
    if isinstance(raw, bytes):
        little = ds.original_encoding[1] is not False
        table = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<u2" if little else ">u2")
    else:
        table = np.asarray(raw if isinstance(raw, list | tuple) else [raw], dtype=np.float64)
    table = table[:entries].astype(np.float64)
    if table.size == 0:
        raise ValueError("empty lookup table")
    positions = np.clip(np.rint(values) - first, 0, table.size - 1).astype(np.int64)
    out = table[positions]
    if not normalise:
        return out
    low, high = float(table.min()), float(table.max())
    return (out - low) / (high - low) if high > low else np.zeros_like(out)


def percentile_bounds(values: np.ndarray) -> tuple[float, float] | None:
    """The 0.5-99.5 % percentiles of the finite values (min/max if those are equal).

    Sampled (at most ``PERCENTILE_SAMPLES`` values) for speed; None when the
    values are all equal or none is finite.
    """
    flat = values.reshape(-1)
    step = max(1, flat.size // PERCENTILE_SAMPLES)
    sample = flat[::step]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return None
    low, high = np.percentile(sample, [PERCENTILE_LOW, PERCENTILE_HIGH])
    if high <= low:
        low, high = sample.min(), sample.max()
    if high <= low:
        return None
    return float(low), float(high)


def _percentile_window(values: np.ndarray) -> np.ndarray:
    bounds = percentile_bounds(values)
    if bounds is None:
        return np.zeros_like(values)
    low, high = bounds
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _frame_attributes(ds: Dataset, index: int) -> dict[str, Any]:
    """Rescale and window for one frame: per-frame groups, then shared, then top level."""
    sources: list[Dataset] = []
    for sequence, position in (("PerFrameFunctionalGroupsSequence", index),
                               ("SharedFunctionalGroupsSequence", 0)):
        groups = _get(ds, sequence)
        if groups and position < len(groups):
            for name in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
                items = _get(groups[position], name)
                if items:
                    sources.append(items[0])
    attrs: dict[str, Any] = {}
    for source in [*sources, ds]:
        for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
            number = _float(_get(source, keyword))
            if keyword not in attrs and number is not None:
                attrs[keyword] = number
        function = _get(source, "VOILUTFunction")
        if "VOILUTFunction" not in attrs and function:
            attrs["VOILUTFunction"] = str(function).strip()
    return attrs


# -- small helpers ------------------------------------------------------------------


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
