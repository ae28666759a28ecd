"""The worker holds a job while objects keep arriving, and never longer than its bound."""

from __future__ import annotations

import threading
import time

import pytest

from firmware_app.service.arrivals import LONGEST_HOLD_S, QUIET_S, Arrivals


def test_no_arrival_no_hold_and_a_stored_object_wakes_the_worker():
    wake = threading.Event()
    arrivals = Arrivals(wake)
    assert arrivals.hold(threading.Event()) < QUIET_S
    arrivals.stored()
    assert wake.is_set()
    held = arrivals.hold(threading.Event())
    assert QUIET_S * 0.8 <= held < LONGEST_HOLD_S  # until the burst paused


@pytest.mark.slow
def test_a_burst_that_never_pauses_holds_a_job_at_most_the_bound():
    arrivals, done = Arrivals(threading.Event()), threading.Event()

    def modality() -> None:  # an object every 20 ms, never pausing
        while not done.is_set():
            arrivals.stored()
            time.sleep(0.02)

    sender = threading.Thread(target=modality)
    sender.start()
    try:
        held = arrivals.hold(threading.Event())
    finally:
        done.set()
        sender.join()
    assert LONGEST_HOLD_S <= held < LONGEST_HOLD_S + 2.0


def test_stopping_ends_a_hold():
    arrivals, stop = Arrivals(threading.Event()), threading.Event()
    arrivals.last = time.monotonic() + 60  # arrivals for a minute
    threading.Timer(0.1, stop.set).start()
    assert arrivals.hold(stop) < LONGEST_HOLD_S
