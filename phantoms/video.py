"""An ultrasound machine's screen as a capture card gives it, frame by frame, with truth.

numpy only. The image area is drawn the way ``phantoms.images`` draws an ultrasound
phantom (the demo model was trained on those): a curved-array fan, skin, fat and muscle
bands, organ texture, anechoic cysts and vessels, lesions whose look says their class,
speckle, depth attenuation and log compression. What moves:

- the probe slides slowly to and fro over the tissue: everything below the muscle (organ
  texture, speckle, cysts, vessels, lesions) shifts sideways with it, the fan and the
  bands under the skin stay where the probe is;
- the probe also tilts a little all the time, so the speckle decorrelates slowly (no
  two frames are the same: a still probe is not a frozen picture);
- a lesion comes into the scan plane for a few seconds (it grows and shrinks like a
  sphere cut by moving planes, as in ``generate_sweep``), moving with the tissue, then
  leaves; lesion-free stretches lie between.

Around the image area: a dark screen with the machine's menus (grey blocks, a depth
scale, strips of text-like marks; no text, no patient data). Deterministic by seed.

    layout = ScreenLayout()
    for frame, boxes in screen_frames(seed=7, seconds=20):
        frame           # (720, 1280, 3) uint8 RGB
        boxes           # [(x0, y0, x1, y1)] of the lesions in frame pixels, [] if none
        image_area(frame, layout)   # the grey [0, 1] crop the box analyses

The scene is drawn once at the image area's size (a panorama wider than the image area);
each frame is slices, one lesion paint and the log compression, so 20 s of 720p at 30 fps
take a few seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from phantoms.images import (
    _lesion_class,
    _lesion_shape,
    _paint,
    _reach,
    _Sector,
    _Shape,
    blur,
    lesion_echo,
    smooth_noise,
)

Box = tuple[int, int, int, int]
#: a lesion is painted (and has truth) only where its cut is at least this share of its size
#: (``phantoms.images`` draws a sweep's lesion the same way)
MIN_SCALE = 0.35


@dataclass(frozen=True)
class ScreenLayout:
    """The captured screen's size and where its image area lies: ``region`` is
    ``(x, y, width, height)`` in screen pixels (the ``[[live.sources]]`` region)."""

    width: int = 1280
    height: int = 720
    region: tuple[int, int, int, int] = (280, 100, 720, 540)

    def __post_init__(self) -> None:
        x, y, w, h = self.region
        if w < 64 or h < 64 or x < 0 or y < 0 or x + w > self.width or y + h > self.height:
            raise ValueError(f"image area {self.region} does not fit a "
                             f"{self.width}x{self.height} screen (at least 64x64)")

    def scaled(self, width: int, height: int) -> ScreenLayout:
        """The same screen at another size, its image area scaled with it."""
        fx, fy = width / self.width, height / self.height
        x, y, w, h = self.region
        return ScreenLayout(width, height, (round(x * fx), round(y * fy), round(w * fx),
                                            round(h * fy)))


def image_area(frame: np.ndarray, layout: ScreenLayout = ScreenLayout()) -> np.ndarray:
    """The image area of an RGB (or grey) screen frame, grey float32 in [0, 1]."""
    x, y, w, h = layout.region
    crop = frame[y : y + h, x : x + w]
    if crop.ndim == 3:
        crop = crop.mean(axis=2)
    return (crop / np.float32(255.0)).astype(np.float32)


@dataclass
class _Episode:
    """One lesion's pass through the scan plane; ``shape`` in panorama pixels."""

    shape: _Shape
    start: float
    end: float
    texture: np.ndarray  # contrast factor over the panorama
    shadow: float  # > 0: posterior shadow, < 0: enhancement

    def scale(self, t: float) -> float:
        """How much of the lesion the plane cuts at time ``t`` (0 outside the pass)."""
        half = (self.end - self.start) / 2
        u = (t - self.start - half) / max(half, 1e-6)
        return math.sqrt(max(0.0, 1.0 - u * u))


class _Motion:
    """The probe's sideways position over the tissue (panorama pixels) at time t."""

    def __init__(self, rng: np.random.Generator, w: int) -> None:
        self.margin = 0.25 * w
        self.slow = (0.2 * w, float(rng.uniform(14, 22)), float(rng.uniform(0, 2 * np.pi)))
        self.quick = (0.03 * w, float(rng.uniform(3, 5)), float(rng.uniform(0, 2 * np.pi)))

    def __call__(self, t: float) -> int:
        pos = self.margin + sum(a * math.sin(2 * math.pi * t / period + phase)
                                for a, period, phase in (self.slow, self.quick))
        return round(pos)


class _Scene:
    """Everything drawn once: the fan, the bands, the tissue panorama, speckle, lesions."""

    def __init__(self, rng: np.random.Generator, h: int, w: int, seconds: float,
                 lesion: bool) -> None:
        self.h, self.w = h, w
        s = min(h, w)
        self.fan = fan = _Sector(rng, h, w)
        self.motion = _Motion(rng, w)
        pw = self.pw = w + 2 * math.ceil(self.motion.margin) + 2
        depth = (fan.r - fan.r0) / (fan.r1 - fan.r0)
        # bands under the skin stay with the probe (as phantoms.images draws them)
        wave = 0.02 * smooth_noise(rng, 1, w, 0.2 * w)
        fat_end = rng.uniform(0.06, 0.12) + wave
        muscle_end = fat_end + rng.uniform(0.06, 0.14)
        band = np.full((h, w), np.nan, np.float32)
        band = np.where(depth < 0.02, 1.3, band)
        band = np.where((depth >= 0.02) & (depth < fat_end), 0.3, band)
        striae = 0.6 + 0.15 * np.sin(depth * 140 + 3 * smooth_noise(rng, h, w, 0.1 * s))
        band = np.where((depth >= fat_end) & (depth < muscle_end), striae, band)
        band = np.where(np.abs(depth - muscle_end - 0.01) < 0.006, 1.4, band)
        self.band_on = ~np.isnan(band)
        self.band = np.nan_to_num(band).astype(np.float32)
        # below them the tissue, wider than the image: it moves under the probe
        self.echo = (0.55 + 0.08 * smooth_noise(rng, h, pw, 0.08 * s)).astype(np.float32)
        self.post = np.ones((h, pw), np.float32)
        self.near = float(fan.ay + fan.r0 + 0.15 * (fan.r1 - fan.r0))
        taken: list[tuple[float, float, float]] = []
        self._distractors(rng, s, taken)
        self.speckle = [blur(rng.standard_normal((h, pw)).astype(np.float32), 0.6, 1.3)
                        for _ in range(4)]
        self.turn = float(rng.uniform(0.7, 1.3))  # rad/s: how fast the speckle decorrelates
        self.atten = np.exp(-float(rng.uniform(0.3, 1.2)) * depth).astype(np.float32)
        self.dynamic = float(rng.uniform(42, 58))
        self.episodes = self._episodes(rng, seconds, taken) if lesion else []
        self.mask = fan.mask.astype(np.float32)
        off = self.motion(0.0)
        echo = np.where(self.band_on, self.band, self.echo[:, off : off + w])
        db = 20 * np.log10(echo * self.post[:, off : off + w] * self._speckle(0.0, off)
                           * self.atten + 1e-4)
        self.ref = float(np.percentile(db[fan.mask > 0.5], 99.5))

    def _spot(self, rng: np.random.Generator, r: float, taken) -> tuple[float, float] | None:
        for _ in range(60):
            x, y = rng.uniform(r, self.pw - r), rng.uniform(self.near + r, 0.95 * self.h - r)
            if all(math.hypot(x - a, y - b) > r + q + 4 for a, b, q in taken):
                return float(x), float(y)
        return None

    def _below(self, shape: _Shape) -> np.ndarray:
        """0..1 band straight below ``shape`` (posterior enhancement in the panorama)."""
        xs = np.arange(self.pw, dtype=np.float32) + 0.5
        ys = np.arange(self.h, dtype=np.float32)[:, None] + 0.5
        across = np.clip((shape.r * 0.85 - np.abs(xs - shape.cx)) / 2 + 0.5, 0, 1)
        return across[None, :] * np.clip((ys - shape.cy) / max(shape.r, 1.0), 0, 1)

    def _distractors(self, rng: np.random.Generator, s: int, taken) -> None:
        """Anechoic cysts (posterior enhancement) and vessels, as phantoms.images draws."""
        for _ in range(int(rng.choice([0, 1, 1, 2]))):
            r = float(rng.uniform(0.03, 0.09) * s)
            spot = self._spot(rng, r, taken)
            if spot:
                c = _Shape(*spot, r, aspect=float(rng.uniform(1.0, 1.2)),
                           angle=float(rng.uniform(0, np.pi)), soft=0.8)
                _paint(self.echo, c, 0.02)
                self.post *= 1 + float(rng.uniform(0.3, 0.7)) * self._below(c)
                taken.append((*spot, r * c.aspect))
        for _ in range(int(rng.integers(1, 4))):
            r = float(rng.uniform(0.012, 0.03) * s)
            spot = self._spot(rng, r * 3, taken)
            if spot:
                angle, aspect = float(rng.uniform(-0.4, 0.4)), float(rng.uniform(3, 7))
                _paint(self.echo, _Shape(*spot, r * 1.25, aspect=aspect * 0.95, angle=angle),
                       1.2)
                v = _Shape(*spot, r, aspect=aspect, angle=angle, soft=0.8)
                _paint(self.echo, v, 0.03)
                self.post *= 1 + 0.15 * self._below(v)
                taken.append((*spot, r * aspect))

    def _episodes(self, rng: np.random.Generator, seconds: float, taken) -> list[_Episode]:
        """Lesion passes: a lesion-free start, then a pass of 3.5-6 s every 6-10 s."""
        out: list[_Episode] = []
        t = float(rng.uniform(1.0, 2.0))
        while t + 1.5 < seconds:
            length = float(rng.uniform(3.5, 6.0))
            episode = self._place(rng, t, t + length, taken)
            if episode is not None:
                out.append(episode)
                sh = episode.shape
                taken.append((sh.cx, sh.cy, _reach(sh)))
            t += length + float(rng.uniform(2.5, 4.0))
        return out

    def _place(self, rng: np.random.Generator, start: float, end: float,
               taken) -> _Episode | None:
        """A lesion that stays inside the fan for its whole pass, clear of the others."""
        label = _lesion_class(rng)
        times = np.linspace(start, end, 13)
        offsets = [self.motion(float(t)) for t in times]
        for attempt in range(300):
            shrink = 1.0 if attempt < 150 else 0.7
            r = shrink * self.w * math.exp(rng.uniform(math.log(0.045), math.log(0.09)))
            shape = _lesion_shape(rng, 0.0, 0.0, r, label, "us")
            reach = _reach(shape)
            x, y = self.fan.sample(rng)
            cx = x + self.motion((start + end) / 2)
            if not all(self.fan(cx - off, y, reach) for off in offsets):
                continue
            if any(math.hypot(cx - a, y - b) < reach + q + 4 for a, b, q in taken):
                continue
            shape.cx, shape.cy = cx, y
            return _Episode(shape, start, end, self._contrast(rng, label, r),
                            self._shadow(rng, label))
        return None

    def _contrast(self, rng: np.random.Generator, label: str, r: float) -> np.ndarray:
        """The lesion's echo factor over the panorama (phantoms.images' looks)."""
        return lesion_echo(rng, label, self.h, self.pw, r)[0].astype(np.float32)

    @staticmethod
    def _shadow(rng: np.random.Generator, label: str) -> float:
        if label == "malignant":
            return float(rng.uniform(0.3, 0.65)) if rng.random() < 0.7 else 0.0
        return -float(rng.uniform(0.15, 0.35)) if rng.random() < 0.4 else 0.0

    def _speckle(self, t: float, off: int) -> np.ndarray:
        """Rayleigh speckle: |cos(a) z1 + sin(a) z2| of two complex Gaussian fields, the
        angle turning with time (the probe tilts), the fields moving with the tissue."""
        a = self.turn * t
        c, s = np.float32(math.cos(a)), np.float32(math.sin(a))
        f = [field[:, off : off + self.w] for field in self.speckle]
        return np.hypot(c * f[0] + s * f[2], c * f[1] + s * f[3])

    def render(self, t: float) -> tuple[np.ndarray, list[Box]]:
        """The image area at time ``t``: grey float32 [0, 1] and the lesions' boxes."""
        h, w = self.h, self.w
        off = self.motion(t)
        echo = np.where(self.band_on, self.band, self.echo[:, off : off + w])
        post = self.post[:, off : off + w]
        boxes: list[Box] = []
        for episode in self.episodes:
            scale = episode.scale(t)
            if scale < MIN_SCALE:
                continue
            shape = replace(episode.shape, cx=episode.shape.cx - off)
            box = shape.box(h, w, scale)
            if box is None:
                continue
            rows, cols, m = shape.mask(h, w, scale)
            tex = episode.texture[rows, cols.start + off : cols.stop + off]
            echo[rows, cols] *= 1 - m + m * tex
            if episode.shadow:
                post = post * (1 - episode.shadow * self.fan.posterior(shape, scale))
            boxes.append(tuple(int(v) for v in box))  # type: ignore[arg-type]
        intensity = echo * post * self._speckle(t, off) * self.atten + np.float32(1e-4)
        db = np.float32(20) * np.log10(intensity)
        image = np.clip((db - np.float32(self.ref - self.dynamic)) / np.float32(self.dynamic),
                        0, 1) * self.mask
        for k in range(1, 6):  # depth-scale dots along the right edge of the fan
            y = int(k * h / 6)
            image[y : y + 2, w - 6 : w - 4] = 0.9
        return image, boxes


def _marks(canvas: np.ndarray, rng: np.random.Generator, x: int, y: int, width: int,
           size: int, shade: int) -> None:
    """A strip of text-like marks (words of glyph-sized blocks, no text) at (x, y)."""
    end = min(x + width, canvas.shape[1])
    while x < end - size:
        for _ in range(int(rng.integers(2, 8))):
            gw = int(rng.integers(max(2, size // 2), size + 1))
            if x + gw >= end:
                return
            top = y + int(rng.integers(0, max(1, size // 4)))
            canvas[top : y + size, x : x + gw] = shade
            x += gw + max(1, size // 4)
        x += size


def _screen(rng: np.random.Generator, layout: ScreenLayout) -> np.ndarray:
    """The machine's screen without the image: dark, menus, a depth scale, text strips."""
    sh, sw = layout.height, layout.width
    x, y, w, h = layout.region
    unit = max(4, sh // 60)
    screen = np.empty((sh, sw, 3), np.uint8)
    screen[:] = (12, 13, 16)
    bar = max(unit * 3, y // 2)
    screen[:bar] = (44, 47, 53)  # the top bar: mode, probe, frequency as marks
    _marks(screen, rng, unit * 2, bar // 2 - unit // 2, sw // 3, unit, 190)
    _marks(screen, rng, sw // 2, bar // 2 - unit // 2, sw // 3, unit, 150)
    left = x - 2 * unit
    for i in range(max(0, (sh - bar - 2 * unit) // (4 * unit))):  # buttons on the left
        top = bar + 2 * unit + i * 4 * unit
        if left - 2 * unit <= 3 * unit:
            break
        screen[top : top + 3 * unit, unit : left - unit] = (58, 62, 70) if i % 3 else (80, 86, 96)
        _marks(screen, rng, 2 * unit, top + unit, left - 4 * unit, unit, 170)
    scale_x = x + w + unit  # the depth scale right of the image: ticks and numbers as marks
    if scale_x + 6 * unit < sw:
        screen[y : y + h, scale_x : scale_x + 2] = 150
        for k in range(11):
            ty = y + min(h - 2, round(k * h / 10))
            long = k % 2 == 0
            screen[ty : ty + 2, scale_x : scale_x + (2 * unit if long else unit)] = 150
            if long:
                _marks(screen, rng, scale_x + 3 * unit, ty - unit // 2, 3 * unit, unit, 150)
        right = scale_x + 7 * unit
        for i in range(6):  # gain, depth, focus panels on the right
            top = y + i * 5 * unit
            if right + 6 * unit < sw and top + 4 * unit < sh:
                screen[top : top + 4 * unit, right : sw - unit] = (36, 39, 45)
                _marks(screen, rng, right + unit, top + unit, sw - right - 3 * unit, unit, 160)
    foot = y + h + unit  # a text strip under the image
    if foot + 2 * unit < sh:
        _marks(screen, rng, x, foot, w, unit, 120)
    screen[max(0, y - unit) : y - unit // 2, x : x + 2 * unit] = (230, 160, 40)  # probe marker
    screen[y : y + h, x : x + w] = 0
    return screen


def screen_frames(seed: int, seconds: float, fps: float = 30.0,
                  layout: ScreenLayout = ScreenLayout(), lesion: bool = True,
                  ) -> Iterator[tuple[np.ndarray, list[Box]]]:
    """``seconds`` of an ultrasound machine's screen at ``fps``: each frame an
    (height, width, 3) uint8 RGB array and the boxes ``(x0, y0, x1, y1)`` (pixel edges,
    frame pixels) of the lesions it shows, ``[]`` where none. ``lesion=False``: none at
    all; else lesions pass for a few seconds each, with lesion-free stretches between
    (the first second or more is one). Deterministic by ``seed``."""
    rng = np.random.default_rng([seed, 47])
    x, y, w, h = layout.region
    screen = _screen(np.random.default_rng([seed, 48]), layout)
    scene = _Scene(rng, h, w, seconds, lesion)
    for i in range(round(seconds * fps)):
        image, boxes = scene.render(i / fps)
        frame = screen.copy()
        frame[y : y + h, x : x + w] = (image * np.float32(255) + np.float32(0.5)
                                       ).astype(np.uint8)[:, :, None]
        yield frame, [(x0 + x, y0 + y, x1 + x, y1 + y) for x0, y0, x1, y1 in boxes]
