"""What the box's learning service is doing, for ``clinibox learning status`` (issue 60).

The supervisor (``node.py``) writes its state into ``<state_dir>/learning/state.json`` when
it changes, and at least every :data:`HEARTBEAT_S` while it runs, so a reader can tell a
service that stopped (its last word older than :data:`STALE_AFTER_S`). The file holds codes
and counts only (the case file's lesions and clear images); written whole (a new file moved
over the old one), readable by the box's account.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

from clinibox_common.fs import write_atomically


class LearningState(str, Enum):
    """Where the box's SuperNode stands."""

    OUTSIDE_HOURS = "outside_hours"  # stopped: outside [learning] hours
    WAITING_FOR_ANALYSIS = "waiting_for_analysis"  # not started while images wait
    RESTARTING = "restarting"  # it exited; started again after a pause
    NO_CASES = "no_cases"  # nothing to train on (``reason`` says why)
    RUNNING = "running"  # it runs: the box takes part in the hospital's rounds
    PAUSED = "paused"  # stopped while images wait for analysis


#: the reasons of ``no_cases`` that are not a package's refusal codes
NO_LABELLED_CASES, CASE_FILE_FAILED = "no_labelled_cases", "case_file_failed"
#: how often a running supervisor writes its state even when it does not change
HEARTBEAT_S = 60.0
#: a state older than this is a service's last word, not what it does now
STALE_AFTER_S = 3 * HEARTBEAT_S
#: the file's name in the learning folder
STATE_FILE = "state.json"


@dataclass(frozen=True)
class StateRecord:
    """One state, since when, its last heartbeat, and the case file's counts."""

    state: LearningState
    since: float
    updated_at: float
    lesions: int = 0
    clear: int = 0
    reason: str = ""
    #: the model whose case file it is (its id), where the supervisor loaded one
    model: str = ""


def write_state(path: Path, record: StateRecord) -> None:
    """Write ``record`` at ``path`` whole (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps({**asdict(record), "state": record.state.value}))


def is_fresh(record: StateRecord, now: float) -> bool:
    """Whether ``record`` says what the service does now: written within
    :data:`STALE_AFTER_S`, and not from a clock that has since been set back by more than a
    heartbeat (a running service writes again at once after such a step)."""
    return -HEARTBEAT_S <= now - record.updated_at <= STALE_AFTER_S


def read_state(path: Path) -> StateRecord | None:
    """The record at ``path``, or None when there is none or it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return StateRecord(LearningState(data["state"]), float(data["since"]),
                           float(data["updated_at"]), int(data.get("lesions", 0)),
                           int(data.get("clear", 0)), str(data.get("reason", "")),
                           str(data.get("model", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
