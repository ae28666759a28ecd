"""The DICOM side of the box's DICOMweb service: headers read from the box's files, their
attributes as the DICOM JSON model (PS3.18 F.2, pydicom's ``to_json_dict``) at the study,
series and instance levels of a search (QIDO-RS), the metadata of a retrieve, and the
``multipart/related`` bodies that carry DICOM files and single frames (WADO-RS).

The files are served as the box holds them: the images as they were received (their own
transfer syntax, said in each part's ``transfer-syntax`` parameter), the result documents
as the box made them. Nothing is transcoded.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from clinibox_common.errors import CliniboxError

log = logging.getLogger(__name__)

#: the attributes a study match carries (PS3.18 Table 10.6.3-3), beside the counts
STUDY_KEYWORDS = ("SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber",
                  "ReferringPhysicianName", "PatientName", "PatientID", "PatientBirthDate",
                  "PatientSex", "StudyInstanceUID", "StudyID", "StudyDescription")
#: the attributes a series match carries (Table 10.6.3-4)
SERIES_KEYWORDS = ("SpecificCharacterSet", "Modality", "SeriesDescription", "SeriesNumber",
                   "SeriesInstanceUID", "SeriesDate", "SeriesTime", "StudyInstanceUID")
#: the attributes an instance match carries (Table 10.6.3-5)
INSTANCE_KEYWORDS = ("SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID",
                     "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
                     "StudyInstanceUID", "SeriesInstanceUID", "Modality")
#: binary attributes longer than this are left out of the metadata (no bulk data service)
BULK_BYTES = 1024
PIXEL_DATA = 0x7FE00010
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: the file is read in pieces of this many bytes
CHUNK = 1 << 20


def header(path: Path) -> Dataset:
    """The file's header, without its pixel data (its file meta information kept)."""
    return pydicom.dcmread(path, stop_before_pixels=True, defer_size=BULK_BYTES)


def transfer_syntax(dataset: Dataset) -> str:
    """The transfer syntax the file is stored in (Explicit VR Little Endian if unsaid)."""
    meta = getattr(dataset, "file_meta", None)
    return str(getattr(meta, "TransferSyntaxUID", "") or "1.2.840.10008.1.2.1")


def attributes(dataset: Dataset, keywords: Sequence[str]) -> Dataset:
    """The attributes of ``keywords`` that ``dataset`` has, as a new data set."""
    picked = Dataset()
    for keyword in keywords:
        if keyword in dataset:
            try:
                picked[keyword] = dataset[keyword]
            except (ValueError, TypeError, OverflowError) as exc:  # a value DICOM refuses
                log.warning("DICOMweb: %s of %s left out: %s", keyword,
                            dataset.get("SOPInstanceUID", "an object"), exc)
    return picked


def as_json(dataset: Dataset) -> dict:
    """``dataset`` in the DICOM JSON model. An attribute whose value DICOM JSON cannot carry
    (an IS of ``7,`` from a modality's bug) is left out with a log line: one bad attribute
    never keeps the others from a client."""
    try:
        return dataset.to_json_dict(bulk_data_threshold=BULK_BYTES,
                                    bulk_data_element_handler=lambda _element: "")
    except (ValueError, TypeError, OverflowError):
        pass
    kept: dict = {}
    for element in _elements(dataset):
        single = Dataset()
        single.add(element)
        try:
            kept.update(single.to_json_dict(bulk_data_threshold=BULK_BYTES,
                                            bulk_data_element_handler=lambda _element: ""))
        except (ValueError, TypeError, OverflowError) as exc:
            log.warning("DICOMweb: %s of %s left out: %s", element.tag,
                        dataset.get("SOPInstanceUID", "an object"), exc)
    return kept


def study_match(first: Dataset, modalities: Sequence[str], series: int, instances: int
                ) -> dict:
    """One study of a search: its attributes from its first image's header, the modalities
    of what the box serves of it, and how many series and instances that is."""
    found = attributes(first, STUDY_KEYWORDS)
    found.ModalitiesInStudy = list(modalities)
    found.NumberOfStudyRelatedSeries = series
    found.NumberOfStudyRelatedInstances = instances
    return as_json(found)


def series_match(first: Dataset, instances: int) -> dict:
    """One series of a search: its first object's attributes and how many it holds."""
    found = attributes(first, SERIES_KEYWORDS)
    found.NumberOfSeriesRelatedInstances = instances
    return as_json(found)


def instance_match(dataset: Dataset) -> dict:
    """One instance of a search."""
    return as_json(attributes(dataset, INSTANCE_KEYWORDS))


def _elements(dataset: Dataset) -> Iterator[DataElement]:
    """The data set's elements, each read on its own: one whose value DICOM refuses (an IS
    of ``7,`` from a modality's bug) is left out with a log line."""
    for tag in list(dataset.keys()):
        try:
            yield dataset[tag]
        except (ValueError, TypeError, OverflowError) as exc:
            log.warning("DICOMweb: %s of %s left out: %s", tag,
                        dataset.get("SOPInstanceUID", "an object"), exc)


def without_bulk(dataset: Dataset) -> Dataset:
    """A copy of ``dataset`` (its sequences' items too) without the pixel data and any binary
    attribute longer than :data:`BULK_BYTES` (an icon's pixels, a private blob)."""
    kept = Dataset()
    for element in _elements(dataset):
        if element.tag == PIXEL_DATA:
            continue
        if element.VR == "SQ":
            kept.add(DataElement(element.tag, "SQ",
                                 [without_bulk(item) for item in element.value or []]))
        elif not (element.VR in _BINARY_VRS and element.value is not None
                  and len(element.value) > BULK_BYTES):
            kept.add(element)
    return kept


def metadata(dataset: Dataset) -> dict:
    """The instance's metadata (WADO-RS): its whole header but its bulk data (none is served
    apart: retrieve the instance for its pixels)."""
    return as_json(without_bulk(dataset))


#: transfer syntaxes whose pixel data is not encapsulated (little endian: DICOMweb's frames)
NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
#: the most bytes of frames one request is answered (a 4096 × 4096 16-bit frame is 32 MiB)
FRAME_BYTES_AT_MOST = 64 * 2**20


class FramesRefused(CliniboxError, ValueError):
    """Frames the box cannot send as they are held (the reason says why)."""

    kind = "frames not sent"


def frames(path: Path, numbers: Sequence[int]) -> tuple[list[bytes], str]:
    """Frames ``numbers`` (1-based, each once) of the image in ``path`` as it holds them,
    and its transfer syntax: each native frame's bytes, read from the file at their place,
    or each encapsulated frame's compressed bytes, read up to the last one asked for.
    FramesRefused for a number out of range, an image without pixels, big-endian or
    1-bit native data, or more than :data:`FRAME_BYTES_AT_MOST` in all."""
    dataset = pydicom.dcmread(path, defer_size=BULK_BYTES)
    raw = dataset.get_item(PIXEL_DATA, keep_deferred=True)
    if raw is None:
        raise FramesRefused("the object has no pixel data")
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    wanted = list(dict.fromkeys(numbers))
    wrong = [n for n in wanted if not 1 <= n <= count]
    if wrong:
        raise FramesRefused(f"frame {wrong[0]} of {count}")
    syntax = transfer_syntax(dataset)
    with path.open("rb") as file:
        if syntax in NATIVE_SYNTAXES:
            return _native_frames(dataset, file, raw.value_tell, wanted), syntax
        if not pydicom.uid.UID(syntax).is_encapsulated:
            raise FramesRefused(f"{syntax}: frames are sent little endian only")
        file.seek(raw.value_tell)
        kept: dict[int, bytes] = {}
        total = 0
        for number, frame in enumerate(generate_frames(file, number_of_frames=count), 1):
            if number in wanted:
                kept[number] = frame
                total += len(frame)
                if total > FRAME_BYTES_AT_MOST:
                    raise FramesRefused(_too_many(len(wanted)))
                if len(kept) == len(wanted):
                    break
    return [kept[n] for n in wanted], syntax


def _native_frames(dataset: Dataset, file: BinaryIO, start: int, wanted: list[int]
                   ) -> list[bytes]:
    bits = int(dataset.BitsAllocated)
    if bits % 8:
        raise FramesRefused(f"{bits}-bit pixels are not sent as frames")
    size = int(dataset.Rows) * int(dataset.Columns) * \
        int(dataset.get("SamplesPerPixel", 1)) * bits // 8
    if size * len(wanted) > FRAME_BYTES_AT_MOST:
        raise FramesRefused(_too_many(len(wanted)))
    held = []
    for number in wanted:
        file.seek(start + (number - 1) * size)
        held.append(file.read(size))
    return held


def _too_many(asked: int) -> str:
    return (f"{asked} frames are more than {FRAME_BYTES_AT_MOST // 2**20} MiB: ask for fewer "
            "at a time")


def _multipart(media: str, parts: Sequence[tuple[str, Callable[[], Iterable[bytes]]]]
               ) -> tuple[Iterator[bytes], str]:
    """A ``multipart/related; type=media`` body of ``parts``, each ``(transfer syntax, its
    bytes' source)``, read as it is sent; the body and its Content-Type."""
    boundary = uuid.uuid4().hex

    def body() -> Iterator[bytes]:
        for syntax, chunks in parts:
            yield (f"--{boundary}\r\nContent-Type: {media}; "
                   f"transfer-syntax={syntax}\r\n\r\n").encode("ascii")
            yield from chunks()
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode("ascii")

    return body(), f'multipart/related; type="{media}"; boundary={boundary}'


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            yield chunk


def multipart(files: Iterable[tuple[Path, str]]) -> tuple[Iterator[bytes], str]:
    """A ``multipart/related; type="application/dicom"`` body of DICOM files, each ``(path,
    transfer syntax)``, read as it is sent; the body and its Content-Type."""
    return _multipart("application/dicom", [
        (syntax, functools.partial(_file_chunks, path)) for path, syntax in files])


def multipart_frames(frames_held: Sequence[bytes], syntax: str) -> tuple[Iterator[bytes], str]:
    """A ``multipart/related; type="application/octet-stream"`` body of frames held in
    ``syntax`` (each part says it); the body and its Content-Type."""
    return _multipart("application/octet-stream",
                      [(syntax, functools.partial(iter, [frame])) for frame in frames_held])
