"""Lesion masks: connected regions, their contour and their axes (numpy only).

A segmentation head gives a probability map per class at a stride of the
model input. The box turns it into one mask per lesion on the source image
(bilinear upsampling, then the head's threshold), traces the mask's outline as
a contour in source pixels, and measures it the way a radiologist measures a
lesion (RECIST): the long axis is the largest distance across the outline, the
short axis the largest extent perpendicular to it. Distances are taken in
millimetres when the image is calibrated, because a pixel need not be square.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.imaging.bilinear import bilinear

#: at most this many points are kept of a contour (stored and drawn)
MAX_CONTOUR_POINTS = 96


@dataclass(frozen=True)
class Axes:
    """Long and short axis (RECIST) and area of a mask, in the units of its spacing."""

    long_axis: float
    short_axis: float
    area: float


def components(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected regions of a boolean grid, largest first (equal sizes in the order
    of their first cell), each a boolean grid.

    The grid's rows are cut into runs of set cells; a run joins every run of the row
    above that touches it, corners included (union-find on run indices, each region
    rooted at its first run), and each region is painted back from its runs. A model
    grid of 64 × 64 holds a few dozen runs: a fraction of a millisecond.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    h, w = mask.shape
    edges = np.zeros((h, w + 2), dtype=np.int8)
    edges[:, 1:-1] = mask
    steps = np.diff(edges, axis=1)
    rows, starts = (a.tolist() for a in np.nonzero(steps == 1))
    ends = np.nonzero(steps == -1)[1].tolist()  # one past each run's last cell
    parent = list(range(len(rows)))
    above, above_end = 0, 0  # the runs of the row above: [above, above_end)
    row_start, row_now = 0, -1
    for i, row in enumerate(rows):
        if row != row_now:
            above, above_end = (row_start, i) if row == row_now + 1 else (i, i)
            row_start, row_now = i, row
        while above < above_end and ends[above] < starts[i]:
            above += 1  # left of this run, and so of every later run of its row
        j = above
        while j < above_end and starts[j] <= ends[i]:  # touching, corners included
            a, b = _root(parent, i), _root(parent, j)
            if a != b:
                parent[max(a, b)] = min(a, b)
            j += 1
    sizes: dict[int, int] = {}
    labels = np.zeros(h * w, dtype=np.int32)
    for i, row in enumerate(rows):
        region = _root(parent, i)
        sizes[region] = sizes.get(region, 0) + ends[i] - starts[i]
        labels[row * w + starts[i]:row * w + ends[i]] = region + 1
    grid = labels.reshape(h, w)
    return [grid == region + 1 for region in sorted(sizes, key=lambda r: (-sizes[r], r))]


def _root(parent: list[int], i: int) -> int:
    """The first run of run ``i``'s region (halving the path on the way)."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _padded(mask: np.ndarray) -> np.ndarray:
    """``mask`` with a border of one False cell (``np.pad``'s result, without its cost)."""
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=mask.dtype)
    padded[1:-1, 1:-1] = mask
    return padded


def _dilate(mask: np.ndarray) -> np.ndarray:
    padded = _padded(mask)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def trace_contour(mask: np.ndarray) -> list[tuple[int, int]]:
    """The outer outline of the top-left region of ``mask`` as (row, col) pixels, in order.

    Moore-neighbour tracing, clockwise, from the region's top-left pixel (on nested
    lists: each step reads a few single pixels, which numpy indexing makes slow).
    """
    if not mask.any():
        return []
    padded = _padded(mask)
    ys, xs = np.nonzero(padded)
    grid = padded.tolist()
    start = (int(ys[0]), int(xs[0]))  # top row first, then leftmost: its west is outside
    back, current = (start[0], start[1] - 1), start
    outline = [start]
    for _ in range(4 * int(mask.sum()) + 8):
        d0 = _RING.index((back[0] - current[0], back[1] - current[1]))
        for k in range(1, 9):
            dy, dx = _RING[(d0 + k) % 8]
            cy, cx = current[0] + dy, current[1] + dx
            if grid[cy][cx]:
                by, bx = _RING[(d0 + k - 1) % 8]
                back, current = (current[0] + by, current[1] + bx), (cy, cx)
                break
        else:
            break  # a single isolated pixel
        if current == start:
            break
        outline.append(current)
    return [(y - 1, x - 1) for y, x in outline]


#: the 8 neighbours, clockwise from north-west (rows grow downwards)
_RING = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]


def simplify(points: list[tuple[float, float]], limit: int = MAX_CONTOUR_POINTS
             ) -> list[tuple[float, float]]:
    """At most ``limit`` points of a closed outline, evenly picked along it."""
    if len(points) <= limit:
        return list(points)
    picks = np.linspace(0, len(points), limit, endpoint=False).astype(int)
    return [points[i] for i in picks]


def axes(mask: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> Axes:
    """Long axis, short axis (perpendicular to it) and area of a pixel mask.

    ``spacing`` is (row, column) size of a pixel. The outline is taken at the
    pixels' corners, so a one-pixel mask is one pixel long.
    """
    return axes_at(mask, [spacing])[0]


def axes_at(mask: np.ndarray, spacings: list[tuple[float, float]]) -> list[Axes]:
    """The mask's ``axes`` at each (row, column) pixel size of ``spacings`` (in pixels and
    in millimetres, say), its outline's hull found once.

    A hull scaled along its rows and columns is the hull of the scaled corners (they
    may add points on its edges, which lie strictly inside every diameter), so each
    spacing's axes are those of the scaled corners.
    """
    if not mask.any():
        return [Axes(0.0, 0.0, 0.0) for _ in spacings]
    hull = _hull(_row_extremes(mask))
    area = float(mask.sum())
    return [_diameters(hull * np.array([row_mm, col_mm]), area * row_mm * col_mm)
            for row_mm, col_mm in spacings]


def _diameters(points: np.ndarray, area: float) -> Axes:
    """RECIST axes of a convex hull's vertices: the largest distance between two, and the
    largest extent perpendicular to it."""
    difference = points[:, None, :] - points[None, :, :]
    distance = np.hypot(difference[..., 0], difference[..., 1])
    i, j = np.unravel_index(int(np.argmax(distance)), distance.shape)
    long_axis = float(distance[i, j])
    direction = (points[j] - points[i]) / long_axis if long_axis > 0 else np.array([1.0, 0.0])
    across = points[:, 1] * direction[0] - points[:, 0] * direction[1]
    short_axis = float(across.max() - across.min())
    return Axes(long_axis, short_axis, area)


def _row_extremes(mask: np.ndarray) -> np.ndarray:
    """The corners of each mask row's leftmost and rightmost pixels, as (y, x) points.

    Every other corner of the mask lies between two of these on its own row,
    so the convex hull (and every diameter) is the same from these alone.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    filled = mask[rows]
    left = np.argmax(filled, axis=1)
    right = mask.shape[1] - np.argmax(filled[:, ::-1], axis=1)  # one past the last pixel
    ys = np.concatenate([rows, rows + 1, rows, rows + 1])
    xs = np.concatenate([left, left, right, right])
    return np.unique(np.stack([ys, xs], axis=1), axis=0).astype(np.float64)


def _hull(points: np.ndarray) -> np.ndarray:
    """The convex hull's vertices of 2-D points (monotone chain); diameters lie on it.

    On Python floats (``tolist``): the chain is a loop, and numpy scalars would make each
    step several times slower for the same IEEE arithmetic."""
    pts = sorted(map(tuple, points.tolist()))
    if len(pts) <= 2:
        return np.asarray(pts)
    return np.asarray(_chain(pts)[:-1] + _chain(reversed(pts))[:-1])


def _chain(points) -> list:
    """One side of the monotone chain: a point leaves it when the next one turns the chain
    the wrong way or runs straight on from it."""
    chain: list = []
    for p in points:
        while len(chain) >= 2:
            (oy, ox), (ay, ax) = chain[-2], chain[-1]
            if (ay - oy) * (p[1] - ox) - (ax - ox) * (p[0] - oy) > 0:
                break
            chain.pop()
        chain.append(p)
    return chain


def grid_to_source(grid: np.ndarray, stride: float, transform, window: tuple[int, int, int, int]
                   ) -> np.ndarray:
    """Bilinear samples of a model grid at the centres of source pixels in ``window``.

    ``window`` is (y0, y1, x0, x1) in source pixels; ``transform`` the letterbox's.
    """
    y0, y1, x0, x1 = window
    xs = ((np.arange(x0, x1) + 0.5) * transform.scale + transform.offset_x) / stride - 0.5
    ys = ((np.arange(y0, y1) + 0.5) * transform.scale + transform.offset_y) / stride - 0.5
    return bilinear(grid, ys, xs)


def source_window(cells: np.ndarray, stride: float, transform, margin: int = 1
                  ) -> tuple[int, int, int, int]:
    """The source-pixel window (y0, y1, x0, x1) covering grid ``cells`` plus ``margin`` cells."""
    ys, xs = np.nonzero(cells)
    gy0, gy1 = int(ys.min()) - margin, int(ys.max()) + 1 + margin
    gx0, gx1 = int(xs.min()) - margin, int(xs.max()) + 1 + margin
    sx0, sy0 = transform.to_source(gx0 * stride, gy0 * stride)
    sx1, sy1 = transform.to_source(gx1 * stride, gy1 * stride)
    return (math.floor(sy0), math.ceil(sy1), math.floor(sx0),
            math.ceil(sx1))


def region_cells(window: tuple[int, int, int, int], stride: float, transform, shape
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Grid cell (row, col) of each source pixel row and column in ``window``."""
    y0, y1, x0, x1 = window
    h, w = shape
    cols = ((np.arange(x0, x1) + 0.5) * transform.scale + transform.offset_x) // stride
    rows = ((np.arange(y0, y1) + 0.5) * transform.scale + transform.offset_y) // stride
    return (np.clip(rows.astype(int), 0, h - 1), np.clip(cols.astype(int), 0, w - 1))


def lesion_mask(probability: np.ndarray, seed: np.ndarray, threshold: float, stride: float,
                transform) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One lesion's mask on the source image, from a probability grid and its seed cells.

    The grid is sampled at every source pixel of the seed's window (a cell
    around it), thresholded, and kept where it is connected, on the grid, to
    the seed. Returns the boolean mask of the window and the window
    (y0, y1, x0, x1) in source pixels.
    """
    window = source_window(seed, stride, transform)
    y0, y1, x0, x1 = window
    y0, x0 = max(0, y0), max(0, x0)
    y1, x1 = min(transform.source_height, y1), min(transform.source_width, x1)
    window = (y0, y1, x0, x1)
    if y1 <= y0 or x1 <= x0:
        return np.zeros((0, 0), dtype=bool), window
    values = grid_to_source(probability, stride, transform, window)
    rows, cols = region_cells(window, stride, transform, probability.shape)
    allowed = _dilate(seed)[rows][:, cols]
    return (values >= threshold) & allowed, window
