"""Burned-in text: blank the pixels that may carry it, by a rule safe for the image's kind.

Ultrasound machines write the patient's name, the clinic and the date into
the image itself; screen grabs and photographs may show anything. PS3.15's
Clean Pixel Data Option (DCM 113101) asks for those pixels to be removed. What
an image is comes from its SOP Class as well as its Modality (an ultrasound
sent as Modality OT is still an ultrasound), and it "says" it has burned-in
text when ANY value of a multi-valued Burned In Annotation is YES. A screen
capture says YES whatever its header says: a secondary capture (its SOP Class)
or an image whose Image Type names a screen save (``SCREEN SAVE`` … in any
value, :data:`SCREEN_TYPES`); an image whose Image Type is ``SECONDARY`` (made
after the examination, a reformat or a capture) may carry text anywhere unless
it says NO. The rule, per image (its code, in :class:`Cleaning`, goes to the export log and the
De-identification Method):

* ``US-REGIONS``: an image with a Sequence of Ultrasound Regions that is an
  ultrasound, says YES or may carry text: every pixel outside the regions that
  hold data (tissue, flow, spectra, traces, bars) is blanked on every frame.
  Regions that together cover :data:`WHOLE_IMAGE` (95 %) of the image or more
  say nothing of where the text is: they count as no regions (``US-FRAME`` or
  ``ALL``);
* ``US-FRAME``: an ultrasound without regions (whether or not it says YES):
  everything outside a central data rectangle is blanked: the top quarter and
  the bottom tenth of the rows (the scanners' text bars) and an eighth of the
  columns at each side (depth scales, TIS/MI, probe and preset names);
* ``ALL``: an image that says YES and is no ultrasound, or one that may carry
  text anywhere (secondary capture, visible light photography, endoscopy,
  microscopy, video) and does not say NO, without regions: nothing tells where
  the text is, so every pixel is blanked; the object is kept with its geometry
  (rows, columns, frames) so the study stays whole and a report's references
  resolve;
* any other image keeps its pixels (``""``).

Whatever the rule, the bits of every pixel outside the stored bits (Bits
Stored ending at High Bit, of Bits Allocated) are cleared (``HIGH-BITS``, or
after the rule's code; a signed value's upper bits copy its sign): a name drawn
in the unused high bits of a 12-bit CT does not leave.

Changed pixels are decoded and written back uncompressed (Explicit VR Little
Endian), colour as RGB; a lossy source keeps saying it was lossy. An image
whose pixels cannot be decoded or written back is refused (:class:`CannotClean`).
The Icon Image Sequence (a thumbnail) is removed by the profile (Table E.1-1: X).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom import Dataset
from pydicom.multival import MultiValue

from clinibox_common.errors import CliniboxError

#: Region Data Type values (PS3.3 C.8.5.5.1.2) that hold image data: 1 tissue … 0x11 other
#: physiological input; 0 ("none or not applicable") and unknown values are blanked.
DATA_REGION_TYPES = frozenset(range(0x01, 0x12))
#: the frame blanked on ultrasound without regions: this share of the rows at the top …
BAND_TOP = 0.25
#: … and at the bottom …
BAND_BOTTOM = 0.10
#: … and of the columns at each side
BAND_SIDE = 0.125
#: SOP Class UIDs of ultrasound (whatever the Modality says): image, multi-frame (and their
#: retired forms), enhanced US volume, photoacoustic
ULTRASOUND_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1", "1.2.840.10008.5.1.4.1.1.6",
    "1.2.840.10008.5.1.4.1.1.3", "1.2.840.10008.5.1.4.1.1.6.2", "1.2.840.10008.5.1.4.1.1.6.3",
})
#: SOP Class UID prefixes of visible light images (endoscopy, microscopy, photography,
#: ophthalmic photography, video): they may show text anywhere
VISIBLE_LIGHT_PREFIX = "1.2.840.10008.5.1.4.1.1.77.1."
#: modalities that may show text anywhere (other, external camera, endoscopy, microscopy …)
TEXT_MODALITIES = frozenset({"OT", "XC", "ES", "GM", "SM", "OP", "DOC"})
#: regions covering this share of the image or more count as no regions
WHOLE_IMAGE = 0.95
#: Image Type values of a screen capture: burned in whatever the header says
SCREEN_TYPES = frozenset({"SCREEN SAVE", "SCREEN SHOT", "SCREENSHOT", "SCREEN CAPTURE"})
#: SOP Class UIDs of secondary capture (single frame and the multi-frame ones)
SECONDARY_CAPTURE_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4",
})


class CannotClean(CliniboxError):
    """The image may carry burned-in text that cannot be removed safely: leave it out."""

    kind = "not exported"


@dataclass(frozen=True)
class Cleaning:
    """What was done to an image's pixels: a rule's ``code`` ("" when nothing was needed)
    and its ``words``."""

    code: str = ""
    words: str = ""

    @property
    def method(self) -> str:
        """The code and words, for the export log ("" when nothing was done)."""
        return f"{self.code}: {self.words}" if self.code else ""

    @property
    def changed(self) -> bool:
        """Whether pixels were blanked (the Clean Pixel Data Option applies)."""
        return bool(self.code)


def says_burned_in(ds: Dataset) -> str:
    """"YES" when any value of Burned In Annotation is YES, else "NO" when one is NO, else ""."""
    raw = ds.get("BurnedInAnnotation", "")
    raw = list(raw) if isinstance(raw, MultiValue | list | tuple) else [raw]
    values = [str(v).strip().upper() for v in raw]
    if "YES" in values:
        return "YES"
    return "NO" if "NO" in values else ""


def is_ultrasound(ds: Dataset) -> bool:
    """An ultrasound by its SOP Class or its Modality."""
    return (str(ds.get("SOPClassUID", "")) in ULTRASOUND_CLASSES
            or str(ds.get("Modality", "")).strip().upper() in ("US", "IVUS"))


def _image_type(ds: Dataset) -> list[str]:
    raw = ds.get("ImageType", [])
    raw = list(raw) if isinstance(raw, MultiValue | list | tuple) else [raw]
    return [str(v).strip().upper() for v in raw]


def is_screen_capture(ds: Dataset) -> bool:
    """A secondary capture (SOP Class) or a screen save (Image Type): burned in, whatever
    its Burned In Annotation says."""
    return (str(ds.get("SOPClassUID", "")) in SECONDARY_CAPTURE_CLASSES
            or any(v in SCREEN_TYPES for v in _image_type(ds)))


def may_carry_text(ds: Dataset) -> bool:
    """A secondary capture, a visible light image, an image made after the examination
    (Image Type SECONDARY) or another kind that may show text anywhere."""
    sop_class = str(ds.get("SOPClassUID", ""))
    return (is_screen_capture(ds) or sop_class.startswith(VISIBLE_LIGHT_PREFIX)
            or "SECONDARY" in _image_type(ds)[1:2]
            or str(ds.get("Modality", "")).strip().upper() in TEXT_MODALITIES)


def clean_burned_in_text(ds: Dataset) -> Cleaning:
    """Blank the pixels of ``ds`` (in place) that may carry burned-in text; see the module.

    Raises :class:`CannotClean` for an image whose pixels cannot be cleaned.
    """
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise CannotClean("float pixel data cannot be checked for burned-in text")
        return Cleaning()
    says = "YES" if is_screen_capture(ds) else says_burned_in(ds)
    ultrasound = is_ultrasound(ds)
    anywhere = may_carry_text(ds) and says != "NO"
    if not (ultrasound or anywhere or says == "YES"):
        return _clear_high_bits(ds, Cleaning())
    rows, columns = int(ds.Rows), int(ds.Columns)
    regions = _data_regions(ds)
    if regions:
        keep = np.zeros((rows, columns), dtype=bool)
        for x0, y0, x1, y1 in regions:
            keep[y0:y1 + 1, x0:x1 + 1] = True
        cleaning = Cleaning("US-REGIONS", "pixels outside the ultrasound data regions blanked")
        blank = ~keep
    elif ultrasound:
        blank = np.ones((rows, columns), dtype=bool)
        top, bottom = max(1, round(rows * BAND_TOP)), max(1, round(rows * BAND_BOTTOM))
        side = max(1, round(columns * BAND_SIDE))
        blank[top:rows - bottom, side:columns - side] = False
        cleaning = Cleaning("US-FRAME", f"top {BAND_TOP:.0%}, bottom {BAND_BOTTOM:.0%} and "
                                        f"{BAND_SIDE:.1%} at each side blanked (ultrasound "
                                        "without regions)")
    else:
        blank = np.ones((rows, columns), dtype=bool)
        cleaning = Cleaning("ALL", "every pixel blanked (text may be anywhere and no regions "
                                   "say where the image data is)")
    _blank(ds, blank)
    ds.BurnedInAnnotation = "NO"
    return _clear_high_bits(ds, cleaning)


def _data_regions(ds: Dataset) -> list[tuple[int, int, int, int]]:
    """The (x0, y0, x1, y1) pixel rectangles of the regions that hold image data, clipped."""
    rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    found = []
    for region in ds.get("SequenceOfUltrasoundRegions", []):
        if int(region.get("RegionDataType", 0)) not in DATA_REGION_TYPES:
            continue
        try:
            x0, y0 = int(region.RegionLocationMinX0), int(region.RegionLocationMinY0)
            x1, y1 = int(region.RegionLocationMaxX1), int(region.RegionLocationMaxY1)
        except (AttributeError, TypeError, ValueError):
            raise CannotClean("an ultrasound region without a complete location") from None
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(columns - 1, x1), min(rows - 1, y1)
        if x0 <= x1 and y0 <= y1:
            found.append((x0, y0, x1, y1))
    if found and rows and columns:
        covered = np.zeros((rows, columns), dtype=bool)
        for x0, y0, x1, y1 in found:
            covered[y0:y1 + 1, x0:x1 + 1] = True
        if covered.mean() >= WHOLE_IMAGE:
            return []  # the whole image: says nothing of where the text is
    return found


def _blank(ds: Dataset, mask: np.ndarray) -> None:
    """Set the pixels under ``mask`` (rows × columns) to 0 on every frame; store uncompressed."""
    try:
        pixels = np.array(ds.pixel_array)  # colour comes back as RGB
    except Exception as exc:  # a decoder's own errors vary by codec
        raise CannotClean(f"its pixels could not be decoded to clean them ({exc})") from None
    if pixels.dtype not in (np.uint8, np.uint16, np.int8, np.int16):
        raise CannotClean(f"pixels of type {pixels.dtype} cannot be written back")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    view = pixels if frames > 1 else pixels[np.newaxis]
    if samples > 1:
        view[:, mask, :] = 0
    else:
        view[:, mask] = 0
    photometric = "RGB" if samples > 1 else str(ds.PhotometricInterpretation)
    # pydicom sets Explicit VR Little Endian when the source was compressed (encapsulated)
    ds.set_pixel_data(pixels, photometric, int(ds.BitsStored), generate_instance_uid=False)


def _clear_high_bits(ds: Dataset, cleaning: Cleaning) -> Cleaning:
    """Clear the bits outside the stored ones (Bits Stored ending at High Bit) of every
    pixel, in place; ``cleaning`` with ``HIGH-BITS`` added when any was set. A compressed
    image is decoded (the decoder keeps the stored bits only) and written back uncompressed:
    its codestream may hold the other bits."""
    allocated, stored = int(ds.get("BitsAllocated", 0)), int(ds.get("BitsStored", 0))
    if allocated not in (8, 16, 32) or not 0 < stored < allocated:
        return cleaning
    high = int(ds.get("HighBit", stored - 1))
    low = high - stored + 1
    if low < 0 or high >= allocated:
        raise CannotClean("its High Bit does not fit its Bits Stored and Bits Allocated")
    syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    if syntax is not None and syntax.is_encapsulated:
        _blank(ds, np.zeros((int(ds.Rows), int(ds.Columns)), dtype=bool))
        return _with_high_bits(cleaning)
    kind = {8: np.uint8, 16: np.uint16, 32: np.uint32}[allocated]
    data = ds.PixelData
    usable = len(data) - len(data) % (allocated // 8)
    raw = np.frombuffer(data[:usable], dtype=np.dtype(kind).newbyteorder("<")).astype(kind)
    keep = kind(((1 << stored) - 1) << low)
    fixed = raw & keep
    if int(ds.get("PixelRepresentation", 0)) == 1 and low == 0:
        extended = np.where((fixed >> kind(stored - 1)) & kind(1), fixed | ~keep, fixed)
        fixed = np.where(raw == fixed, raw, extended)  # zeros or the sign above: as they are
    if np.array_equal(fixed, raw):
        return cleaning
    ds.PixelData = fixed.astype(np.dtype(kind).newbyteorder("<")).tobytes() + data[usable:]
    return _with_high_bits(cleaning)


def _with_high_bits(cleaning: Cleaning) -> Cleaning:
    words = "bits outside Bits Stored cleared"
    if not cleaning.code:
        return Cleaning("HIGH-BITS", words)
    return Cleaning(f"{cleaning.code} HIGH-BITS", f"{cleaning.words}; {words}")
