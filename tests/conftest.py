"""Markers for the whole suite: everything outside the unit tier is ``slow``.

``make test`` runs every tier; ``make test-fast`` runs the unit tier without
``slow`` tests (the integration, conversion and fuzzing tiers, and the few
unit tests that take seconds by nature).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

SLOW_TIERS = ("integration", "conversion", "fuzz")
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of the slow tiers ``slow``."""
    for item in items:
        tier = Path(str(item.path)).resolve().relative_to(HERE).parts[0]
        if tier in SLOW_TIERS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def english_terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run every test as on a terminal that names no language (``LANG=C.UTF-8``).

    The ``clinibox`` commands speak the terminal's language
    (``firmware_app/cli/language.py``) and the suite expects English; a test of the
    Chinese messages sets its own.
    """
    for name in ("LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
    yield



#: the signals whose handlers no test may leave changed (the run's own ``timeout`` and Ctrl-C
#: stop it through SIGTERM and SIGINT; xdist's workers and child reaping use the others)
GUARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1)


def _weight() -> tuple[int, int]:
    """The scheduling policy and nice value of the test process's main thread."""
    return os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)


@pytest.fixture(autouse=True)
def scheduling_kept() -> Iterator[None]:
    """Fail a test that leaves the test process's main thread at another weight.

    Code under test that lowers its own thread (``lower_this_thread``: the analysis's and the
    training's SCHED_IDLE) lowers the test process when called on its main thread, and every
    process a later test starts inherits it: a box whose receiving no longer outweighs its
    analysis, a spinner that no longer holds anything back. Such code runs on a thread of
    its own, or in a child process."""
    before = _weight()
    yield
    after = _weight()
    if after != before:
        os.sched_setscheduler(0, before[0], os.sched_param(0))  # the next test starts clean
        os.setpriority(os.PRIO_PROCESS, 0, before[1])
        pytest.fail(f"the test left the test process's main thread at another weight "
                    f"(policy, nice) {after} instead of {before} (run the code on a thread "
                    "of its own, or in a child process)", pytrace=False)


@pytest.fixture(autouse=True)
def signal_handlers_kept() -> Iterator[None]:
    """Fail a test that leaves a signal handler of the test process changed.

    A handler installed by code under test (``Appliance.serve`` takes SIGTERM and SIGINT)
    outlives the test: afterwards neither ``timeout`` nor Ctrl-C stops the run. Such code runs
    in a child process, or the test restores the handlers it changed. Set up before the test's
    function-scoped fixtures and torn down after them, so a fixture's own restoring counts.
    """
    before = {number: signal.getsignal(number) for number in GUARDED_SIGNALS}
    yield
    changed = [signal.Signals(number).name for number, handler in before.items()
               if signal.getsignal(number) is not handler]
    for number in GUARDED_SIGNALS:
        signal.signal(number, before[number])  # the next test starts clean
    if changed:
        pytest.fail(f"the test left the handlers of {', '.join(changed)} changed (run the "
                    "code in a child process, or restore them)", pytrace=False)
