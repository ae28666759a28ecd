"""Whether a received data set is whole: every element's value inside the bytes that came.

A peer may announce a Pixel Data of 2 MB and send 1 MB, then end the data set: the
receivers write what arrives to a file and never parse it whole, so without this check the
box would answer Success for an object it does not have (Orthanc, whose dcmtk parses the
data set, ends the association instead). ``cut_short`` walks the element headers from the
start of the data set to its end without reading any value: a value that reaches past the
end of the file, an element header cut in two, or a sequence, item or encapsulated Pixel
Data never closed by its delimiter means the data set was cut short. Defined-length values
(a 1 GB Pixel Data too) are skipped with a seek, so the check costs one read per element
header, whatever the object's size.

The file meta's transfer syntax says how to read the headers (none: implicit VR little
endian, DICOM's default; any syntax but the implicit and big-endian ones: explicit VR little
endian, as every compressed one is). A deflated data set is not walked: a truncated one is
found when it is decoded, and the object is then quarantined.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

#: explicit VRs whose length takes 4 bytes after 2 reserved ones (PS3.5 7.1.2)
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                      b"UR", b"UT", b"UV"})
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
#: deepest nesting of sequences and items walked (deeper: cut short, the header is absurd)
MAX_DEPTH = 64


class CutShort(ValueError):
    """The data set ends inside an element."""


def cut_short(handle: BinaryIO) -> bool:
    """Whether the Part-10 file (or bare data set) open in ``handle`` ends inside one of
    its elements. OSError where the file cannot be read; ValueError where its file meta
    cannot."""
    read_preamble(handle, force=True)
    syntax = _read_file_meta_info(handle).get("TransferSyntaxUID")
    if syntax == DeflatedExplicitVRLittleEndian:
        return False
    explicit = syntax is not None and syntax != ImplicitVRLittleEndian
    walker = _Walker(handle, os.fstat(handle.fileno()).st_size, explicit,
                     little_endian=syntax != ExplicitVRBigEndian)
    try:
        walker.walk(closing=None, depth=0)
    except CutShort:
        return True
    return False


class _Walker:
    """Reads element headers only, seeking over every defined-length value."""

    def __init__(self, handle: BinaryIO, size: int, explicit: bool, *,
                 little_endian: bool) -> None:
        self.handle, self.size, self.explicit = handle, size, explicit
        self.order = "<" if little_endian else ">"

    def _read(self, count: int) -> bytes:
        data = self.handle.read(count)
        if len(data) != count:
            raise CutShort("an element header is cut in two")
        return data

    def _skip(self, length: int) -> None:
        end = self.handle.tell() + length
        if end > self.size:
            raise CutShort("a value reaches past the end of the data set")
        self.handle.seek(end)

    def walk(self, closing: int | None, depth: int) -> None:
        """Walk elements until the delimiter ``closing`` (None: the end of the file)."""
        if depth > MAX_DEPTH:
            raise CutShort("sequences nested deeper than any header")
        while True:
            if closing is None and self.handle.tell() >= self.size:
                return
            group, element = struct.unpack(self.order + "HH", self._read(4))
            tag = group << 16 | element
            if group == 0xFFFE:  # an item or a delimiter: no VR in any syntax
                (length,) = struct.unpack(self.order + "I", self._read(4))
                if tag == closing:
                    return
                if tag == ITEM:
                    self._value(length, ITEM_END, depth)
                    continue
                if tag in (ITEM_END, SEQUENCE_END):  # a delimiter closing nothing open
                    continue
                raise CutShort("an item tag where an element was expected")
            if self.explicit:
                vr = self._read(2)
                if vr in LONG_VRS:
                    (length,) = struct.unpack(self.order + "2xI", self._read(6))
                else:
                    (length,) = struct.unpack(self.order + "H", self._read(2))
            else:
                (length,) = struct.unpack(self.order + "I", self._read(4))
            self._value(length, SEQUENCE_END, depth)

    def _value(self, length: int, closing: int, depth: int) -> None:
        """Skip a defined-length value; walk an undefined one to its ``closing`` delimiter
        (a sequence's items, an item's elements, encapsulated Pixel Data's fragments)."""
        if length == UNDEFINED:
            self.walk(closing, depth + 1)
        else:
            self._skip(length)
