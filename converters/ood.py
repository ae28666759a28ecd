"""The validated range of a model: what its validation data looked like to it.

At conversion, the model's ``features`` output (for example its input's own
statistics and its globally pooled penultimate features) is collected on the
fitting rows (calibration or training images); their mean and a covariance
shrunk on the standardised values define a Mahalanobis distance. The
threshold is the ``quantile`` of the distances of held-out images the fit
never saw, times ``margin``, so that about ``1 - quantile`` of images like the
validation data are wrongly flagged. The result is the manifest's ``ood``
section (``clinibox_common/contracts/heads.py``); the box scores every image
against it (``engine/inference/validated_range.py``).

Wide features (a ResNet's 512 pooled channels, with a few hundred fitting
images) are first projected on their leading principal directions, plus the
norm of what the projection leaves out (:func:`projection_size`,
:func:`fit_projection`; ``converters.cam`` builds the projection into the
model's ``features`` output), so the covariance is estimated from about
``ROWS_PER_DIMENSION`` images per dimension and stays small in the manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clinibox_common.contracts.heads import ImageStatistics
from engine.inference.validated_range import image_statistics

#: share of the covariance's mean variance added to its diagonal (keeps it invertible)
SHRINKAGE = 0.05
#: the most dimensions a features output keeps (the manifest holds a D×D matrix)
MAX_FEATURES = 32
#: fitting rows wanted per dimension of the features
ROWS_PER_DIMENSION = 4
#: the input's own statistics every converted model's range measures (display grey levels of
#: its cumulative histogram, neighbour distances of its texture)
IMAGE_STATISTICS = ImageStatistics(levels=(0.1, 0.35, 0.65, 0.9), scales=(1, 2, 4))
#: the least spread those statistics are scaled by (a share of pixels, a grey difference): a
#: value nearly constant on the fitting images must not make a rounding a distance
STATISTICS_FLOOR = 0.01


def _features(matrix: np.ndarray) -> np.ndarray:
    x = np.asarray(matrix, dtype=np.float64)
    return x.reshape(len(x), -1)


def mahalanobis_squared(features: np.ndarray, mean: np.ndarray,
                        inverse_covariance: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of each row of ``features`` [N, D]."""
    d = _features(features) - mean
    return np.einsum("nd,de,ne->n", d, inverse_covariance, d)


def fit_validated_range(fit: np.ndarray, held_out: np.ndarray, output: str | None = "features",
                        quantile: float = 0.995, margin: float = 1.25,
                        spread_floor: float | np.ndarray = 0.0,
                        statistics: ImageStatistics | None = None) -> dict[str, Any]:
    """The manifest's ``ood`` section from fitting rows and held-out rows [N, D]: the
    values :func:`measured` gives (with ``statistics``, the input's own first, then the
    ``output``'s; ``output`` None: the statistics alone).

    The covariance is estimated on the fitting rows standardised (each value divided by
    its standard deviation, at least ``spread_floor``, scalar or [D]) and shrunk there,
    so every value weighs alike whatever its units; the section holds its inverse in
    the values' own units, which the box scores as they come. ``held_out.flagged`` is
    the share of held-out rows above the threshold.
    """
    x, h = _features(fit), _features(held_out)
    if len(x) <= x.shape[1]:
        raise ValueError(f"fitting the validated range needs more than {x.shape[1]} images, "
                         f"got {len(x)}")
    mean = x.mean(axis=0)
    spread = np.maximum(x.std(axis=0, ddof=1), np.broadcast_to(spread_floor, mean.shape))
    spread = np.maximum(spread, 1e-9 * max(float(spread.max()), 1e-12))  # constant values
    correlation = np.cov(x / spread, rowvar=False)
    correlation += np.eye(len(mean)) * SHRINKAGE * float(np.mean(np.diag(correlation)) or 1.0)
    inverse = np.linalg.inv(correlation) / np.outer(spread, spread)
    distances = mahalanobis_squared(h, mean, inverse)
    threshold = float(np.quantile(distances, quantile) * margin)
    section: dict[str, Any] = {"method": "mahalanobis", "output": output}
    if statistics is not None:
        section["image_statistics"] = {"levels": list(statistics.levels),
                                       "scales": list(statistics.scales)}
    return {**section, "mean": [round(float(v), 6) for v in mean],
            "inverse_covariance": [[float(f"{v:.6g}") for v in row] for row in inverse],
            "threshold": round(threshold, 3),
            "held_out": {"images": len(h), "quantile": quantile, "margin": margin,
                         "flagged": round(float(np.mean(distances > threshold)), 4)}}


def input_statistics(x: np.ndarray, statistics: ImageStatistics | None, mean: float,
                     std: float) -> np.ndarray:
    """[N, S]: the own statistics of model inputs ``x`` [N, C, H, W] (normalised with
    ``mean`` and ``std``), as the box computes them (``engine/inference/
    validated_range.py``); S = 0 without ``statistics``. They do not depend on the
    artifact: compute them once per image set and :func:`measured` each artifact."""
    if statistics is None:
        return np.zeros((len(x), 0))
    if not len(x):
        return np.zeros((0, statistics.size))
    return np.stack([image_statistics(row * std + mean, statistics) for row in x])


def measured(statistics: np.ndarray, features: np.ndarray | None) -> np.ndarray:
    """[N, D]: what a validated range measures of N images: their
    :func:`input_statistics`, then the model's ``features`` [N, F] for them (None: the
    statistics alone)."""
    parts = [statistics] + ([_features(features)] if features is not None else [])
    return np.concatenate(parts, axis=1)


def spread_floors(statistics: ImageStatistics | None, features: int) -> np.ndarray:
    """[D]: ``STATISTICS_FLOOR`` for each image statistic, 0 for each of the ``features``."""
    count = statistics.size if statistics is not None else 0
    return np.r_[np.full(count, STATISTICS_FLOOR), np.zeros(features)]


def flagged_share(features: np.ndarray, section: dict[str, Any]) -> float:
    """Share of rows ``features`` [N, D] (:func:`measured`) that the ``ood`` section puts
    outside the range."""
    distances = mahalanobis_squared(features, np.asarray(section["mean"]),
                                    np.asarray(section["inverse_covariance"]))
    return float(np.mean(distances > float(section["threshold"])))


def projection_size(channels: int, rows: int, reserved: int = 0) -> int:
    """How many principal directions of ``channels`` pooled features to keep when ``rows``
    images fit the range and ``reserved`` other values stand beside them in the features
    (the input's own statistics); 0: keep the features as they are (few enough already).

    A projected features output has one more value, the norm of what the projection
    leaves out, so ``reserved + size + 1`` stays within ``rows / ROWS_PER_DIMENSION``
    (and ``MAX_FEATURES``) where that leaves at least one direction.
    """
    budget = min(MAX_FEATURES, rows // ROWS_PER_DIMENSION) - reserved
    if channels <= budget:
        return 0
    return max(1, min(channels, budget) - 1)


def fit_projection(pooled: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean [C] and the ``size`` leading principal directions [C, size] of rows [N, C]."""
    x = _features(pooled)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    basis = np.zeros((x.shape[1], size))
    kept = vt[:size].T
    basis[:, : kept.shape[1]] = kept
    return mean.astype(np.float32), basis.astype(np.float32)
