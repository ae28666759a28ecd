"""What the converter knows about a model's inputs and outputs, shared by every step.

A ``ModelSpec`` is read from the user's config (never guessed from the
weights): one NCHW image input of a fixed shape, named outputs, and which
output carries the decision (the *score output*) with the activation that
turns it into probabilities.

* ``sigmoid``: the score output holds one logit per label (binary: one label,
  the positive class; multi-label: one per label).
* ``softmax``: the score output holds one logit per class, ``labels`` names
  them in order; ``negative_label`` (e.g. "normal") is the class that is *not*
  a finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ACTIVATIONS = ("sigmoid", "softmax")


@dataclass(frozen=True)
class ModelSpec:
    """Input/output contract of the model being converted."""

    input_shape: tuple[int, int, int, int]  # N, C, H, W with N == 1
    output_names: tuple[str, ...]
    score_output: str
    activation: str = "sigmoid"
    labels: tuple[str, ...] = ("finding",)
    negative_label: str | None = None
    input_name: str = "image"
    #: per-output shapes [1, ...], filled in once the model has run (export step)
    output_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.input_shape) != 4 or self.input_shape[0] != 1:
            raise ValueError(f"input shape must be 1,C,H,W; got {self.input_shape}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, not {self.activation!r}")
        if self.score_output not in self.output_names:
            raise ValueError(f"score output {self.score_output!r} is not among the outputs "
                             f"{list(self.output_names)}")
        if self.activation == "softmax" and len(self.labels) < 2:
            raise ValueError("a softmax model needs at least two labels (one per class)")
        if self.negative_label is not None and self.negative_label not in self.labels:
            raise ValueError(f"negative label {self.negative_label!r} is not among the "
                             f"labels {list(self.labels)}")

    def to_dict(self) -> dict:
        """The spec as plain JSON values (the conversion's state and report)."""
        return {"input_shape": list(self.input_shape), "outputs": list(self.output_names),
                "score_output": self.score_output, "activation": self.activation,
                "labels": list(self.labels), "negative_label": self.negative_label,
                "output_shapes": {k: list(v) for k, v in self.output_shapes.items()}}

    @property
    def channels(self) -> int:
        """Input channels (C)."""
        return self.input_shape[1]

    @property
    def multiclass(self) -> bool:
        """Softmax over more than two classes."""
        return self.activation == "softmax" and len(self.labels) > 2

    @property
    def positive_classes(self) -> list[int]:
        """Indices of the classes that count as a finding (all but the negative label)."""
        return [i for i, name in enumerate(self.labels) if name != self.negative_label]

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Score-output values [N, ...] → class probabilities [N, K] (float64).

        sigmoid: K = number of logits; softmax: K = number of classes.
        """
        s = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
        if self.activation == "sigmoid":
            return 1.0 / (1.0 + np.exp(-s))
        s = s - s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis=1, keepdims=True)

    def finding_probability(self, scores: np.ndarray) -> np.ndarray:
        """Probability [N] that an image holds a finding: the binary probability, or
        1 - p(negative class) for softmax with a negative label, else the largest
        positive-class probability."""
        p = self.probabilities(scores)
        if self.activation == "softmax" and self.negative_label is not None:
            return 1.0 - p[:, self.labels.index(self.negative_label)]
        return p[:, self.positive_classes].max(axis=1) if p.shape[1] > 1 else p[:, 0]

    def class_targets(self, labels: np.ndarray) -> np.ndarray:
        """Integer labels [N] → one-vs-rest targets [N, K] matching :meth:`probabilities`."""
        labels = np.asarray(labels, dtype=np.int64)
        k = len(self.labels) if self.activation == "softmax" else max(1, len(self.labels))
        if self.activation == "sigmoid" and k == 1:
            return (labels == 1)[:, None]
        return labels[:, None] == np.arange(k)[None, :]

    def finding_targets(self, labels: np.ndarray) -> np.ndarray:
        """Integer labels [N] → bool [N], True where the image holds a finding."""
        labels = np.asarray(labels, dtype=np.int64)
        if self.activation == "sigmoid" and len(self.labels) == 1:
            return labels == 1
        if self.negative_label is not None:
            return labels != self.labels.index(self.negative_label)
        return labels != 0
