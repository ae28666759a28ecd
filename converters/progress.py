"""Progress display for the converter's long steps (training, distillation, calibration).

On a terminal, a rich live bar on stderr; elsewhere (CI logs, pipes, pytest's
capture) plain timestamped lines on stderr, one at the start, about every
10 % and one at the end; nothing at all with ``CLINIBOX_QUIET=1``::

    with progress("distill", total=steps) as bar:
        for ...:
            bar.advance(1)
            bar.note("epoch 2/5 loss 0.31")
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import TextIO

QUIET_ENV = "CLINIBOX_QUIET"


def _quiet() -> bool:
    return os.environ.get(QUIET_ENV, "").strip().lower() not in ("", "0", "false", "no")


class Progress:
    """A progress display of ``total`` steps: a rich bar on a TTY, log lines otherwise.

    ``mode`` is ``"rich"``, ``"log"`` or ``"quiet"``; by default it is chosen from
    ``CLINIBOX_QUIET`` and whether ``stream`` (stderr) is a terminal.
    """

    def __init__(self, description: str, total: int, stream: TextIO | None = None,
                 mode: str | None = None) -> None:
        self.description = description
        self.total = max(0, int(total))
        self.completed = 0
        self.stream = stream if stream is not None else sys.stderr
        if mode is None:
            isatty = getattr(self.stream, "isatty", None)
            mode = "quiet" if _quiet() else ("rich" if isatty and isatty() else "log")
        if mode not in ("rich", "log", "quiet"):
            raise ValueError(f"progress mode must be rich, log or quiet, not {mode!r}")
        self.mode = mode
        self._note = ""
        self._next_decile = 1
        self._start = 0.0
        self._rich = None
        self._task = None

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> Progress:
        self._start = time.monotonic()
        if self.mode == "rich":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                console=Console(file=self.stream), transient=False)
            self._rich.start()
            self._task = self._rich.add_task(self.description, total=self.total or None,
                                             note="")
        elif self.mode == "log":
            self._log(f"started ({self.total} steps)")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif self.mode == "log":
            took = time.monotonic() - self._start
            state = f"failed ({exc_type.__name__})" if exc_type else "done"
            self._log(f"{state} {self.completed}/{self.total} in {took:.1f} s"
                      + (f" — {self._note}" if self._note else ""))

    # -- updates ---------------------------------------------------------------------------

    def advance(self, steps: int = 1) -> None:
        """Mark ``steps`` more steps done."""
        self.completed += steps
        if self._rich is not None:
            self._rich.update(self._task, advance=steps)
        elif self.mode == "log" and self.total:
            decile = self.completed * 10 // self.total
            if decile >= self._next_decile and self.completed < self.total:
                self._next_decile = decile + 1
                self._log(f"{100 * self.completed // self.total:3d} % "
                          f"({self.completed}/{self.total})"
                          + (f" — {self._note}" if self._note else ""))

    def note(self, text: str) -> None:
        """Set the status text shown next to the bar (and on the next log line)."""
        self._note = text
        if self._rich is not None:
            self._rich.update(self._task, note=text)

    def _log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp} {self.description}: {message}", file=self.stream, flush=True)


def progress(description: str, total: int) -> Progress:
    """A :class:`Progress` for ``total`` steps, shown on stderr (see the module docstring)."""
    return Progress(description, total)
