"""Burned-in text: blank the pixels that may carry it, or refuse the image.

Ultrasound machines write the patient's name, the clinic and the date into
the image itself. PS3.15's Clean Pixel Data Option (DCM 113101) asks for
those pixels to be removed. The rule here, per image:

* an ultrasound image (or any image that says BurnedInAnnotation YES) with a
  Sequence of Ultrasound Regions: every pixel outside the regions that hold
  data (tissue, flow, spectra, traces, bars) is blanked on every frame;
* an ultrasound image without regions that does not say BurnedInAnnotation
  YES: a conservative band is blanked (the top quarter and the bottom tenth,
  where scanners put their text bars);
* an image that says BurnedInAnnotation YES and has no regions, or a
  secondary capture (a screen grab, a wrapped photograph) that does not say
  BurnedInAnnotation NO, cannot be cleaned safely: it is refused
  (:class:`CannotClean`), never exported;
* any other image keeps its pixels.

Changed pixels are decoded and written back uncompressed (Explicit VR Little
Endian), colour as RGB; a lossy source keeps saying it was lossy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom import Dataset

from firmware_app.errors import CliniboxError

#: Region Data Type values (PS3.3 C.8.5.5.1.2) that hold image data: 1 tissue … 0x11 other
#: physiological input; 0 ("none or not applicable") and unknown values are blanked.
DATA_REGION_TYPES = frozenset(range(0x01, 0x12))
#: the band blanked on ultrasound without regions: this share of the rows at the top …
BAND_TOP = 0.25
#: … and at the bottom
BAND_BOTTOM = 0.10
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
    """What was done to an image's pixels: ``method`` is "" when nothing was needed."""

    method: str = ""

    @property
    def changed(self) -> bool:
        """Whether pixels were blanked (the Clean Pixel Data Option applies)."""
        return bool(self.method)


def clean_burned_in_text(ds: Dataset) -> Cleaning:
    """Blank the pixels of ``ds`` (in place) that may carry burned-in text; see the module.

    Raises :class:`CannotClean` for an image that must not be exported.
    """
    if "PixelData" not in ds:
        return Cleaning()
    says = str(ds.get("BurnedInAnnotation", "")).strip().upper()
    ultrasound = str(ds.get("Modality", "")).upper() == "US"
    regions = _data_regions(ds)
    if str(ds.get("SOPClassUID", "")) in SECONDARY_CAPTURE_CLASSES and says != "NO":
        raise CannotClean("a secondary capture that does not say it has no burned-in text "
                          "(a screen grab or photograph may show the patient's name)")
    if not ultrasound and says != "YES":
        return Cleaning()
    if regions:
        keep = np.zeros((int(ds.Rows), int(ds.Columns)), dtype=bool)
        for x0, y0, x1, y1 in regions:
            keep[y0:y1 + 1, x0:x1 + 1] = True
        _blank(ds, ~keep)
        ds.BurnedInAnnotation = "NO"
        return Cleaning("pixels outside the ultrasound data regions blanked")
    if says == "YES":
        raise CannotClean("says it has burned-in text and has no ultrasound regions that "
                          "tell where the image data is")
    rows = int(ds.Rows)
    blank = np.zeros((rows, int(ds.Columns)), dtype=bool)
    blank[: max(1, round(rows * BAND_TOP))] = True
    blank[rows - max(1, round(rows * BAND_BOTTOM)):] = True
    _blank(ds, blank)
    return Cleaning(f"top {BAND_TOP:.0%} and bottom {BAND_BOTTOM:.0%} of the rows blanked "
                    "(ultrasound without regions)")


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
