"""Bilinear sampling of a 2-D grid: the one sampler of model maps, masks and crops."""

from __future__ import annotations

import numpy as np


def bilinear(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``grid`` sampled at rows ``ys`` × columns ``xs`` (fractional cell indices, cell centres
    at whole numbers), clamped at the edges; [len(ys), len(xs)] in the arithmetic's dtype."""
    h, w = grid.shape
    ys = np.clip(ys, 0, h - 1)
    xs = np.clip(xs, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx
    bottom = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy
