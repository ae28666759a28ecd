"""What a part of a USB stick came to (its bundle, its network setting, its model package), kept
for the console's banner: one JSON file a part, root's and readable by all, its ``outcome`` a
code and its other fields the result's own."""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from clinibox_common.fs import write_atomically

R = TypeVar("R")


def record(result: Any, path: Path) -> None:
    """Keep ``result`` (a dataclass with an ``outcome`` enum) at ``path``."""
    data = {**dataclasses.asdict(result), "outcome": result.outcome.value}
    write_atomically(path, json.dumps(data, ensure_ascii=False) + "\n", 0o644)


def read(path: Path, kind: type[R], outcome: type[Enum]) -> R | None:
    """The ``kind`` kept at ``path``, or None when there is none or it does not read back."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = {spec.name for spec in dataclasses.fields(kind)} - {"outcome"}  # type: ignore[arg-type]
        return kind(outcome(data["outcome"]), **{k: v for k, v in data.items() if k in names})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
