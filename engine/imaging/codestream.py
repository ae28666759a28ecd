"""What a compressed frame says about itself, checked against the DICOM header first.

A decoder sizes its buffers from the compressed stream, not from the DICOM
header: a 1.4 KB JPEG 2000 object whose header says 256 × 256 but whose SIZ
marker claims 40000 × 40000 made the decoder ask for gigabytes. So before any
pixel is decoded, the geometry each frame's stream declares is read from its
first bytes — JPEG SOF (baseline, extended, lossless), JPEG-LS SOF55, JPEG 2000
SIZ (raw codestream or JP2-wrapped), the RLE header — and compared with Rows,
Columns, Samples per Pixel and Bits Allocated. Any difference is refused with
a sentence a technician can read. Nothing here allocates more than the
fragment it reads.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.encaps import generate_fragments
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from clinibox_common.errors import CliniboxError

JPEG_SYNTAXES = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1,
                           JPEGLSLossless, JPEGLSNearLossless})
J2K_SYNTAXES = frozenset({JPEG2000Lossless, JPEG2000, HTJ2K, HTJ2KLossless, HTJ2KLosslessRPCL})
#: start-of-frame markers: SOF0-3, 5-7, 9-11, 13-15 (not DHT C4, JPG C8, DAC CC) and SOF55
SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                         0xCE, 0xCF, 0xF7})
#: markers without a length field
STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
#: most fragments looked at in one object (a frame's first fragment each)
MAX_FRAGMENTS = 100_000


class StreamMismatch(CliniboxError, ValueError):
    """A compressed frame that contradicts the DICOM header (or cannot be read at all)."""

    kind = "pixel data refused"


@dataclass(frozen=True)
class StreamFacts:
    """The geometry a compressed frame declares."""

    kind: str
    columns: int
    rows: int
    components: int
    precision: int
    #: the start-of-frame marker (JPEG: 0xC0 baseline … 0xCF; 0 where there is none)
    marker: int = 0


def jpeg_facts(data: bytes) -> StreamFacts:
    """Geometry from a JPEG or JPEG-LS stream's start-of-frame segment."""
    if data[:2] != b"\xff\xd8":
        raise StreamMismatch("the JPEG stream does not start with SOI")
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise StreamMismatch("the JPEG stream is damaged before its frame header")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in STANDALONE:
            at += 2
            continue
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        if marker in SOF_MARKERS:
            segment = data[at + 4:at + 2 + length]
            if length < 8 or len(segment) < 6:
                raise StreamMismatch("the JPEG frame header is truncated")
            precision, rows, columns, components = struct.unpack(">BHHB", segment[:6])
            kind = "JPEG-LS" if marker == 0xF7 else "JPEG"
            return StreamFacts(kind, columns, rows, components, precision, marker)
        if marker == 0xDA or length < 2:  # scan data before any frame header
            break
        at += 2 + length
    raise StreamMismatch("the JPEG stream has no frame header (SOF)")


def j2k_facts(data: bytes) -> StreamFacts:
    """Geometry from a JPEG 2000 SIZ marker (raw codestream, or inside a JP2 'jp2c' box)."""
    if data.startswith(JP2_SIGNATURE):
        data = _jp2_codestream(data)
    if data[:4] != b"\xff\x4f\xff\x51" or len(data) < 42:
        raise StreamMismatch("the JPEG 2000 stream does not start with SOC and SIZ")
    (_, _, xsiz, ysiz, xo, yo, _, _, _, _, csiz) = struct.unpack(">HHIIIIIIIIH", data[4:42])
    if xo > xsiz or yo > ysiz or csiz == 0 or len(data) < 42 + 3 * csiz:
        raise StreamMismatch("the JPEG 2000 SIZ marker is inconsistent")
    depths = {(data[42 + 3 * c] & 0x7F) + 1 for c in range(csiz)}
    return StreamFacts("JPEG 2000", xsiz - xo, ysiz - yo, csiz, max(depths))


def _jp2_codestream(data: bytes) -> bytes:
    at = 0
    while at + 8 <= len(data):
        size, box = struct.unpack(">I4s", data[at:at + 8])
        header = 8
        if size == 1 and at + 16 <= len(data):
            size, header = struct.unpack(">Q", data[at + 8:at + 16])[0], 16
        if box == b"jp2c":
            return data[at + header:] if size == 0 else data[at + header:at + size]
        if size < header:
            break
        at += size
    raise StreamMismatch("the JP2 file has no codestream box")


def rle_segments(data: bytes) -> int:
    """The number of segments an RLE frame's 64-byte header declares (offsets checked)."""
    if len(data) < 64:
        raise StreamMismatch("the RLE frame is shorter than its 64-byte header")
    header = struct.unpack("<16I", data[:64])
    count = header[0]
    offsets = header[1:1 + count] if count <= 15 else ()
    if not 1 <= count <= 15 or offsets[0] != 64 or any(
            b <= a for a, b in itertools.pairwise(offsets)) or offsets[-1] >= len(data):
        raise StreamMismatch("the RLE header is inconsistent (segment count or offsets)")
    return count


def fragments(pixel_data: bytes) -> Iterator[bytes]:
    """The fragments of encapsulated Pixel Data, after its Basic Offset Table item."""
    if len(pixel_data) < 8 or pixel_data[:4] != b"\xfe\xff\x00\xe0":
        raise StreamMismatch("the encapsulated pixel data does not start with an item")
    table = struct.unpack("<I", pixel_data[4:8])[0]
    try:
        yield from generate_fragments(pixel_data[8 + table:])
    except ValueError as exc:
        raise StreamMismatch(f"the encapsulated pixel data is damaged ({exc})") from None


def frame_starts(pixel_data: bytes, frames: int) -> Iterator[bytes]:
    """Every fragment of encapsulated Pixel Data that starts a frame, at most ``frames``
    of them: a frame's first fragment is the one that begins with a stream header."""
    found = 0
    for number, fragment in enumerate(fragments(pixel_data)):
        if number >= MAX_FRAGMENTS or found >= frames:
            return
        if fragment[:2] in (b"\xff\xd8", b"\xff\x4f") or fragment.startswith(JP2_SIGNATURE):
            found += 1
            yield fragment


def check_frames(syntax: UID, pixel_data: bytes, *, rows: int, columns: int, samples: int,
                 bits_allocated: int, frames: int) -> None:
    """Raise StreamMismatch when a frame's stream contradicts the header, or none is found."""
    if syntax == RLELossless:
        expected = samples * max(1, bits_allocated // 8)
        for number, fragment in enumerate(fragments(pixel_data)):
            if number >= min(frames, MAX_FRAGMENTS):
                break
            count = rle_segments(fragment)
            if count != expected:
                raise StreamMismatch(
                    f"the RLE stream has {count} segments, the DICOM header needs {expected} "
                    f"({samples} samples of {bits_allocated} bits)")
        return
    if syntax in JPEG_SYNTAXES:
        read = jpeg_facts
    elif syntax in J2K_SYNTAXES:
        read = j2k_facts
    else:
        return
    seen = 0
    for fragment in frame_starts(pixel_data, frames):
        facts = read(fragment)
        seen += 1
        if (facts.columns, facts.rows) != (columns, rows):
            raise StreamMismatch(
                f"the {facts.kind} stream says {facts.columns} × {facts.rows} pixels, the "
                f"DICOM header {columns} × {rows}")
        if facts.components != samples:
            raise StreamMismatch(
                f"the {facts.kind} stream has {facts.components} components, the DICOM header "
                f"{samples} samples per pixel")
        if facts.precision > max(bits_allocated, 8):
            raise StreamMismatch(
                f"the {facts.kind} stream has {facts.precision}-bit samples, more than the "
                f"{bits_allocated} bits allocated")
    if seen == 0:
        raise StreamMismatch(f"no {syntax.name} frame header found in the pixel data")
