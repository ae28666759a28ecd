"""The validated range of a model: what its validation data looked like to it.

At conversion, the model's ``features`` output (for example its globally
pooled penultimate features) is collected on the fitting rows (calibration or
training images); their mean and a shrunk covariance define a Mahalanobis
distance. The threshold is the ``quantile`` of the distances of held-out
images the fit never saw, times ``margin``, so that about ``1 - quantile`` of
images like the validation data are wrongly flagged. The result is the
manifest's ``ood`` section (``firmware_app/contracts/heads.py``); the box
scores every image against it (``firmware_app/inference/validated_range.py``).

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

#: share of the covariance's mean variance added to its diagonal (keeps it invertible)
SHRINKAGE = 0.05
#: the most dimensions a features output keeps (the manifest holds a D×D matrix)
MAX_FEATURES = 32
#: fitting rows wanted per dimension of the features
ROWS_PER_DIMENSION = 4


def _features(matrix: np.ndarray) -> np.ndarray:
    x = np.asarray(matrix, dtype=np.float64)
    return x.reshape(len(x), -1)


def mahalanobis_squared(features: np.ndarray, mean: np.ndarray,
                        inverse_covariance: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of each row of ``features`` [N, D]."""
    d = _features(features) - mean
    return np.einsum("nd,de,ne->n", d, inverse_covariance, d)


def fit_validated_range(fit: np.ndarray, held_out: np.ndarray, output: str = "features",
                        quantile: float = 0.995, margin: float = 1.25) -> dict[str, Any]:
    """The manifest's ``ood`` section from fitting rows and held-out rows [N, D].

    ``held_out.flagged`` is the share of held-out rows above the threshold.
    """
    x, h = _features(fit), _features(held_out)
    if len(x) <= x.shape[1]:
        raise ValueError(f"fitting the validated range needs more than {x.shape[1]} images, "
                         f"got {len(x)}")
    mean = x.mean(axis=0)
    covariance = np.cov(x, rowvar=False)
    covariance += np.eye(len(mean)) * SHRINKAGE * float(np.mean(np.diag(covariance)) or 1.0)
    inverse = np.linalg.inv(covariance)
    distances = mahalanobis_squared(h, mean, inverse)
    threshold = float(np.quantile(distances, quantile) * margin)
    return {"method": "mahalanobis", "output": output,
            "mean": [round(float(v), 6) for v in mean],
            "inverse_covariance": [[float(f"{v:.6g}") for v in row] for row in inverse],
            "threshold": round(threshold, 3),
            "held_out": {"images": len(h), "quantile": quantile, "margin": margin,
                         "flagged": round(float(np.mean(distances > threshold)), 4)}}


def flagged_share(features: np.ndarray, section: dict[str, Any]) -> float:
    """Share of rows ``features`` [N, D] that the ``ood`` section puts outside the range."""
    distances = mahalanobis_squared(features, np.asarray(section["mean"]),
                                    np.asarray(section["inverse_covariance"]))
    return float(np.mean(distances > float(section["threshold"])))


def projection_size(channels: int, rows: int) -> int:
    """How many principal directions of ``channels`` pooled features to keep when ``rows``
    images fit the range; 0: keep the features as they are (few enough already).

    A projected features output has one more value, the norm of what the projection
    leaves out, so ``size + 1`` stays within ``rows / ROWS_PER_DIMENSION``.
    """
    budget = min(MAX_FEATURES, rows // ROWS_PER_DIMENSION)
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
