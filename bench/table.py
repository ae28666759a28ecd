"""The benchmarks' records as one Markdown table: each script's figures × CPUs.

``render(results_dir)`` reads ``<results_dir>/<cpu>/*.json`` (the records ``bench.common.save``
writes: ``script``, ``measured_at``, ``commit``, ``machine``, ``figures``, ``notes``; a file may
also hold a list of them), keeps the newest record per script and CPU, and returns one table:
a row per figure, with its unit and the reference it was compared to in the same run, and a
column per CPU; each script's first row says when and at which commit it was measured.
Standard library only: the documentation build loads this file by its path.

    python -m bench.table [RESULTS_DIR]     # prints the table (default: bench/results)
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

MISSING = "—"


def _when(record: dict[str, Any]) -> dt.datetime:
    """The record's ``measured_at`` as an aware datetime (naive ones are UTC)."""
    when = dt.datetime.fromisoformat(str(record["measured_at"]).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def newest_records(results_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest record per (script, CPU slug) under ``results_dir``; ValueError naming the
    file when one is not a record."""
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(Path(results_dir).glob("*/*.json")):
        loaded = json.loads(path.read_text(encoding="utf-8"))
        for record in loaded if isinstance(loaded, list) else [loaded]:
            if not (isinstance(record, dict) and {"script", "measured_at", "figures"} <= set(
                    record) and isinstance(record["figures"], dict)):
                raise ValueError(f"{path}: not a benchmark record")
            key = (str(record["script"]), path.parent.name)
            if key not in newest or _when(record) > _when(newest[key]):
                newest[key] = record
    return newest


def _number(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".")
    return str(value)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|") or MISSING


def _parts(entry: Any) -> tuple[Any, str, str]:
    """(value, unit, reference) of a figure: a dict or a plain number."""
    if isinstance(entry, dict):
        return entry.get("value"), str(entry.get("unit") or ""), str(entry.get("reference") or "")
    return entry, "", ""


def render(results_dir: Path) -> str:
    """One Markdown table of the newest record per script and CPU under ``results_dir``
    (an empty string when there is none)."""
    records = newest_records(Path(results_dir))
    if not records:
        return ""
    cpus = sorted({cpu for _script, cpu in records})
    lines = ["| Benchmark | Figure | Unit | Reference (same run) | " + " | ".join(cpus) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---:" for _ in cpus) + " |"]
    for script in sorted({s for s, _cpu in records}):
        mine = {cpu: records[(script, cpu)] for cpu in cpus if (script, cpu) in records}
        measured = [f"{_when(mine[cpu]).date().isoformat()} ({mine[cpu].get('commit', '?')})"
                    if cpu in mine else MISSING for cpu in cpus]
        lines.append(f"| `{script}` | measured (commit) | | | "
                     + " | ".join(_cell(m) for m in measured) + " |")
        names: list[str] = []
        for record in sorted(mine.values(), key=_when, reverse=True):  # newest's order first
            names += [n for n in record["figures"] if n not in names]
        for name in names:
            units, references, values = [], [], []
            for cpu in cpus:
                record = mine.get(cpu)
                if record is None or name not in record["figures"]:
                    values.append(MISSING)
                    continue
                value, unit, reference = _parts(record["figures"][name])
                values.append(_number(value))
                units += [unit] if unit and unit not in units else []
                references += [reference] if reference and reference not in references else []
            lines.append(f"| `{script}` | {_cell(name)} | {_cell(' / '.join(units))} | "
                         f"{_cell(' / '.join(references))} | "
                         + " | ".join(_cell(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the table of ``argv[0]`` (default: bench/results next to this file)."""
    args = sys.argv[1:] if argv is None else argv
    results = Path(args[0]) if args else Path(__file__).resolve().parent / "results"
    print(render(results) or f"No benchmark results under {results}.", end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
