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
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: the record's format; a reader refuses another
RECORD_SCHEMA = "clinibox.federated-run/1"
#: the largest change a box lets one round ask of its head (the head's numbers are a few
#: units): its guard refuses a run that asks more (``firmware_app/learning/guard_mod.py``)
MAX_CLIPPING_NORM = 4.0
#: the fewest boxes a run can protect: SecAgg+ rebuilds a dropped box's mask from more than
#: half of the boxes and fewer than all of them, which 2 boxes cannot be
MIN_BOXES = 3
#: the most labelled cases one box trains on in a round (a 2-core box: 24 maps of 32×32 each
#: is 96 KiB a case); the hospital leaves a box's count beyond it out of the run's record
MAX_CASES = 5000
#: the environment variable that names the folder a SuperLink's runs are kept in: clinibox's
#: ServerApp reads and writes nowhere else (``clinibox central superlink --runs`` sets it)
RUNS_ENV = "CLINIBOX_FEDERATED_RUNS"
#: where a hospital's runs are kept unless told otherwise
DEFAULT_RUNS = "/var/lib/clinibox-central/federated/runs"
#: how long a round waits for its boxes to connect unless the run says (``boxes-wait``): the
#: boxes' default learning hours (22:00 to 06:00), so a run started before them finds its boxes
BOXES_WAIT_S = 8 * 3600.0
#: the longest ``boxes-wait`` a run may set (Flower's own wait)
MAX_BOXES_WAIT_S = 24 * 3600.0


def within_runs(path: Path, runs: Path) -> bool:
    """Whether ``path`` lies inside the runs folder ``runs`` (links followed)."""
    return path.resolve().is_relative_to(runs.resolve()) and \
        path.resolve() != runs.resolve()


def directly_in_runs(path: Path, runs: Path) -> bool:
    """Whether ``path`` is a run's folder: a child of the runs folder ``runs`` (links
    followed), never a folder inside another run's."""
    return path.resolve().parent == runs.resolve()


#: the bounds of a run's other settings (beyond them a box's training diverges or a run never
#: ends): rounds, each box's steps per round, FedProx's pull and the noise multiplier
MAX_ROUNDS = 1000
MAX_LOCAL_STEPS = 10_000
MAX_PROXIMAL = 100.0
MAX_NOISE_MULTIPLIER = 100.0
#: the steepest heatmap a run may ask a box's head for (the package's is a few units)
MAX_SHARPNESS = 64.0


def training_in_bounds(local_steps: int, learning_rate: float, proximal: float,
                       sharpness: float = 1.0) -> bool:
    """Whether a box's training settings lie within the bounds the command, the ServerApp
    and each box's ClientApp apply."""
    numbers = (learning_rate, proximal, sharpness)
    return (all(math.isfinite(x) for x in numbers) and 1 <= local_steps <= MAX_LOCAL_STEPS
            and 0 < learning_rate <= 1 and 0 <= proximal <= MAX_PROXIMAL
            and 0 < sharpness <= MAX_SHARPNESS)


@dataclass(frozen=True)
class RunSettings:
    """What a run asks of the boxes (the Flower App's run configuration, by its own keys)."""

    boxes: int
    rounds: int
    local_steps: int
    learning_rate: float
    proximal: float
    clipping_norm: float
    noise_multiplier: float
    target_delta: float
    secagg_threshold: int

    def problem(self) -> str | None:
        """The code of the first setting the boxes or the ServerApp would refuse, or None."""
        numbers = (self.learning_rate, self.proximal, self.clipping_norm,
                   self.noise_multiplier, self.target_delta)
        if not all(math.isfinite(x) for x in numbers):
            return "setting_not_a_number"
        if self.boxes < MIN_BOXES:
            return "too_few_boxes"
        if not self.boxes / 2 < self.secagg_threshold < self.boxes:
            return "secagg_threshold_out_of_range"
        if not 0 < self.clipping_norm <= MAX_CLIPPING_NORM:
            return "clipping_norm_out_of_bounds"
        if not 0 <= self.noise_multiplier <= MAX_NOISE_MULTIPLIER:
            return "noise_multiplier_out_of_range"
        if not 0 < self.target_delta < 1:
            return "target_delta_out_of_range"
        if not (1 <= self.rounds <= MAX_ROUNDS
                and training_in_bounds(self.local_steps, self.learning_rate, self.proximal)):
            return "training_settings_out_of_range"
        return None

    def run_config(self) -> dict[str, int | float]:
        """The settings by the run configuration's keys (``flwr run --run-config``)."""
        return {"boxes": self.boxes, "rounds": self.rounds, "local-steps": self.local_steps,
                "learning-rate": self.learning_rate, "proximal": self.proximal,
                "clipping-norm": self.clipping_norm,
                "noise-multiplier": self.noise_multiplier,
                "target-delta": self.target_delta,
                "secagg-threshold": self.secagg_threshold}


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
    #: Flower's number of the run, which the folder's ``run.claim`` names (0: a record written
    #: before runs claimed their folders, which the converter refuses)
    run_id: int = 0
    #: the head the run started from ([C weights, bias], the package's): the converter puts
    #: the run's head where this one is in the source model
    initial_head: list[float] = field(default_factory=list)
    schema: str = field(default=RECORD_SCHEMA)

    def write(self, path: Path, *, exclusive: bool = False) -> Path:
        """The record as JSON at ``path`` (``exclusive``: FileExistsError if one is there)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x" if exclusive else "w", encoding="utf-8") as out:
            out.write(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
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
