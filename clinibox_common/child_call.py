"""One call in a fresh interpreter: ``python -m MODULE``, arguments pickled on its stdin, its
answer's bytes on its stdout.

For work whose imports should not stay in the calling process (the runtime
timing's runtimes, the PDF writer and its fonts): the child exits after one
call and gives everything back. A plain child process, not multiprocessing,
whose spawning leaves a resource-tracker process beside the caller for good.
Only this project's own modules are run, with arguments this project made.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from clinibox_common.errors import CliniboxError


class ChildEnded(CliniboxError, ChildProcessError):
    """The child ended with a non-zero ``status`` (a signal: negative); a ChildProcessError
    too, for callers that treat any failed child alike."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def crashed(self) -> bool:
        """Killed by a signal (a segmentation fault, an abort, an illegal instruction)."""
        return self.status < 0


def call_child(module: str, arguments: Any, timeout: float,
               interpreter: Sequence[str] = (), env: dict[str, str] | None = None) -> bytes:
    """Run ``python -m module`` on ``arguments`` and return what it answered.

    ``interpreter`` replaces this interpreter (``qemu-x86_64 -cpu EPYC-Rome python``:
    the child on an emulated CPU), ``env`` the environment. :class:`ChildEnded` (a
    ChildProcessError) when it ends with a non-zero status (a signal: negative), naming
    its last words; ``subprocess.TimeoutExpired`` (the child killed) past ``timeout``
    seconds.
    """
    done = subprocess.run([*(interpreter or [sys.executable]), "-m", module],
                          input=pickle.dumps(arguments), env=env,
                          capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise ChildEnded(done.returncode, f"status {done.returncode}: " + " / ".join(said))
    return done.stdout


def answer_parent(work: Callable[[Any], bytes]) -> None:
    """The child's side of :func:`call_child`: ``work(arguments)``'s bytes go to the parent;
    whatever else is printed (by a runtime, a font library) goes to stderr."""
    answer = os.dup(1)
    os.dup2(2, 1)
    arguments = pickle.loads(sys.stdin.buffer.read())
    made = work(arguments)
    with os.fdopen(answer, "wb") as out:
        out.write(made)
