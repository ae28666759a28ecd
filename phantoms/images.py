"""Procedurally generated CT-like and ultrasound-like phantoms with known lesions.

numpy only, so the box can make them for demos, tests and benches. Every
image is float32 grey in [0, 1], i.e. what the box's decoder hands on after
windowing. A CT phantom also keeps the integer Hounsfield units and the
window it was displayed with, so the DICOM writers can store real CT values.

    rng = np.random.default_rng(7)
    p = generate("ct", rng, size=512, lesion=True)
    p.image, p.boxes            # (512, 512) float32, [(x0, y0, x1, y1)] in pixels
    p.spacing                   # (row, column) mm per pixel
    p.lesions[0].label          # "benign" or "malignant", with its truth mask and sizes

Every lesion carries its truth: a class drawn first, then a look to match
(benign: smooth, round to oval, sharp margin, homogeneous; malignant:
lobulated and often spiculated, ill-defined margin, heterogeneous, and in
ultrasound more often taller than wide and shadowing), the painted shape's
mask (soft mask >= 0.5, source pixels), and its long axis (maximum Feret
diameter), short axis (largest extent perpendicular to it) and area, in mm
from the phantom's pixel spacing (CT: a 300-420 mm field of view across the
width; US: 40-70 mm of depth down the height). Lesions vary in size (radius
2-15 % of the image width) and contrast (subtle to obvious, hypo and hyper).
Lesion-like distractors are drawn on purpose: bright vessel cross-sections,
very dark sharp round cysts (CT); anechoic cysts with posterior enhancement
and vessels (US). ``python -m phantoms --help`` writes files for
the box.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

KINDS = ("ct", "us")
#: lesion classes, in the order of the demo model's class output
CLASSES = ("benign", "malignant")
#: CT field of view across the width, US depth down the height (mm)
CT_FOV_MM, US_DEPTH_MM = (300.0, 420.0), (40.0, 70.0)
CT_SIZES: tuple[tuple[int, int], ...] = ((256, 256), (384, 384), (512, 512))
US_SIZES: tuple[tuple[int, int], ...] = ((240, 320), (300, 400), (480, 640), (256, 256))
Box = tuple[float, float, float, float]


def feret(mask: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> tuple[float, float]:
    """(long, short) axis of a bool mask: its maximum Feret diameter and the largest
    extent perpendicular to that diameter, in the units of ``spacing`` (row, column).

    Measured on the pixels' corners (pixel edges, like the boxes), so one pixel is
    ``sqrt(2)`` across its diagonal; (0, 0) for an empty mask.
    """
    rows = np.nonzero(mask.any(axis=1))[0]
    if rows.size == 0:
        return 0.0, 0.0
    cols = np.asarray(mask[rows], bool)
    first = cols.argmax(axis=1)
    last = cols.shape[1] - 1 - cols[:, ::-1].argmax(axis=1)
    # the extreme pixels of every row hold the mask's convex hull: their four corners
    xs = np.concatenate([first, first, last + 1, last + 1]).astype(np.float64)
    ys = np.concatenate([rows, rows + 1, rows, rows + 1]).astype(np.float64)
    pts = np.stack([xs * spacing[1], ys * spacing[0]], axis=1)
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(axis=2)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    long = math.sqrt(float(d2[i, j]))
    axis = (pts[j] - pts[i]) / max(long, 1e-12)
    across = pts @ np.array([-axis[1], axis[0]])
    return long, float(across.max() - across.min())


@dataclass
class LesionTruth:
    """One lesion's ground truth: class, box, mask and sizes.

    ``mask`` is the painted shape's soft mask >= 0.5 on a window of the image
    whose top-left pixel is ``origin`` (row, column); ``box`` is its bounding
    box in pixel edges. Sizes are in pixels and, with the phantom's spacing, mm.
    """

    label: str
    box: Box
    mask: np.ndarray
    origin: tuple[int, int]
    long_axis_px: float
    short_axis_px: float
    area_px: float
    long_axis_mm: float
    short_axis_mm: float
    area_mm2: float

    def full_mask(self, height: int, width: int) -> np.ndarray:
        """The mask as a bool image of ``height`` x ``width``."""
        out = np.zeros((height, width), bool)
        r, c = self.origin
        out[r : r + self.mask.shape[0], c : c + self.mask.shape[1]] = self.mask
        return out

    def to_dict(self) -> dict:
        """JSON-ready truth: class, box (pixel edges), long/short axis in mm, area in mm²."""
        return {"class": self.label, "box": [round(v, 2) for v in self.box],
                "long_axis_mm": round(self.long_axis_mm, 2),
                "short_axis_mm": round(self.short_axis_mm, 2),
                "area_mm2": round(self.area_mm2, 2),
                "long_axis_px": round(self.long_axis_px, 2),
                "short_axis_px": round(self.short_axis_px, 2)}


@dataclass
class Phantom:
    """One generated image with its ground truth.

    ``boxes`` are lesion bounding boxes ``(x0, y0, x1, y1)`` in source pixels
    (pixel edges, so a box never leaves ``[0, width] x [0, height]``);
    ``lesions`` holds each lesion's truth (class, mask, sizes) in the same
    order; ``distractors`` are ``(what, box)`` pairs for the lesion-like normal
    structures. ``spacing`` is (row, column) mm per pixel. ``hu``/``window``
    are set for CT only.
    """

    image: np.ndarray
    kind: str
    lesion: bool
    boxes: list[Box] = field(default_factory=list)
    distractors: list[tuple[str, Box]] = field(default_factory=list)
    hu: np.ndarray | None = None
    window: tuple[float, float] | None = None
    spacing: tuple[float, float] | None = None
    lesions: list[LesionTruth] = field(default_factory=list)

    def truth_mask(self) -> np.ndarray:
        """Every lesion's mask in one bool image of the phantom's size."""
        out = np.zeros(self.image.shape, bool)
        for lesion in self.lesions:
            out |= lesion.full_mask(*self.image.shape)
        return out


@dataclass
class _Shape:
    """An irregular soft-edged blob; ``r`` in pixels, ``aspect`` = long/short axis."""

    cx: float
    cy: float
    r: float
    aspect: float = 1.0
    angle: float = 0.0
    harmonics: tuple[tuple[int, float, float], ...] = ()
    soft: float = 1.0

    def mask(self, h: int, w: int, scale: float = 1.0) -> tuple[slice, slice, np.ndarray]:
        """Soft mask (0..1) on the bounding window; returns (rows, cols, mask)."""
        r = max(self.r * scale, 0.5)
        wobble = 1.0 + sum(abs(a) for _, a, _ in self.harmonics)
        ext = r * self.aspect * wobble + 2 * self.soft + 2
        y0, y1 = max(0, int(self.cy - ext)), min(h, int(self.cy + ext) + 1)
        x0, x1 = max(0, int(self.cx - ext)), min(w, int(self.cx + ext) + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
        dx, dy = xx - self.cx, yy - self.cy
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        u = (dx * ca + dy * sa) / self.aspect
        v = -dx * sa + dy * ca
        rho = np.hypot(u, v)
        bound = np.full_like(rho, r)
        if self.harmonics:
            theta = np.arctan2(v, u)
            for k, amp, phase in self.harmonics:
                bound += r * amp * np.cos(k * theta + phase)
        m = np.clip((bound - rho) / self.soft + 0.5, 0.0, 1.0)
        return slice(y0, y1), slice(x0, x1), m

    def box(self, h: int, w: int, scale: float = 1.0) -> Box | None:
        """Bounding box of the mask's > 0.5 part in pixel edges, or None if empty."""
        rows, cols, m = self.mask(h, w, scale)
        ys, xs = np.nonzero(m > 0.5)
        if ys.size == 0:
            return None
        return (
            float(cols.start + xs.min()),
            float(rows.start + ys.min()),
            float(cols.start + xs.max() + 1),
            float(rows.start + ys.max() + 1),
        )

    def truth(self, h: int, w: int, label: str, spacing: tuple[float, float],
              scale: float = 1.0) -> LesionTruth | None:
        """The lesion's truth (mask >= 0.5, box, sizes) on an h x w image, or None if empty."""
        rows, cols, m = self.mask(h, w, scale)
        inside = m >= 0.5
        ys, xs = np.nonzero(inside)
        if ys.size == 0:
            return None
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        crop = inside[y0:y1, x0:x1]
        long_px, short_px = feret(crop)
        long_mm, short_mm = feret(crop, spacing)
        area = float(crop.sum())
        r0, c0 = rows.start + y0, cols.start + x0
        return LesionTruth(label, (float(c0), float(r0), float(c0 + x1 - x0),
                                   float(r0 + y1 - y0)), crop, (r0, c0), long_px, short_px,
                           area, long_mm, short_mm, area * spacing[0] * spacing[1])


# -- small numpy image tools ---------------------------------------------------------------


def _upsample(small: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a small grid to (h, w), pixel centres aligned."""
    sh, sw = small.shape
    ys = np.clip((np.arange(h) + 0.5) * sh / h - 0.5, 0, sh - 1)
    xs = np.clip((np.arange(w) + 0.5) * sw / w - 0.5, 0, sw - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, sh - 1), np.minimum(x0 + 1, sw - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    rows = small[y0] * (1 - fy) + small[y1] * fy
    return (rows[:, x0] * (1 - fx) + rows[:, x1] * fx).astype(np.float32)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Zero-mean, roughly unit-std noise smooth over ``cell`` pixels."""
    gh, gw = max(2, round(h / cell) + 1), max(2, round(w / cell) + 1)
    small = rng.standard_normal((gh, gw)).astype(np.float32)
    out = _upsample(small, h, w)
    return out / max(float(out.std()), 1e-6)


def blur(image: np.ndarray, sigma_y: float, sigma_x: float) -> np.ndarray:
    """Separable Gaussian blur with edge padding (small sigmas only)."""
    out = image.astype(np.float32)
    for axis, sigma in ((0, sigma_y), (1, sigma_x)):
        if sigma <= 0:
            continue
        radius = max(1, math.ceil(2.5 * sigma))
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        taps = (taps / taps.sum()).astype(np.float32)
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, t in enumerate(taps):
            acc += t * (padded[i : i + n] if axis == 0 else padded[:, i : i + n])
        out = acc
    return out


def _harmonics(rng: np.random.Generator, irregular: float, spiculated: bool) -> tuple:
    """Random boundary harmonics: lobulation (k=2..6) plus optional spicules."""
    terms = [(k, float(rng.normal(0, irregular / k**0.5)), float(rng.uniform(0, 2 * np.pi)))
             for k in range(2, 7)]
    if spiculated:
        k = int(rng.integers(8, 15))
        terms.append((k, float(rng.uniform(0.05, 0.11)), float(rng.uniform(0, 2 * np.pi))))
    return tuple(terms)


def _paint(target: np.ndarray, shape: _Shape, value: float | np.ndarray, scale: float = 1.0,
           mode: str = "set") -> None:
    """Paint ``value`` through the shape's soft mask: replace, add or multiply."""
    rows, cols, m = shape.mask(*target.shape, scale)
    v = value[rows, cols] if isinstance(value, np.ndarray) else value
    region = target[rows, cols]
    if mode == "set":
        target[rows, cols] = region * (1 - m) + m * v
    elif mode == "add":
        target[rows, cols] = region + m * v
    else:
        target[rows, cols] = region * (1 - m + m * v)


def lesion_echo(rng: np.random.Generator, label: str, h: int, w: int, r: float
                ) -> tuple[np.ndarray, bool]:
    """An ultrasound lesion's echo factor over an ``h`` x ``w`` image (mottled, mostly darker
    than the tissue: malignant more often and more so) and whether it is hypoechoic."""
    malignant = label == "malignant"
    hypo = rng.random() < (0.9 if malignant else 0.75)
    if hypo:
        factor = rng.uniform(0.12, 0.45) if malignant else rng.uniform(0.25, 0.55)
    else:
        factor = rng.uniform(1.8, 3.0)
    mottle = rng.uniform(0.3, 0.45) if malignant else rng.uniform(0.05, 0.1)
    noise = smooth_noise(rng, h, w, max(2.0, r / 4))
    return factor * np.clip(1 + mottle * noise, 0.3, 2), bool(hypo)


def _lesion_class(rng: np.random.Generator) -> str:
    """A lesion's class, drawn before its look: benign or malignant, even odds."""
    return CLASSES[int(rng.random() < 0.5)]


def _lesion_shape(rng: np.random.Generator, cx: float, cy: float, r: float, label: str,
                  kind: str) -> _Shape:
    """A lesion whose outline says its class.

    Benign: round to oval, barely lobulated, sharp margin, no spicules (in US
    wider than tall). Malignant: lobulated, often spiculated, ill-defined
    margin (in US often taller than wide).
    """
    if label == "benign":
        aspect = float(rng.uniform(1.0, 1.6))
        angle = float(rng.uniform(-0.35, 0.35) if kind == "us" else rng.uniform(0, np.pi))
        return _Shape(cx, cy, r, aspect=aspect, angle=angle,
                      harmonics=_harmonics(rng, float(rng.uniform(0.0, 0.025)), False),
                      soft=float(rng.uniform(0.7, 1.2)))
    taller = kind == "us" and rng.random() < 0.6
    aspect = float(rng.uniform(1.15, 1.6) if taller else rng.uniform(1.0, 1.5))
    angle = float(np.pi / 2 + rng.uniform(-0.3, 0.3) if taller else rng.uniform(0, np.pi))
    return _Shape(cx, cy, r, aspect=aspect, angle=angle,
                  harmonics=_harmonics(rng, float(rng.uniform(0.08, 0.16)), rng.random() < 0.65),
                  soft=float(rng.uniform(1.6, 2.6 + 0.12 * r)))


def _reach(shape: _Shape) -> float:
    """How far the shape can reach from its centre (long half-axis with its lobes)."""
    return shape.r * shape.aspect * (1 + sum(abs(a) for _, a, _ in shape.harmonics)) + shape.soft


def _place_lesion(rng: np.random.Generator, inside, r: float, label: str, kind: str,
                  taken: list[tuple[float, float, float]], fallback_r: float,
                  smallest_r: float) -> _Shape | None:
    """A lesion of radius ``r`` (where none fits: ``fallback_r``, then smaller down to
    ``smallest_r``) drawn first and then placed by its painted reach (long half-axis with
    its lobes and soft margin), so that none of it falls outside ``inside`` (the fan, the
    abdomen) or on a taken structure; the truth then shows only what the image shows.
    Its reach is added to ``taken``."""
    fallback = min(r, fallback_r)
    for radius, tries in ((r, 200), (fallback, 400), (max(0.6 * fallback, smallest_r), 400),
                          (min(fallback, smallest_r), 400)):
        shape = _lesion_shape(rng, 0.0, 0.0, radius, label, kind)
        reach = _reach(shape)
        spot = _place(rng, inside, reach, taken, tries=tries)
        if spot is not None:
            shape.cx, shape.cy = spot
            taken.append((*spot, reach))
            return shape
    return None


def _place(rng: np.random.Generator, inside, r: float, taken: list[tuple[float, float, float]],
           tries: int = 60) -> tuple[float, float] | None:
    """A centre where ``inside(x, y, r)`` holds and no taken circle overlaps."""
    for _ in range(tries):
        x, y = inside.sample(rng)
        if inside(x, y, r) and all(math.hypot(x - a, y - b) > r + q + 4 for a, b, q in taken):
            return x, y
    return None


def _lesion_radii(rng: np.random.Generator, w: int, count: int) -> list[float]:
    """Lesion radii 2-15 % of the image width, log-uniform (small ones common)."""
    return sorted((float(w * math.exp(rng.uniform(math.log(0.02), math.log(0.15))))
                   for _ in range(count)), reverse=True)


# -- CT ------------------------------------------------------------------------------------


class _Ellipse:
    """Region test: a point with a clearance radius inside an ellipse."""

    def __init__(self, cx: float, cy: float, ax: float, ay: float, exclude=()) -> None:
        self.cx, self.cy, self.ax, self.ay, self.exclude = cx, cy, ax, ay, exclude

    def sample(self, rng: np.random.Generator) -> tuple[float, float]:
        """A uniform point in the ellipse."""
        t, s = rng.uniform(0, 2 * np.pi), math.sqrt(rng.random())
        return self.cx + s * self.ax * math.cos(t), self.cy + s * self.ay * math.sin(t)

    def __call__(self, x: float, y: float, r: float) -> bool:
        ax, ay = self.ax - r, self.ay - r
        if ax <= 0 or ay <= 0 or ((x - self.cx) / ax) ** 2 + ((y - self.cy) / ay) ** 2 > 1:
            return False
        return all(math.hypot(x - ex, y - ey) > r + er for ex, ey, er in self.exclude)


def _acquisition_noise(rng: np.random.Generator, rescan: np.random.Generator | None,
                       h: int, w: int) -> np.ndarray:
    """Unit white noise of the acquisition (CT's quantum noise, one of ultrasound's speckle
    components): drawn from ``rng``, or from ``rescan`` when the scene is scanned again.
    ``rng`` draws it either way, so everything drawn after it stays the same scene."""
    drawn = rng.standard_normal((h, w))
    return drawn if rescan is None else rescan.standard_normal((h, w))


def _ct(rng: np.random.Generator, h: int, w: int, lesions: int,
        rescan: np.random.Generator | None = None) -> Phantom:
    s = min(h, w)
    hu = np.full((h, w), -1000.0, dtype=np.float32)
    cx, cy = w / 2 + rng.normal(0, 0.01 * w), h / 2 + rng.normal(0, 0.01 * h)
    ax, ay = rng.uniform(0.40, 0.46) * w, rng.uniform(0.30, 0.38) * h
    body = _Shape(cx, cy, ay, aspect=ax / ay, harmonics=_harmonics(rng, 0.015, False), soft=1.2)
    _paint(hu, body, float(rng.uniform(-110, -80)))
    fat = rng.uniform(0.03, 0.07) * s
    tissue = 45 + 6 * smooth_noise(rng, h, w, 0.04 * s)
    _paint(hu, _Shape(cx, cy, ay - fat, aspect=(ax - fat) / (ay - fat), soft=2.0), tissue)
    # organs: liver (image left), spleen, kidneys, gas-filled bowel
    liver = _Shape(cx - 0.17 * w, cy - 0.05 * h, 0.2 * ay * 1.1, aspect=1.4, angle=0.5,
                   harmonics=_harmonics(rng, 0.05, False), soft=2.0)
    _paint(hu, liver, 58 + float(rng.normal(0, 4)) + 3 * smooth_noise(rng, h, w, 0.03 * s))
    _paint(hu, _Shape(cx + 0.27 * w, cy - 0.04 * h, 0.1 * ay, aspect=1.6, angle=-0.9, soft=2.0),
           float(rng.uniform(45, 55)))
    kidneys = [_Shape(cx + side * 0.15 * w, cy + 0.2 * ay, 0.12 * ay, aspect=1.7,
                      angle=side * 1.2, soft=1.5) for side in (-1, 1)]
    for side, kidney in zip((-1, 1), kidneys, strict=True):
        _paint(hu, kidney, float(rng.uniform(140, 190)))
        _paint(hu, _Shape(cx + side * 0.15 * w, cy + 0.2 * ay, 0.05 * ay, aspect=1.5,
                          angle=side * 1.2, soft=1.5), float(rng.uniform(15, 35)))
    taken: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(0, 4))):
        gx, gy = cx + rng.uniform(-0.25, 0.15) * w, cy + rng.uniform(-0.25, 0.0) * ay
        gas = _Shape(gx, gy, rng.uniform(0.01, 0.035) * s, aspect=rng.uniform(1, 2),
                     angle=rng.uniform(0, 3), soft=1.0)
        _paint(hu, gas, float(rng.uniform(-950, -700)))
        taken.append((gx, gy, gas.r * gas.aspect))
    # spine, canal, ribs, aorta, IVC
    spine = (cx, cy + 0.5 * ay, 0.07 * s)
    _paint(hu, _Shape(*spine, soft=1.2), float(rng.uniform(700, 950)))
    _paint(hu, _Shape(spine[0], spine[1], spine[2] * 0.8, soft=1.2), float(rng.uniform(250, 400)))
    _paint(hu, _Shape(spine[0], spine[1] + spine[2] * 1.45, spine[2] * 0.45, soft=1.0), 20.0)
    for t in np.linspace(0.2, np.pi - 0.2, int(rng.integers(6, 11))):
        for side in (-1, 1):
            rx = cx + side * (ax - fat * 1.3) * math.cos(t) * 0.97
            ry = cy + (ay - fat * 1.3) * math.sin(t) * (1 if t < 1.3 or t > 1.8 else -1)
            _paint(hu, _Shape(rx, ry, 0.012 * s, aspect=1.8, angle=t, soft=1.0), 700.0)
    distractors: list[tuple[str, Box]] = []
    aorta = _Shape(cx + 0.03 * w, spine[1] - spine[2] * 1.6, 0.028 * s, soft=1.0)
    _paint(hu, aorta, float(rng.uniform(160, 260)))
    ivc = _Shape(cx - 0.08 * w, spine[1] - spine[2] * 1.5, 0.03 * s, aspect=1.3, soft=1.0)
    _paint(hu, ivc, float(rng.uniform(110, 170)))
    region = _Ellipse(cx, cy - 0.05 * ay, ax - fat - 0.02 * s, ay * 0.75 - fat,
                      exclude=((*spine[:2], spine[2] * 2.2),))
    # lesions keep clear of the aorta, the vena cava and the kidneys: a lesion's contrast
    # is added to what lies beneath it, and no cross-section shows one laid over those
    taken += [(aorta.cx, aorta.cy, aorta.r), (ivc.cx, ivc.cy, _reach(ivc))]
    taken += [(k.cx, k.cy, _reach(k)) for k in kidneys]
    planned: list[tuple[_Shape, str]] = []  # lesions claim their place before distractors
    for r in _lesion_radii(rng, w, lesions):
        label = _lesion_class(rng)
        shape = _place_lesion(rng, region, r, label, "ct", taken, 0.05 * w, 0.02 * w)
        if shape is not None:
            planned.append((shape, label))
    for _ in range(int(rng.integers(2, 7))):  # vessel cross-sections, round or tubular
        r = float(rng.uniform(0.008, 0.022) * s)
        spot = _place(rng, region, r * 2, taken)
        if spot:
            v = _Shape(*spot, r, aspect=float(rng.choice([1.0, rng.uniform(2, 4)])),
                       angle=float(rng.uniform(0, np.pi)), soft=1.0)
            _paint(hu, v, float(rng.uniform(130, 280)))
            taken.append((*spot, r * v.aspect))
            distractors.append(("vessel", v.box(h, w)))
    for _ in range(int(rng.choice([0, 0, 1, 1, 2]))):  # cysts: water, sharp, round, uniform
        r = float(rng.uniform(0.02, 0.08) * w)
        spot = _place(rng, region, r, taken)
        if spot:
            c = _Shape(*spot, r, aspect=float(rng.uniform(1.0, 1.15)), soft=0.6)
            _paint(hu, c, float(rng.uniform(-2, 12)))
            taken.append((*spot, r * c.aspect))
            distractors.append(("cyst", c.box(h, w)))
    for shape, label in planned:  # benign: homogeneous; malignant: mottled, often necrotic
        malignant = label == "malignant"
        hypo = rng.random() < 0.65
        delta = math.exp(rng.uniform(math.log(18), math.log(80)))
        if hypo:  # solid tissue stays denser than water (>= ~20 HU); cysts are 0-12 HU
            background = float(hu[int(shape.cy), int(shape.cx)])
            delta = -min(delta, max(14.0, background - rng.uniform(18, 26)))
        mottle = rng.uniform(0.3, 0.45) if malignant else rng.uniform(0.04, 0.1)
        texture = delta * (1 + mottle * smooth_noise(rng, h, w, max(2.0, shape.r / 4)))
        _paint(hu, shape, texture, mode="add")
        if malignant and rng.random() < 0.4:  # enhancing rim around a necrotic centre
            inner = _Shape(shape.cx, shape.cy, shape.r * 0.6, shape.aspect, shape.angle,
                           shape.harmonics, shape.soft)
            _paint(hu, inner, -abs(delta) * 0.8, mode="add")
    sigma = float(rng.uniform(4, 11))
    hu += sigma * blur(_acquisition_noise(rng, rescan, h, w).astype(np.float32), 0.6, 0.6) * 1.6
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    window = (float(rng.uniform(30, 60)), float(rng.uniform(350, 450)))
    mm = float(rng.uniform(*CT_FOV_MM)) / w
    truths = [t for t in (shape.truth(h, w, label, (mm, mm)) for shape, label in planned) if t]
    return Phantom(apply_window(hu, *window), "ct", bool(truths), [t.box for t in truths],
                   distractors, hu, window, (mm, mm), truths)


def apply_window(hu: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Linear display window: Hounsfield units -> [0, 1] float32."""
    return np.clip((hu.astype(np.float32) - (centre - width / 2)) / width, 0, 1).astype(np.float32)


# -- ultrasound ----------------------------------------------------------------------------


class _Sector:
    """The fan of a curved-array probe: apex above the image, beams spreading down."""

    def __init__(self, rng: np.random.Generator, h: int, w: int) -> None:
        self.ax, self.ay = w / 2, -0.12 * h
        self.half = math.radians(rng.uniform(30, 40))
        self.r0 = 0.12 * h - self.ay
        self.r1 = min(h - self.ay - 2, (w / 2 - 2) / math.sin(self.half)) * rng.uniform(0.92, 1.0)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
        self.r = np.hypot(xx - self.ax, yy - self.ay)
        self.t = np.arctan2(xx - self.ax, yy - self.ay)
        edge = np.minimum.reduce([(self.half - np.abs(self.t)) * self.r, self.r - self.r0,
                                  self.r1 - self.r])
        self.mask = np.clip(edge + 0.5, 0, 1)

    def sample(self, rng: np.random.Generator) -> tuple[float, float]:
        """A point inside the fan, away from the skin line."""
        rr = rng.uniform(self.r0 + 0.15 * (self.r1 - self.r0), self.r1)
        tt = rng.uniform(-self.half, self.half)
        return self.ax + rr * math.sin(tt), self.ay + rr * math.cos(tt)

    def __call__(self, x: float, y: float, r: float) -> bool:
        rr, tt = math.hypot(x - self.ax, y - self.ay), math.atan2(x - self.ax, y - self.ay)
        near = self.r0 + 0.12 * (self.r1 - self.r0)
        return near + r < rr < self.r1 - r and abs(tt) * rr < self.half * rr - r

    def posterior(self, shape: _Shape, scale: float = 1.0) -> np.ndarray:
        """0..1 map of the acoustic shadow/enhancement band behind ``shape``."""
        rc = math.hypot(shape.cx - self.ax, shape.cy - self.ay)
        tc = math.atan2(shape.cx - self.ax, shape.cy - self.ay)
        half = math.atan2(shape.r * scale * 0.85, rc)
        across = np.clip((half - np.abs(self.t - tc)) * rc / 2.0 + 0.5, 0, 1)
        along = np.clip((self.r - rc) / max(shape.r * scale, 1.0), 0, 1)
        return across * along


def _us(rng: np.random.Generator, h: int, w: int, lesions: int,
        scales: Sequence[float] = (1.0,), rescan: np.random.Generator | None = None
        ) -> list[Phantom]:
    """Render one ultrasound scene at each lesion scale (one frame per scale)."""
    s = min(h, w)
    fan = _Sector(rng, h, w)
    depth = (fan.r - fan.r0) / (fan.r1 - fan.r0)
    echo = 0.55 + 0.08 * smooth_noise(rng, h, w, 0.08 * s)
    wave = 0.02 * smooth_noise(rng, 1, w, 0.2 * w)
    fat_end = rng.uniform(0.06, 0.12) + wave
    muscle_end = fat_end + rng.uniform(0.06, 0.14)
    echo = np.where(depth < 0.02, 1.3, echo)
    echo = np.where((depth >= 0.02) & (depth < fat_end), 0.3, echo)
    striae = 0.6 + 0.15 * np.sin(depth * 140 + 3 * smooth_noise(rng, h, w, 0.1 * s))
    echo = np.where((depth >= fat_end) & (depth < muscle_end), striae, echo)
    capsule = np.abs(depth - muscle_end - 0.01) < 0.006
    echo = np.where(capsule, 1.4, echo).astype(np.float32)
    post = np.ones((h, w), dtype=np.float32)
    taken: list[tuple[float, float, float]] = []
    distractors: list[tuple[str, Box]] = []
    for _ in range(int(rng.choice([0, 1, 1, 2]))):  # anechoic cysts, posterior enhancement
        r = float(rng.uniform(0.03, 0.09) * s)
        spot = _place(rng, fan, r, taken)
        if spot:
            c = _Shape(*spot, r, aspect=float(rng.uniform(1.0, 1.2)),
                       angle=float(rng.uniform(0, np.pi)), soft=0.8)
            _paint(echo, c, 0.02)
            post *= 1 + float(rng.uniform(0.3, 0.7)) * fan.posterior(c)
            taken.append((*spot, r * c.aspect))
            distractors.append(("cyst", c.box(h, w)))
    for _ in range(int(rng.integers(0, 3))):  # vessels: dark tubes with bright walls
        r = float(rng.uniform(0.012, 0.03) * s)
        spot = _place(rng, fan, r * 3, taken)
        if spot:
            angle = float(rng.uniform(-0.4, 0.4))
            aspect = float(rng.uniform(3, 7))
            _paint(echo, _Shape(*spot, r * 1.25, aspect=aspect * 0.95, angle=angle), 1.2)
            v = _Shape(*spot, r, aspect=aspect, angle=angle, soft=0.8)
            _paint(echo, v, 0.03)
            post *= 1 + 0.15 * fan.posterior(v)
            taken.append((*spot, r * aspect))
            distractors.append(("vessel", v.box(h, w)))
    found = []
    for r in _lesion_radii(rng, w, lesions):
        label = _lesion_class(rng)
        shape = _place_lesion(rng, fan, min(r, 0.11 * s), label, "us", taken, 0.04 * w,
                              0.02 * w)
        if shape is None:
            continue
        malignant = label == "malignant"
        contrast, hypo = lesion_echo(rng, label, h, w, shape.r)
        # posterior: malignant mostly shadows; benign shows none or a mild enhancement
        if malignant:
            shadow = rng.uniform(0.3, 0.65) if hypo and rng.random() < 0.7 else 0.0
        else:
            shadow = -rng.uniform(0.15, 0.35) if rng.random() < 0.4 else 0.0
        found.append((shape, contrast, shadow, label))
    mm = float(rng.uniform(*US_DEPTH_MM)) / h
    tgc = float(rng.uniform(0.3, 1.2))
    dynamic = float(rng.uniform(42, 58))
    frames = []
    for scale in scales:
        frame_echo, frame_post = echo.copy(), post.copy()
        truths = []
        for shape, contrast, shadow, label in found:
            truth = shape.truth(h, w, label, (mm, mm), scale) if scale >= 0.35 else None
            if truth is None:
                continue
            _paint(frame_echo, shape, contrast, scale, mode="mul")
            if shadow:
                frame_post *= 1 - shadow * fan.posterior(shape, scale)
            truths.append(truth)
        speckle = np.hypot(blur(_acquisition_noise(rng, rescan, h, w), 0.6, 1.3),
                           blur(_acquisition_noise(rng, rescan, h, w), 0.6, 1.3))
        intensity = np.maximum(frame_echo * frame_post * speckle, 0) * np.exp(-tgc * depth) + 1e-4
        db = 20 * np.log10(intensity)
        ref = float(np.percentile(db[fan.mask > 0.5], 99.5))
        image = np.clip((db - ref + dynamic) / dynamic, 0, 1) * fan.mask
        for k in range(1, 6):  # depth-scale dots along the right edge of the fan
            y = int(k * h / 6)
            image[y : y + 2, w - 6 : w - 4] = 0.9
        frames.append(Phantom(image.astype(np.float32), "us", bool(truths),
                              [t.box for t in truths], list(distractors), spacing=(mm, mm),
                              lesions=truths))
    return frames


# -- public API ----------------------------------------------------------------------------


def _shape_of(kind: str, rng: np.random.Generator, size) -> tuple[int, int]:
    if size is None:
        choices = CT_SIZES if kind == "ct" else US_SIZES
        return choices[int(rng.integers(len(choices)))]
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def _lesion_count(rng: np.random.Generator, lesion: bool | None) -> int:
    if lesion is None:
        lesion = bool(rng.random() < 0.5)
    return int(rng.choice([1, 1, 1, 2])) if lesion else 0


def generate(kind: str, rng: np.random.Generator, size: int | tuple[int, int] | None = 256,
             lesion: bool | None = None, rescan: np.random.Generator | None = None) -> Phantom:
    """One phantom of ``kind`` ("ct" or "us"); ``size`` is an int (square), (h, w) or None.

    ``lesion=None`` draws it at random. With ``lesion=True`` the phantom has
    one or two lesions (``boxes``); a lesion that cannot be placed leaves
    ``lesion`` False, so the flag always matches the boxes. ``rescan`` scans the
    same scene again: the same anatomy, lesions and truth, with the acquisition noise
    (CT's quantum noise, ultrasound's speckle) drawn from ``rescan`` instead.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown phantom kind {kind!r}; choose from {', '.join(KINDS)}")
    h, w = _shape_of(kind, rng, size)
    count = _lesion_count(rng, lesion)
    if kind == "ct":
        return _ct(rng, h, w, count, rescan)
    return _us(rng, h, w, count, rescan=rescan)[0]


def generate_sweep(rng: np.random.Generator, frames: int = 8,
                   size: int | tuple[int, int] | None = (240, 320),
                   lesion: bool | None = True) -> list[Phantom]:
    """An ultrasound sweep: the same anatomy in every frame, the lesion only mid-sweep.

    The lesion grows and shrinks like a sphere cut by moving planes, so the
    first and last frames show no lesion (their ``lesion`` is False).
    """
    h, w = _shape_of("us", rng, size)
    centre = (frames - 1) / 2
    half = max(0.8 * centre, 0.5)  # the first and last frames fall outside the lesion
    scales = [math.sqrt(max(0.0, 1 - ((i - centre) / half) ** 2)) for i in range(frames)]
    return _us(rng, h, w, _lesion_count(rng, lesion), scales)


def dataset_plan(seed: int, count: int, kinds: Sequence[str] = KINDS,
                 lesion_fraction: float = 0.5) -> list[tuple[str, bool]]:
    """(kind, lesion) for each sample of :func:`dataset`: kinds cycle, lesions balanced per kind."""
    labels: dict[str, list[bool]] = {}
    for k_index, kind in enumerate(kinds):
        n = len(range(k_index, count, len(kinds)))
        positives = round(n * lesion_fraction)
        plan = [True] * positives + [False] * (n - positives)
        np.random.default_rng([seed, 10_000 + k_index]).shuffle(plan)
        labels[kind] = plan
    return [(kinds[i % len(kinds)], labels[kinds[i % len(kinds)]][i // len(kinds)])
            for i in range(count)]


def dataset_sample(seed: int, index: int, plan: Sequence[tuple[str, bool]],
                   size: int | tuple[int, int] | None = None, rescan: int | None = None
                   ) -> Phantom:
    """Sample ``index`` of a dataset, drawn from ``default_rng([seed, index])``; with
    ``rescan``, the same scene scanned again with noise from ``default_rng([seed, index,
    rescan])`` (:func:`generate`)."""
    kind, lesion = plan[index]
    again = None if rescan is None else np.random.default_rng([seed, index, rescan])
    return generate(kind, np.random.default_rng([seed, index]), size, lesion, again)


def dataset(seed: int, count: int, kinds: Sequence[str] = KINDS, lesion_fraction: float = 0.5,
            size: int | tuple[int, int] | None = None) -> Iterator[Phantom]:
    """``count`` phantoms cycling through ``kinds``, lesion-balanced per kind, by seed.

    Sample ``i`` is drawn from ``default_rng([seed, i])``, so any sample can be
    regenerated alone (:func:`dataset_sample`); ``size=None`` varies the image
    size (CT up to 512 x 512, US up to 480 x 640) so letterboxing is exercised.
    """
    plan = dataset_plan(seed, count, kinds, lesion_fraction)
    for i in range(count):
        yield dataset_sample(seed, i, plan, size)
