"""The record of a federated fine-tuning run, as the hospital writes it and the converter
reads it for the model card (decision 0056).

One JSON file beside the aggregated head: which rounds ran, how many boxes took part in
each, how their heads were protected (SecAgg+'s shares and threshold; the clipping norm
and the noise multiplier of client-level differential privacy) and what that spent (ε at
δ, Rényi accounting). Boxes are counted, never named: the record holds no box, clinic or
case identifier. Keys are codes; a program reads them back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: the record's format; a reader refuses another
RECORD_SCHEMA = "clinibox.federated-run/1"


@dataclass(frozen=True)
class PrivacyBudget:
    """Client-level differential privacy of the run: each box's clipped head change is one
    contribution; ``epsilon`` is None when no noise was added (no DP guarantee)."""

    clipping_norm: float
    noise_multiplier: float
    delta: float
    epsilon: float | None
    accounting: str = "rdp"
    #: neighbouring runs: the same boxes, one box's data replaced (sensitivity 2 × clipping)
    neighbouring: str = "replace-one-box"


@dataclass(frozen=True)
class SecureAggregation:
    """SecAgg+'s settings: each box's mask is shared with ``shares`` others and rebuilt from
    ``threshold`` of them."""

    protocol: str
    shares: int
    threshold: int


@dataclass(frozen=True)
class FederatedRun:
    """What a run did; written once, when its last round is aggregated."""

    package: str
    rounds: int
    boxes_per_round: list[int]
    local_steps: int
    proximal: float
    privacy: PrivacyBudget
    secure_aggregation: SecureAggregation
    started: str
    ended: str
    flower_version: str
    #: the labelled cases the boxes held, by round (their sum: each box says how many cases
    #: it holds, never which, and nothing else)
    cases_per_round: list[int] = field(default_factory=list)
    #: the head the run started from ([C weights, bias], the package's): the converter puts
    #: the run's head where this one is in the source model
    initial_head: list[float] = field(default_factory=list)
    schema: str = field(default=RECORD_SCHEMA)

    def write(self, path: Path) -> Path:
        """The record as JSON at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, path: Path) -> FederatedRun:
        """The record at ``path``; ValueError when it is not one of this schema."""
        data = json.loads(path.read_text())
        if data.get("schema") != RECORD_SCHEMA:
            raise ValueError(f"{path}: not a federated run record of {RECORD_SCHEMA}")
        data["privacy"] = PrivacyBudget(**data["privacy"])
        data["secure_aggregation"] = SecureAggregation(**data["secure_aggregation"])
        return cls(**data)
