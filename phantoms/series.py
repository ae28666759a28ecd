"""CT phantom series: a stack of axial slices with 3-D lesions and their truth.

The anatomy is one CT phantom scene (``phantoms/images.py``, without its own
lesions) scanned at every slice with fresh acquisition noise; the lesions are
smooth spheres and ellipsoids placed in soft tissue, each slice showing its
cross-section (the soft-edged ellipse of the plane through the slice's centre,
hypo- or hyperdense as the 2-D phantoms' lesions are). Every lesion's truth is
its shape, semi-axes, volume (4/3·π·a·b·c, mm³) and centre in patient
coordinates (mm); every slice keeps the truth of the cross-sections it shows
(``Phantom.lesions``). The slices are written with Image Position and
Orientation (Patient), Pixel Spacing, Slice Thickness, Spacing Between Slices
and one Frame of Reference by ``phantoms/dicom.py``'s CT writer.

    python -m phantoms.series --out /tmp/series --series 4 --slices 40

writes one folder per series and ``truth.json``. Not a patient; test and bench data.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom import uid as uids
from pydicom.dataset import Dataset

from phantoms.dicom import ct_dataset, default_identity, write_dicom
from phantoms.images import (
    CLASSES,
    Phantom,
    _Shape,
    apply_window,
    blur,
    generate,
    smooth_noise,
)

#: the lesions' shapes
SHAPES = ("sphere", "ellipsoid")
#: soft tissue a lesion may lie in (HU of the smoothed scene)
TISSUE_HU = (15.0, 110.0)
#: room kept between lesions, and between a lesion and the stack's ends (mm)
CLEARANCE_MM = 6.0


@dataclass(frozen=True)
class LesionTruth3D:
    """One 3-D lesion: its shape, semi-axes (mm: ``a`` along ``angle`` in the plane, ``b``
    across it, ``c`` along the stack) and centre in patient coordinates (mm)."""

    shape: str
    label: str
    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    angle: float
    contrast_hu: float

    @property
    def volume_mm3(self) -> float:
        """The ellipsoid's volume, 4/3·π·a·b·c."""
        a, b, c = self.semi_axes_mm
        return 4.0 / 3.0 * math.pi * a * b * c

    @property
    def diameter_mm(self) -> float:
        """Its longest diameter."""
        return 2.0 * max(self.semi_axes_mm)

    def radii_at(self, z_mm: float) -> tuple[float, float] | None:
        """The in-plane semi-axes (mm) of its cross-section at ``z_mm``, or None."""
        a, b, c = self.semi_axes_mm
        t = (z_mm - self.centre_mm[2]) / c
        if abs(t) >= 1.0:
            return None
        scale = math.sqrt(1.0 - t * t)
        return a * scale, b * scale

    def to_dict(self) -> dict:
        """JSON-ready truth."""
        return {"shape": self.shape, "class": self.label,
                "centre_mm": [round(v, 2) for v in self.centre_mm],
                "semi_axes_mm": [round(v, 2) for v in self.semi_axes_mm],
                "angle": round(self.angle, 4), "contrast_hu": round(self.contrast_hu, 1),
                "diameter_mm": round(self.diameter_mm, 2),
                "volume_mm3": round(self.volume_mm3, 1)}


@dataclass
class PhantomSeries:
    """A stack of CT slices (``slices[k]`` at ``positions[k]``) and its 3-D lesions."""

    slices: list[Phantom]
    #: Image Position (Patient) of each slice: the first pixel's centre (mm)
    positions: list[tuple[float, float, float]]
    spacing_mm: float
    thickness_mm: float
    lesions: list[LesionTruth3D] = field(default_factory=list)

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """(row, column) mm per pixel."""
        assert self.slices[0].spacing is not None
        return self.slices[0].spacing

    def truth(self) -> dict:
        """JSON-ready truth: the stack's geometry and every lesion's."""
        return {"slices": len(self.slices), "spacing_mm": self.spacing_mm,
                "thickness_mm": self.thickness_mm,
                "pixel_spacing_mm": [round(v, 6) for v in self.pixel_spacing],
                "rows": int(self.slices[0].image.shape[0]),
                "columns": int(self.slices[0].image.shape[1]),
                "lesions": [lesion.to_dict() for lesion in self.lesions]}


def generate_series(rng: np.random.Generator, slices: int = 40, size: int = 256,
                    spacing_mm: float = 2.5, lesions: int = 2,
                    diameters_mm: tuple[float, float] = (10.0, 40.0),
                    thickness_mm: float | None = None,
                    contrast_hu: tuple[float, float] = (18.0, 80.0),
                    hypodense: float = 0.65) -> PhantomSeries:
    """A series of ``slices`` axial slices ``spacing_mm`` apart with up to ``lesions``
    spheres and ellipsoids of longest diameter in ``diameters_mm`` (log-uniform; fewer
    when they do not fit), of a contrast drawn log-uniform in ``contrast_hu``, darker than
    the tissue for a ``hypodense`` share (the defaults: the 2-D phantoms')."""
    scene_seed = int(rng.integers(2**32))
    scene = generate("ct", np.random.default_rng(scene_seed), size, lesion=False)
    pixel_mm = scene.spacing[0] if scene.spacing else 1.0
    h, w = scene.image.shape
    zs = [k * spacing_mm for k in range(slices)]
    truths = _place_lesions(rng, scene, zs, lesions, diameters_mm, (contrast_hu, hypodense))
    corner = (-w * pixel_mm / 2, -h * pixel_mm / 2)  # as ct_dataset places a slice
    images = []
    for k, z in enumerate(zs):
        again = generate("ct", np.random.default_rng(scene_seed), size, lesion=False,
                         rescan=np.random.default_rng([scene_seed, k]))
        images.append(_with_lesions(again, truths, z, corner, rng))
    return PhantomSeries(images, [(corner[0], corner[1], z) for z in zs], spacing_mm,
                         thickness_mm or spacing_mm, truths)


def _place_lesions(rng: np.random.Generator, scene: Phantom, zs: list[float], count: int,
                   diameters_mm: tuple[float, float],
                   contrast: tuple[tuple[float, float], float]) -> list[LesionTruth3D]:
    """Up to ``count`` lesions in soft tissue, clear of each other and of the stack's ends."""
    assert scene.hu is not None and scene.spacing is not None
    pixel_mm = scene.spacing[0]
    smooth = blur(scene.hu.astype(np.float32), 2.0, 2.0)
    tissue = (smooth >= TISSUE_HU[0]) & (smooth <= TISSUE_HU[1]) & _lesion_region(smooth)
    h, w = tissue.shape
    corner = (-w * pixel_mm / 2, -h * pixel_mm / 2)
    placed: list[LesionTruth3D] = []
    for _ in range(count):
        for _try in range(200):
            lesion = _draw_lesion(rng, diameters_mm, zs, corner, pixel_mm, tissue)
            if lesion is not None:
                lesion = replace(lesion, contrast_hu=_contrast(rng, contrast, smooth,
                                                               lesion, corner, pixel_mm))
            if lesion is not None and all(_apart(lesion, other) for other in placed):
                placed.append(lesion)
                break
    return placed


def _lesion_region(hu: np.ndarray) -> np.ndarray:
    """Where the 2-D phantoms put their lesions' centres: the abdomen's inner part (an
    ellipse of 80 % of the body's half-width and 60 % of its half-height, a little above
    its middle), away from the fat margin and the spine."""
    ys, xs = np.nonzero(hu > -500)
    cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
    ax, ay = (xs.max() + 1 - xs.min()) / 2, (ys.max() + 1 - ys.min()) / 2
    yy, xx = np.mgrid[0:hu.shape[0], 0:hu.shape[1]] + 0.5
    return ((xx - cx) / (0.8 * ax)) ** 2 + ((yy - cy + 0.1 * ay) / (0.6 * ay)) ** 2 <= 1


def _draw_lesion(rng: np.random.Generator, diameters_mm: tuple[float, float],
                 zs: list[float], corner: tuple[float, float], pixel_mm: float,
                 tissue: np.ndarray) -> LesionTruth3D | None:
    """One lesion drawn at random (its contrast still 0), or None when its footprint
    leaves soft tissue or the stack."""
    diameter = math.exp(rng.uniform(math.log(diameters_mm[0]), math.log(diameters_mm[1])))
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    drawn = (1.0, 1.0, 1.0) if shape == "sphere" else rng.uniform(0.55, 1.0, 3)
    ratios = [float(r) / float(max(drawn)) for r in drawn]
    a, b, c = (diameter / 2 * r for r in ratios)
    low, high = zs[0] + c + CLEARANCE_MM / 2, zs[-1] - c - CLEARANCE_MM / 2
    if high <= low:
        return None
    ys, xs = np.nonzero(tissue)
    pick = int(rng.integers(len(ys)))
    cx, cy = xs[pick] + 0.5, ys[pick] + 0.5  # pixel edges, as the 2-D phantoms' shapes
    reach = (max(a, b) + CLEARANCE_MM / 2) / pixel_mm
    if not _inside(tissue, cx, cy, reach):
        return None
    centre = (float(corner[0] + (cx - 0.5) * pixel_mm),
              float(corner[1] + (cy - 0.5) * pixel_mm), float(rng.uniform(low, high)))
    return LesionTruth3D(shape, CLASSES[int(rng.integers(len(CLASSES)))], centre, (a, b, c),
                         float(rng.uniform(0, math.pi)), 0.0)


def _contrast(rng: np.random.Generator, drawn: tuple[tuple[float, float], float],
              smooth: np.ndarray, lesion: LesionTruth3D, corner: tuple[float, float],
              pixel_mm: float) -> float:
    """A lesion's contrast (HU), log-uniform in the range; a hypodense one stays denser
    than water (a cyst, which the model is taught to pass over, is 0-12 HU)."""
    (low, high), hypodense = drawn
    contrast = math.exp(rng.uniform(math.log(low), math.log(high)))
    if rng.random() >= hypodense:
        return contrast
    column = int((lesion.centre_mm[0] - corner[0]) / pixel_mm)
    row = int((lesion.centre_mm[1] - corner[1]) / pixel_mm)
    background = float(smooth[row, column])
    return -min(contrast, max(14.0, background - float(rng.uniform(18, 26))))


def _inside(tissue: np.ndarray, cx: float, cy: float, reach: float) -> bool:
    """Whether the disc of ``reach`` pixels around (cx, cy) lies in ``tissue``."""
    h, w = tissue.shape
    y0, y1 = int(cy - reach), math.ceil(cy + reach)
    x0, x1 = int(cx - reach), math.ceil(cx + reach)
    if y0 < 0 or x0 < 0 or y1 > h or x1 > w:
        return False
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= reach**2
    return bool(tissue[y0:y1, x0:x1][disc].all())


def _apart(one: LesionTruth3D, other: LesionTruth3D) -> bool:
    """Whether two lesions keep ``CLEARANCE_MM`` between them in the plane or along z."""
    in_plane = math.dist(one.centre_mm[:2], other.centre_mm[:2])
    along = abs(one.centre_mm[2] - other.centre_mm[2])
    reach = max(one.semi_axes_mm[:2]) + max(other.semi_axes_mm[:2]) + CLEARANCE_MM
    return in_plane > reach or along > one.semi_axes_mm[2] + other.semi_axes_mm[2] + CLEARANCE_MM


def _with_lesions(scan: Phantom, truths: list[LesionTruth3D], z: float,
                  corner: tuple[float, float], rng: np.random.Generator) -> Phantom:
    """The slice ``scan`` at ``z`` with every lesion's cross-section painted in (HU and
    image), its boxes and truths."""
    assert scan.hu is not None and scan.spacing is not None and scan.window is not None
    hu = scan.hu.astype(np.float32)
    h, w = hu.shape
    pixel_mm = scan.spacing[0]
    shown = []
    for lesion in truths:
        radii = lesion.radii_at(z)
        if radii is None or min(radii) / pixel_mm < 0.5:
            continue
        shape = _Shape((lesion.centre_mm[0] - corner[0]) / pixel_mm + 0.5,
                       (lesion.centre_mm[1] - corner[1]) / pixel_mm + 0.5,
                       radii[1] / pixel_mm, aspect=radii[0] / radii[1], angle=lesion.angle,
                       soft=1.0)
        rows, cols, mask = shape.mask(h, w)
        texture = 1 + float(rng.uniform(0.04, 0.1)) * smooth_noise(rng, h, w, max(2.0,
                                                                                shape.r / 4))
        hu[rows, cols] += mask * lesion.contrast_hu * texture[rows, cols]
        truth = shape.truth(h, w, lesion.label, scan.spacing)
        if truth is not None:
            shown.append(truth)
    stored = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return Phantom(apply_window(stored, *scan.window), "ct", bool(shown),
                   [t.box for t in shown], scan.distractors, stored, scan.window,
                   scan.spacing, shown)


# -- DICOM ---------------------------------------------------------------------------------


def series_datasets(series: PhantomSeries,
                    identity: Mapping[str, str] | None = None) -> list[Dataset]:
    """One CT data set per slice: one study, series and frame of reference, each slice
    with its own SOP Instance UID, Image Position (Patient) and Instance Number."""
    shared = default_identity(**dict(identity or {}))
    out = []
    for number, (phantom, position) in enumerate(zip(series.slices, series.positions,
                                                     strict=True), start=1):
        ds = ct_dataset(phantom, {**shared, "SOPInstanceUID": uids.generate_uid()})
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(position[2])
        ds.SliceThickness = _ds(series.thickness_mm)
        ds.SpacingBetweenSlices = _ds(series.spacing_mm)
        out.append(ds)
    return out


def write_series(series: PhantomSeries, folder: str | Path,
                 identity: Mapping[str, str] | None = None,
                 syntax: str = "explicit") -> list[Path]:
    """Write the series' slices as ``slice-NNN.dcm`` in ``folder``; their paths in order."""
    folder = Path(folder)
    return [write_dicom(ds, folder / f"slice-{k:03d}.dcm", syntax)
            for k, ds in enumerate(series_datasets(series, identity))]


def _ds(value: float) -> str:
    """A decimal string (DS) of at most 16 characters."""
    return f"{value:.10g}"[:16]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m phantoms.series``: write phantom CT series and truth.json."""
    parser = argparse.ArgumentParser(
        prog="python -m phantoms.series",
        description="Write CT phantom series with 3-D lesions (not patients) and their truth.")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--series", type=int, default=2, help="number of series")
    parser.add_argument("--slices", type=int, default=40, help="slices per series")
    parser.add_argument("--size", type=int, default=256, help="square slice size in pixels")
    parser.add_argument("--spacing", type=float, default=2.5, help="mm between slices")
    parser.add_argument("--lesions", type=int, default=2, help="lesions per series (at most)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    truth = []
    for index in range(args.series):
        series = generate_series(np.random.default_rng([args.seed, index]), args.slices,
                                 args.size, args.spacing, args.lesions)
        folder = args.out / f"series-{index:03d}"
        ident = {"PatientID": f"PHANTOM-S{index:04d}", "StudyID": f"PS{index:04d}"}
        write_series(series, folder, ident)
        truth.append({"folder": folder.name, **series.truth()})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.series} phantom series to {args.out} (ground truth in truth.json)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
