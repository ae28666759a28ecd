"""The head a box can train: a 1×1 convolution over the final feature maps, pooled by
log-sum-exp into the image's lesion logit.

A package whose image-level logit is built this way (the demo model's ``cam`` is a 1×1
convolution of its final features and ``lesion_logit`` its log-sum-exp pool, sharpness r)
can be fine-tuned on a 2-core box without PyTorch: the backbone stays frozen, its final maps
[C, h·w] are computed once per labelled case by the runtime, and only the C weights and the
bias move. The heatmap stays the pooled score's own map, so it still points at what the
score saw.

For one image with maps F [C, P] and head (w, b):

    cam_p  = w · F[:, p] + b
    logit  = max(cam) + log(mean_p exp(r (cam_p − max(cam)))) / r

and ∂logit/∂cam_p is the softmax of r·cam, so the gradient of the binary cross-entropy is
(σ(logit) − y) · (Σ_p s_p F[:, p], 1). :func:`fine_tune` runs Adam on it, pulled towards an
anchor head (the round's global head: FedProx's proximal term), for a number of steps.
Everything is float64 numpy; a case's maps are float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the demo model's log-sum-exp sharpness (demo/model.py LSE_SHARPNESS)
DEFAULT_SHARPNESS = 4.0


@dataclass(frozen=True)
class CamHead:
    """A 1×1 convolution's weights [C] and bias, and the log-sum-exp pool's sharpness."""

    weights: np.ndarray
    bias: float
    sharpness: float = DEFAULT_SHARPNESS

    @property
    def channels(self) -> int:
        """C: how many feature maps the head reads."""
        return int(self.weights.size)

    def as_vector(self) -> np.ndarray:
        """The trainable numbers in one vector [C + 1]: the weights, then the bias."""
        return np.concatenate([np.asarray(self.weights, np.float64).reshape(-1),
                               [float(self.bias)]])

    def with_vector(self, vector: np.ndarray) -> CamHead:
        """This head with the numbers of ``vector`` [C + 1] (as :meth:`as_vector` lays them)."""
        vector = np.asarray(vector, np.float64).reshape(-1)
        if vector.size != self.channels + 1:
            raise ValueError(f"a head over {self.channels} maps has {self.channels + 1} "
                             f"numbers; got {vector.size}")
        return CamHead(vector[:-1].copy(), float(vector[-1]), self.sharpness)

    def logits(self, maps: np.ndarray) -> np.ndarray:
        """The lesion logit of each case: ``maps`` [N, C, P] (or [N, C, h, w])."""
        return _forward(self.as_vector(), _flat(maps, self.channels), self.sharpness)[0]


def _flat(maps: np.ndarray, channels: int) -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim < 3 or maps.shape[1] != channels:
        raise ValueError(f"maps must be [N, {channels}, ...]; got {list(maps.shape)}")
    return maps.reshape(maps.shape[0], channels, int(np.prod(maps.shape[2:])))


def _forward(vector: np.ndarray, maps: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N], softmax of r·cam [N, P]) for head ``vector`` over ``maps`` [N, C, P]."""
    cam = np.einsum("c,ncp->np", vector[:-1], maps, dtype=np.float64) + vector[-1]
    top = cam.max(axis=1)
    e = np.exp(r * (cam - top[:, None]))
    total = e.sum(axis=1)
    logits = top + np.log(total / cam.shape[1]) / r
    return logits, e / total[:, None]


def loss_gradient(vector: np.ndarray, maps: np.ndarray, labels: np.ndarray,
                  r: float = DEFAULT_SHARPNESS) -> tuple[float, np.ndarray]:
    """Mean binary cross-entropy of head ``vector`` on ``maps`` [N, C, P] with ``labels``
    [N] (1: lesion), and its gradient [C + 1]."""
    logits, soft = _forward(vector, maps, r)
    y = np.asarray(labels, np.float64)
    loss = float(np.mean(np.logaddexp(0.0, logits) - y * logits))
    d = 1.0 / (1.0 + np.exp(-logits)) - y
    grad_w = np.einsum("n,np,ncp->c", d, soft, maps, dtype=np.float64) / len(y)
    return loss, np.concatenate([grad_w, [float(d.mean())]])


@dataclass(frozen=True)
class TrainingSettings:
    """How a head is fine-tuned: Adam's steps and rate, the pull towards the anchor
    (FedProx's μ), and an L2 pull towards the anchor as weight decay."""

    steps: int = 40
    learning_rate: float = 0.02
    proximal: float = 0.1


def fine_tune(head: CamHead, maps: np.ndarray, labels: np.ndarray,
              settings: TrainingSettings = TrainingSettings(),
              anchor: CamHead | None = None) -> CamHead:
    """``head`` after ``settings.steps`` Adam steps on the cases (``maps`` [N, C, ...],
    ``labels`` [N]); ``anchor`` (default: ``head``) is what the proximal term pulls
    towards. Full batch: a box's labelled cases fit in memory."""
    flat = _flat(maps, head.channels)
    labels = np.asarray(labels, np.float64).reshape(-1)
    if labels.size != flat.shape[0]:
        raise ValueError(f"{flat.shape[0]} cases but {labels.size} labels")
    if labels.size == 0:
        return head
    w = head.as_vector()
    pull = (anchor or head).as_vector()
    first, second = np.zeros_like(w), np.zeros_like(w)
    for step in range(1, settings.steps + 1):
        _, g = loss_gradient(w, flat, labels, head.sharpness)
        g = g + settings.proximal * (w - pull)
        first = 0.9 * first + 0.1 * g
        second = 0.999 * second + 0.001 * g * g
        w = w - settings.learning_rate * (first / (1 - 0.9**step)) / (
            np.sqrt(second / (1 - 0.999**step)) + 1e-8)
    return head.with_vector(w)
