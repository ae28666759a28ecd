"""A CT or MR series as a volume: one lesion seen on adjacent slices is one 3-D lesion.

A series' slices are ordered by Image Position (Patient) projected on the
normal of their Image Orientation (Patient) (row × column direction), and the
slice spacing is the median step between those projections, not Slice
Thickness. Two lesion records (``inference/lesions.py``, as stored) on slices
at most ``MAX_SLICE_STEP`` apart (a gap of one slice) are the same lesion when
their outlines overlap in the plane: the contour where the model segments,
else the box, in millimetres of the common plane, by at least ``MIN_OVERLAP``
of the smaller one. Each connected group of records is one ``Lesion3D``: its
parts, its largest in-plane long and short axis, its extent along the normal,
its volume (the sum of its areas on each slice times the slice spacing; a
slice it skipped counts the mean of its neighbours) and its area-weighted
centre in patient coordinates (mm).

The volume is read off the masks (``volume_from`` "mask") when every part was
measured on a mask, else off the boxes' inscribed ellipses ("box"), said
plainly. A series that cannot be read as a volume is read per slice, with a
reason code saying why (``PER_SLICE_REASONS``): fewer than two slices,
multi-frame objects, positions or orientation missing, no pixel spacing, an
orientation that is no orientation, orientations or frames of reference that
differ, two slices at one position, a tilted stack (positions drifting in the
plane: gantry tilt) or uneven spacing (missing slices).

Pure functions of the stored records and geometry (numpy; Pillow fills the outlines).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from clinibox_common.i18n import N_

log = logging.getLogger(__name__)

#: how a series is read
READ_AS_VOLUME, READ_PER_SLICE = "volume", "per_slice"

#: why a series is read per slice (codes, rendered per language where shown)
SINGLE_SLICE = "single_slice"
MULTI_FRAME = "multi_frame"
NO_POSITIONS = "no_positions"
NO_PIXEL_SPACING = "no_pixel_spacing"
BAD_ORIENTATION = "bad_orientation"
MIXED_ORIENTATION = "mixed_orientation"
MIXED_FRAME_OF_REFERENCE = "mixed_frame_of_reference"
DUPLICATE_POSITIONS = "duplicate_positions"
TILTED = "tilted"
GAP = "gap"
MIXED_PIXEL_SPACING = "mixed_pixel_spacing"
IMPLAUSIBLE_GEOMETRY = "implausible_geometry"
TOO_MANY_RECORDS = "too_many_records"
NOT_COMPUTED = "not_computed"
PER_SLICE_REASONS = (SINGLE_SLICE, MULTI_FRAME, NO_POSITIONS, NO_PIXEL_SPACING,
                     BAD_ORIENTATION, MIXED_ORIENTATION, MIXED_FRAME_OF_REFERENCE,
                     DUPLICATE_POSITIONS, TILTED, GAP, MIXED_PIXEL_SPACING,
                     IMPLAUSIBLE_GEOMETRY, TOO_MANY_RECORDS, NOT_COMPUTED)
#: why a series is read image by image, in plain English words a nurse reads (the SR's; the
#: viewer shows them in the reader's language through the catalog: no DICOM terms such as
#: "multi-frame object" or "frame of reference"); ``single_slice`` is no series, never said
PER_SLICE_WORDS = {
    MULTI_FRAME: N_("each of its images is itself a clip of several frames"),
    NO_POSITIONS: N_("its images do not record where in the body they were taken"),
    NO_PIXEL_SPACING: N_("its images have no size calibration (mm per pixel)"),
    BAD_ORIENTATION: N_("its images do not record which way they were taken"),
    MIXED_ORIENTATION: N_("its images were taken in different directions"),
    MIXED_FRAME_OF_REFERENCE: N_("its images come from different scans, so their positions "
                                 "cannot be lined up"),
    DUPLICATE_POSITIONS: N_("two of its images lie at the same position"),
    TILTED: N_("its slices were taken at a slant (the scanner was tilted)"),
    GAP: N_("slices are missing or unevenly spaced"),
    MIXED_PIXEL_SPACING: N_("its images have different size calibrations"),
    IMPLAUSIBLE_GEOMETRY: N_("its images' positions or sizes do not fit a human body"),
    TOO_MANY_RECORDS: N_("it has too many marked areas for the box to join them into 3-D "
                         "lesions"),
    NOT_COMPUTED: N_("its volume could not be computed"),
}
#: geometry a body can have (mm): positions within a metre of the origin and a cell or a
#: slice step of a micrometre to a metre; anything else (1e26, NaN) is read per slice
MAX_POSITION_MM, SPACING_RANGE_MM = 1e5, (1e-3, 1e3)
#: a series with more lesion records than this is read per slice (bounds a page's work)
MAX_RECORDS = 2000
#: cells across the largest outline on the common grid, at most (bounds a raster's size)
MAX_CELLS_ACROSS = 256

#: records on slices at most this many apart may join (2: a gap of one slice)
MAX_SLICE_STEP = 2
#: records join when their outlines overlap by this share of the smaller one
MIN_OVERLAP = 0.3
#: direction cosines: unit length, orthogonality and sameness across slices
ORIENTATION_TOLERANCE = 1e-3
#: positions closer than this along the normal are one position (mm)
POSITION_TOLERANCE_MM = 0.05
#: in-plane drift of the positions per mm along the normal above which a stack is tilted
#: (about 1°)
TILT_TOLERANCE = 0.02
#: a step between slices this share off the median step is a gap (missing slices)
SPACING_TOLERANCE = 0.1


@dataclass(frozen=True)
class SeriesSlice:
    """One instance of a series: its geometry and its lesion records (dicts as stored)."""

    instance_id: int
    #: Image Position (Patient): the centre of the first pixel, mm
    position: tuple[float, float, float] | None
    #: Image Orientation (Patient): row direction then column direction cosines
    orientation: tuple[float, float, float, float, float, float] | None
    #: (row, column) mm per pixel (Pixel Spacing: the patient plane)
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None = None
    frame_of_reference_uid: str = ""
    frames: int = 1
    lesions: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_geometry(cls, instance_id: int, geometry: Mapping[str, Any] | None,
                      lesions: Iterable[Mapping[str, Any]] = ()) -> SeriesSlice:
        """A slice from a stored geometry (``DecodedImage.geometry()``; None or malformed
        values: absent)."""
        geometry = geometry or {}
        frames = geometry.get("frames")
        return cls(
            instance_id=instance_id,
            position=_numbers(geometry.get("image_position"), 3),
            orientation=_numbers(geometry.get("image_orientation"), 6),
            pixel_spacing=_positive(_numbers(geometry.get("pixel_spacing"), 2)),
            slice_thickness=_number(geometry.get("slice_thickness")),
            frame_of_reference_uid=str(geometry.get("frame_of_reference_uid") or ""),
            frames=frames if isinstance(frames, int) and frames > 0 else 1,
            lesions=tuple(lesions),
        )


@dataclass(frozen=True)
class LesionPart:
    """One lesion record a 3-D lesion is made of."""

    instance_id: int
    #: the record's index in its instance's lesions (the number drawn on it, less one)
    lesion_index: int
    #: the slice's place in the series ordered along the normal (0 first)
    slice_index: int
    #: the slice's position along the normal, mm
    z_mm: float
    area_mm2: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {"instance_id": self.instance_id, "lesion_index": self.lesion_index,
                "slice_index": self.slice_index, "z_mm": round(self.z_mm, 2),
                "area_mm2": round(self.area_mm2, 1)}


@dataclass(frozen=True)
class Lesion3D:
    """One lesion of a volume, made of the records of the slices it was seen on."""

    label: str
    probability: float
    class_probabilities: dict[str, float]
    parts: tuple[LesionPart, ...]
    #: the largest in-plane long and short axis of its parts (None: none calibrated)
    long_axis_mm: float | None
    short_axis_mm: float | None
    #: from its first slice to its last, one slice spacing included
    z_extent_mm: float
    volume_mm3: float
    #: "mask" when every part was measured on a mask, else "box" (inscribed ellipses)
    volume_from: str
    #: area-weighted centre in patient coordinates (mm)
    centre_mm: tuple[float, float, float]
    #: the instance of its largest long axis (its key slice)
    key_instance_id: int

    @property
    def instance_ids(self) -> tuple[int, ...]:
        """The instances it was seen on, in slice order."""
        return tuple(dict.fromkeys(p.instance_id for p in self.parts))

    @property
    def slices(self) -> int:
        """How many slices it was seen on."""
        return len({p.slice_index for p in self.parts})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "label": self.label, "probability": round(self.probability, 4),
            "class_probabilities": {k: round(v, 4) for k, v in self.class_probabilities.items()},
            "instance_ids": list(self.instance_ids), "slices": self.slices,
            "parts": [p.to_dict() for p in self.parts],
            "long_axis_mm": _rounded(self.long_axis_mm, 1),
            "short_axis_mm": _rounded(self.short_axis_mm, 1),
            "z_extent_mm": round(self.z_extent_mm, 1),
            "volume_mm3": round(self.volume_mm3, 1), "volume_from": self.volume_from,
            "centre_mm": [round(v, 1) for v in self.centre_mm],
            "key_instance_id": self.key_instance_id,
        }


@dataclass(frozen=True)
class SeriesVolume:
    """A series read as a volume (its 3-D lesions) or per slice (with the reason code)."""

    read_as: str  # READ_AS_VOLUME or READ_PER_SLICE
    #: "" when read as a volume, else one of ``PER_SLICE_REASONS``
    reason: str
    #: as a volume: ordered along the normal; per slice: as given
    instance_ids: tuple[int, ...]
    lesions: tuple[Lesion3D, ...] = ()
    slice_spacing_mm: float | None = None
    normal: tuple[float, float, float] | None = None
    #: lesion records on the slices (what a per-slice reading counts)
    per_slice_lesions: int = 0
    series_instance_uid: str = ""
    modality: str = ""

    @property
    def lesion_count(self) -> int:
        """3-D lesions as a volume, lesion records per slice otherwise."""
        return len(self.lesions) if self.read_as == READ_AS_VOLUME else self.per_slice_lesions

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "series_instance_uid": self.series_instance_uid, "modality": self.modality,
            "read_as": self.read_as, "reason": self.reason,
            "instance_ids": list(self.instance_ids), "slices": len(self.instance_ids),
            "slice_spacing_mm": _rounded(self.slice_spacing_mm, 3),
            "normal": None if self.normal is None else [round(v, 6) for v in self.normal],
            "lesion_count": self.lesion_count, "per_slice_lesions": self.per_slice_lesions,
            "lesions": [lesion.to_dict() for lesion in self.lesions],
        }


def series_volume(slices: Sequence[SeriesSlice], series_instance_uid: str = "",
                  modality: str = "") -> SeriesVolume:
    """The series' 3-D lesions, or its per-slice reading with the reason it is one."""
    records = sum(len(s.lesions) for s in slices)
    layout = stack_layout(slices)
    lesions: tuple[Lesion3D, ...] = ()
    if not isinstance(layout, str):
        try:
            lesions = tuple(sorted((_lesion_3d(group, layout) for group in _groups(layout)),
                                   key=lambda lesion: (-lesion.probability,
                                                       -lesion.volume_mm3)))
        except (ArithmeticError, ValueError, TypeError, MemoryError) as exc:
            # what no check foresaw: this series is read per slice, the others go on
            log.warning("series %s read per slice: its volume could not be computed (%s)",
                        series_instance_uid, exc)
            layout = NOT_COMPUTED
        if not all(math.isfinite(v) for lesion in lesions
                   for v in (lesion.volume_mm3, lesion.z_extent_mm, *lesion.centre_mm)):
            layout = IMPLAUSIBLE_GEOMETRY
    if isinstance(layout, str):
        return SeriesVolume(READ_PER_SLICE, layout, tuple(s.instance_id for s in slices),
                            per_slice_lesions=records, series_instance_uid=series_instance_uid,
                            modality=modality)
    return SeriesVolume(READ_AS_VOLUME, "", tuple(s.instance_id for s in layout.slices),
                        lesions, layout.spacing, tuple(float(v) for v in layout.normal),
                        records, series_instance_uid, modality)


# -- the stack --------------------------------------------------------------------------


@dataclass(frozen=True)
class StackLayout:
    """A series' slices ordered along the normal, with the plane's axes and the spacing."""

    slices: tuple[SeriesSlice, ...]
    #: each slice's position along the normal, ascending (mm)
    z: np.ndarray
    spacing: float
    row: np.ndarray  # direction of increasing column index
    column: np.ndarray  # direction of increasing row index
    normal: np.ndarray


def stack_layout(slices: Sequence[SeriesSlice]) -> StackLayout | str:
    """The slices as a regular stack, or the reason code they are not one."""
    reason = _slice_reason(slices)
    if reason:
        return reason
    orientations = np.array([s.orientation for s in slices], dtype=np.float64)
    reason = _orientation_reason(orientations)
    if reason:
        return reason
    row, column = orientations[0, :3], orientations[0, 3:]
    normal = np.cross(row, column)
    normal /= np.linalg.norm(normal)
    positions = np.array([s.position for s in slices], dtype=np.float64)
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    z = positions @ normal
    reason = _spacing_reason(positions, z, normal)
    if reason:
        return reason
    return StackLayout(tuple(slices[i] for i in order), z, float(np.median(np.diff(z))),
                       row, column, normal)


def _slice_reason(slices: Sequence[SeriesSlice]) -> str:
    """What the slices lack to be a stack, before their geometry is compared."""
    if len(slices) < 2:
        return SINGLE_SLICE
    if any(s.frames > 1 for s in slices):
        return MULTI_FRAME
    if any(_numbers(s.position, 3) is None or _numbers(s.orientation, 6) is None
           for s in slices):
        return NO_POSITIONS
    if any(_positive(_numbers(s.pixel_spacing, 2)) is None for s in slices):
        return NO_PIXEL_SPACING
    if len({s.frame_of_reference_uid for s in slices if s.frame_of_reference_uid}) > 1:
        return MIXED_FRAME_OF_REFERENCE
    spacings = np.array([s.pixel_spacing for s in slices], dtype=np.float64)
    positions = np.array([s.position for s in slices], dtype=np.float64)
    low, high = SPACING_RANGE_MM
    if (not np.isfinite(positions).all() or np.abs(positions).max() > MAX_POSITION_MM
            or spacings.min() < low or spacings.max() > high):
        return IMPLAUSIBLE_GEOMETRY
    if np.abs(spacings - spacings[0]).max() > 0.01 * spacings[0].min():
        return MIXED_PIXEL_SPACING
    if sum(len(s.lesions) for s in slices) > MAX_RECORDS:
        return TOO_MANY_RECORDS
    return ""


def _orientation_reason(orientations: np.ndarray) -> str:
    """BAD_ORIENTATION (not two orthogonal unit vectors) or MIXED_ORIENTATION, or ""."""
    rows, columns = orientations[:, :3], orientations[:, 3:]
    off_unit = np.abs(np.linalg.norm(np.concatenate([rows, columns]), axis=1) - 1).max()
    off_orthogonal = np.abs((rows * columns).sum(axis=1)).max()
    if max(off_unit, off_orthogonal) > 10 * ORIENTATION_TOLERANCE:
        return BAD_ORIENTATION
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        return MIXED_ORIENTATION
    return ""


def _spacing_reason(positions: np.ndarray, z: np.ndarray, normal: np.ndarray) -> str:
    """DUPLICATE_POSITIONS, TILTED or GAP for positions ordered along ``normal``, or ""."""
    steps = np.diff(z)
    if steps.min() < POSITION_TOLERANCE_MM:
        return DUPLICATE_POSITIONS
    moves = np.diff(positions, axis=0)
    drift = np.linalg.norm(moves - np.outer(steps, normal), axis=1)
    if (drift > TILT_TOLERANCE * steps + POSITION_TOLERANCE_MM).any():
        return TILTED
    spacing = float(np.median(steps))
    if not SPACING_RANGE_MM[0] <= spacing <= SPACING_RANGE_MM[1]:
        return IMPLAUSIBLE_GEOMETRY
    if (np.abs(steps - spacing) > max(SPACING_TOLERANCE * spacing,
                                      POSITION_TOLERANCE_MM)).any():
        return GAP
    return ""


# -- footprints and their groups --------------------------------------------------------


@dataclass(frozen=True)
class _Raster:
    """An outline's cells on the stack's common grid (squares of the finest pixel spacing
    in mm of the plane): the first cell's column and row, and which cells it covers."""

    column: int
    row: int
    cells: np.ndarray  # bool [rows, columns]
    count: int


@dataclass(frozen=True)
class _Footprint:
    """One lesion record placed in the stack."""

    slice_index: int
    lesion_index: int
    record: Mapping[str, Any]
    #: its outline (contour, else box) on the common grid
    raster: _Raster
    area_mm2: float
    centre_mm: np.ndarray  # patient coordinates


def _footprints(layout: StackLayout) -> list[_Footprint]:
    """Every lesion record of the stack with a box, placed in the common plane: on a grid of
    the finest pixel spacing, coarser where the largest outline would span more than
    ``MAX_CELLS_ACROSS`` cells (a huge box must not cost a huge raster)."""
    cell = min(min(s.pixel_spacing) for s in layout.slices)  # type: ignore[type-var]
    widest = max((_extent_mm(item, record) for item in layout.slices
                  for record in item.lesions), default=0.0)
    cell = max(cell, widest / MAX_CELLS_ACROSS)
    out = []
    for index, item in enumerate(layout.slices):
        for number, record in enumerate(item.lesions):
            footprint = _footprint(layout, index, number, record, cell)
            if footprint is not None:
                out.append(footprint)
    return out


def _extent_mm(item: SeriesSlice, record: Mapping[str, Any]) -> float:
    """The larger side of a record's box in mm (0 without a box)."""
    box = _numbers(record.get("box"), 4)
    if box is None or item.pixel_spacing is None:
        return 0.0
    row_mm, column_mm = item.pixel_spacing
    return max(abs(box[2] - box[0]) * column_mm, abs(box[3] - box[1]) * row_mm)


def _footprint(layout: StackLayout, index: int, number: int, record: Mapping[str, Any],
               cell: float) -> _Footprint | None:
    """One record in the plane: its outline's cells, area and centre; None without a box."""
    item = layout.slices[index]
    box = _numbers(record.get("box"), 4)
    if box is None:
        return None
    row_mm, column_mm = item.pixel_spacing  # type: ignore[misc]
    contour = _contour(record.get("contour"))
    if (contour is not None and (contour.min(axis=0) < [box[0] - 1, box[1] - 1]).any()) \
            or (contour is not None and (contour.max(axis=0) > [box[2] + 1, box[3] + 1]).any()):
        contour = None  # an outline beyond its own box is not the lesion's: the box then
    # box edges → pixel-centre indices (DICOM positions are the first pixel's centre)
    x0, y0, x1, y1 = (v - 0.5 for v in box)
    pixels = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) if contour is None else contour
    centre_px = (np.array([(x0 + x1) / 2, (y0 + y1) / 2]) if contour is None
                 else _polygon_centroid(contour))
    origin = np.asarray(item.position, dtype=np.float64)
    plane = pixels * np.array([column_mm, row_mm]) + [origin @ layout.row,
                                                      origin @ layout.column]
    centre = origin + layout.row * column_mm * centre_px[0] + layout.column * row_mm * centre_px[1]
    return _Footprint(index, number, record, _raster(plane, cell),
                      _area_mm2(record, (row_mm, column_mm), box), centre)


def _groups(layout: StackLayout) -> list[list[_Footprint]]:
    """The footprints joined into lesions: overlapping on slices at most
    ``MAX_SLICE_STEP`` apart (union-find), each group in slice order."""
    footprints = _footprints(layout)
    parent = list(range(len(footprints)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    on_slice: dict[int, list[int]] = {}
    for i, footprint in enumerate(footprints):
        on_slice.setdefault(footprint.slice_index, []).append(i)
    for i, a in enumerate(footprints):
        for step in range(1, MAX_SLICE_STEP + 1):
            for j in on_slice.get(a.slice_index + step, []):
                if overlap(a.raster, footprints[j].raster) >= MIN_OVERLAP:
                    parent[root(j)] = root(i)
    groups: dict[int, list[_Footprint]] = {}
    for i, footprint in enumerate(footprints):
        groups.setdefault(root(i), []).append(footprint)
    return [sorted(g, key=lambda f: (f.slice_index, f.lesion_index)) for g in groups.values()]


def _raster(outline: np.ndarray, cell: float) -> _Raster:
    """The cells of the grid of ``cell`` mm whose centres lie inside ``outline`` (mm of the
    plane); an outline smaller than a cell covers the cell of its middle."""
    low = np.floor(outline.min(axis=0) / cell).astype(int)
    high = np.maximum(np.ceil(outline.max(axis=0) / cell).astype(int), low + 1)
    width, height = (int(v) for v in high - low)
    # filled by Pillow's scanline fill in C, on the cells' own grid (cell k's centre at
    # k + 0.5): the even-odd test of every cell against every edge cost seconds a series
    picture = Image.new("1", (width, height), 0)
    corners = outline / cell - low
    ImageDraw.Draw(picture).polygon([(float(x) - 0.5, float(y) - 0.5) for x, y in corners],
                                    fill=1, outline=None)
    cells = np.asarray(picture, dtype=bool)
    if not cells.any():
        cells[cells.shape[0] // 2, cells.shape[1] // 2] = True
    return _Raster(int(low[0]), int(low[1]), cells, int(cells.sum()))


def overlap(a: _Raster, b: _Raster) -> float:
    """The cells two outlines share over the smaller one's cells, 0..1."""
    x0, y0 = max(a.column, b.column), max(a.row, b.row)
    x1 = min(a.column + a.cells.shape[1], b.column + b.cells.shape[1])
    y1 = min(a.row + a.cells.shape[0], b.row + b.cells.shape[0])
    if x1 <= x0 or y1 <= y0:
        return 0.0
    shared = (a.cells[y0 - a.row:y1 - a.row, x0 - a.column:x1 - a.column]
              & b.cells[y0 - b.row:y1 - b.row, x0 - b.column:x1 - b.column]).sum()
    return float(shared) / min(a.count, b.count)


def _polygon_area(points: np.ndarray) -> float:
    """The shoelace area of a closed polygon."""
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _polygon_centroid(points: np.ndarray) -> np.ndarray:
    """The centroid of a closed polygon (its points' mean when it has no area)."""
    x, y = points[:, 0], points[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = cross.sum() / 2
    if abs(area) < 1e-9:
        return points.mean(axis=0)
    return np.array([((x + np.roll(x, -1)) * cross).sum(),
                     ((y + np.roll(y, -1)) * cross).sum()]) / (6 * area)


# -- one 3-D lesion -------------------------------------------------------------------


def _lesion_3d(group: list[_Footprint], layout: StackLayout) -> Lesion3D:
    """The 3-D lesion of one group of footprints."""
    parts = tuple(LesionPart(layout.slices[f.slice_index].instance_id, f.lesion_index,
                             f.slice_index, float(layout.z[f.slice_index]), f.area_mm2)
                  for f in group)
    records = [f.record for f in group]
    best = max(records, key=lambda r: _number(r.get("probability")) or 0.0)
    longs = [_number(r.get("long_axis_mm")) for r in records]
    shorts = [v for v in (_number(r.get("short_axis_mm")) for r in records) if v is not None]
    key = max(range(len(group)), key=lambda i: (longs[i] or 0.0,
                                                _number(records[i].get("probability")) or 0.0))
    first, last = parts[0].slice_index, parts[-1].slice_index
    return Lesion3D(
        label=str(best.get("label") or ""),
        probability=_number(best.get("probability")) or 0.0,
        class_probabilities=_highest_classes(records),
        parts=parts,
        long_axis_mm=max((v for v in longs if v is not None), default=None),
        short_axis_mm=max(shorts, default=None),
        z_extent_mm=float(layout.z[last] - layout.z[first]) + layout.spacing,
        volume_mm3=_volume(parts, layout.spacing),
        volume_from="mask" if all(r.get("size_from") == "mask" for r in records) else "box",
        centre_mm=_centre(group),
        key_instance_id=parts[key].instance_id,
    )


def _volume(parts: tuple[LesionPart, ...], spacing: float) -> float:
    """Σ area per slice × spacing; a skipped slice counts its neighbours' mean area."""
    areas: dict[int, float] = {}
    for part in parts:
        areas[part.slice_index] = areas.get(part.slice_index, 0.0) + part.area_mm2
    indices = sorted(areas)
    total = sum(areas.values())
    for below, above in pairwise(indices):
        if above - below == 2:
            total += (areas[below] + areas[above]) / 2
    return total * spacing


def _centre(group: list[_Footprint]) -> tuple[float, float, float]:
    """The footprints' centres weighted by their areas (equally when none has one)."""
    centres = np.array([f.centre_mm for f in group])
    weights = np.array([f.area_mm2 for f in group])
    if weights.sum() <= 0:
        weights = np.ones(len(group))
    x, y, z = (centres * weights[:, None]).sum(axis=0) / weights.sum()
    return float(x), float(y), float(z)


def _highest_classes(records: list[Mapping[str, Any]]) -> dict[str, float]:
    """Each class' highest probability over the records."""
    highest: dict[str, float] = {}
    for record in records:
        classes = record.get("class_probabilities")
        for label, p in (classes.items() if isinstance(classes, Mapping) else ()):
            value = _number(p)
            if value is not None:
                highest[str(label)] = max(highest.get(str(label), 0.0), value)
    return highest


def _area_mm2(record: Mapping[str, Any], spacing: tuple[float, float],
              box: tuple[float, ...]) -> float:
    """The record's area in mm²: as stored, else its pixels' area, else the box's
    inscribed ellipse; a stored area the box cannot hold (negative, or beyond the box) is
    not believed: the ellipse then."""
    width, height = max(0.0, box[2] - box[0]), max(0.0, box[3] - box[1])
    in_box = width * spacing[1] * height * spacing[0]
    stored = _number(record.get("area_mm2"))
    pixels = _number(record.get("area_px2"))
    for area in (stored, None if pixels is None else pixels * spacing[0] * spacing[1]):
        if area is not None and 0.0 <= area <= in_box * 1.01:
            return area
    return math.pi / 4 * in_box


# -- small helpers ---------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A finite float, or None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _numbers(value: Any, length: int) -> tuple[float, ...] | None:
    """Exactly ``length`` finite floats, or None."""
    if value is None or isinstance(value, str | bytes | Mapping):
        return None
    try:
        items = list(value)
    except TypeError:
        return None
    numbers = [_number(v) for v in items]
    if len(numbers) != length or any(n is None for n in numbers):
        return None
    return tuple(numbers)  # type: ignore[arg-type]


def _positive(values: tuple[float, ...] | None) -> tuple[float, ...] | None:
    """``values`` when every one is above zero, else None."""
    return values if values is not None and all(v > 0 for v in values) else None


def _contour(value: Any) -> np.ndarray | None:
    """A stored contour as an (N, 2) array of pixel indices (None: fewer than 3 points)."""
    if not isinstance(value, list | tuple) or len(value) < 3:
        return None
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if array.ndim != 2 or array.shape[1] != 2 or not np.isfinite(array).all():
        return None
    return array if _polygon_area(array) > 0 else None


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)

