"""A review of the live engine: each test shows one defect found by reading the code (it failed
before its fix): the capture, analysis and keeper threads, the states the page is told, what a
session keeps, and the frame files the viewer reads."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pydicom
import pytest

from clinibox_common.contracts.statuses import LiveKept, LiveRequest, LiveState
from engine.inference.postprocess import Box
from firmware_app.live import engine as engine_module
from firmware_app.live.engine import LiveEngine
from firmware_app.live.source import Captured, SourceUnavailable
from firmware_app.live.tracker import LiveTracker
from firmware_app.settings.box import from_dict
from firmware_app.storage import live_sessions
from firmware_app.storage.live_frames import FrameWriter, read_state, write_stopped
from tests.box_harness import wait_for
from tests.live_keeper import keeper_box


def _config(**live):
    return from_dict({"live": {"stall_seconds": 0.5, **live,
                               "sources": [{"name": "us-1", "url": "/srv/demo.mp4"}]}})


def _captured(level: int = 120, seed: int = 0) -> Captured:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(level, 40.0, (48, 64, 3)), 0, 255).astype(np.uint8)
    return Captured(av.VideoFrame.from_ndarray(pixels, format="rgb24"), 0.0, None)


def _engine(tmp_path: Path, keeper=None, **live) -> LiveEngine:
    config = _config(**live)
    writer = FrameWriter(tmp_path / "live", "us-1", config.live.ring_seconds)
    return LiveEngine(config.live.sources[0], config.live, None, writer, keeper,
                      no_model="no model here")


class _FakeInput:
    """A source that gives ``frames`` then ends (a file, not looped), or as ``frames`` says."""

    def __init__(self, frames: Iterator[Captured]) -> None:
        self._frames = frames
        self.broken_packets = 0

    def frames(self) -> Iterator[Captured]:
        yield from self._frames
        raise SourceUnavailable("us-1: the stream ended", ended=True)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _analysing(engine: LiveEngine) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=engine._analyse_loop, args=(stop,), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=10)


# -- the states the page is told --------------------------------------------------------------

def test_a_frame_taken_after_the_source_ended_does_not_hide_that_it_ended(tmp_path, monkeypatch):
    """The capture thread leaves the file's last frame in the slot and says STOPPED; the
    analysis takes that frame afterwards. Before: it overwrote STOPPED with the frame's own
    state, and a second later said STALLED, for ever (a file source that has ended)."""
    engine = _engine(tmp_path)
    monkeypatch.setattr(engine_module, "VideoInput",
                        lambda source, config: _FakeInput(iter([_captured()])))
    engine.capture(threading.Event())  # one frame into the slot, then the end of the file
    assert engine.state == LiveState.STOPPED and engine._slot is not None
    with _analysing(engine):
        wait_for(lambda: engine.analysed == 1, 10, "the last frame analysed")
        assert engine.state == LiveState.STOPPED
        wait_for(lambda: (read_state(tmp_path / "live", "us-1") or {}).get("analysed") == 1,
                 10, "the state written")
    assert read_state(tmp_path / "live", "us-1")["state"] == LiveState.STOPPED


def test_a_source_no_model_reads_that_stops_sending_is_said_stalled(tmp_path):
    """Before: only RUNNING turned STALLED; a source shown without a model (or with the probe
    off the skin) kept saying so while no frame came."""
    engine = _engine(tmp_path)
    engine._slot = _captured()
    with _analysing(engine):
        wait_for(lambda: engine.analysed == 1, 10, "the frame analysed")
        wait_for(lambda: engine.state == LiveState.STALLED, 10, "the stall said")
    assert engine.detail == {"seconds": 0.5}


@pytest.mark.parametrize(("url", "lost"), [
    ("udp://0.0.0.0:5004", LiveState.NETWORK_LOST),
    ("rtsp://10.0.0.5/live", LiveState.NETWORK_LOST),
    ("http://10.0.0.5/video.mjpg", LiveState.NETWORK_LOST),
    ("/dev/video0", None), ("/srv/demo.mp4", None)])
def test_a_network_stream_that_stops_is_a_network_fault_not_a_cable(tmp_path, url, lost):
    """Before: a network stream that stopped was told to check the cable (disconnected,
    stalled); a capture card's (and a file's) words stay as they were."""
    config = from_dict({"live": {"stall_seconds": 0.5,
                                 "sources": [{"name": "us-1", "url": url}]}})
    writer = FrameWriter(tmp_path / "live", "us-1", config.live.ring_seconds)
    engine = LiveEngine(config.live.sources[0], config.live, None, writer, None,
                        no_model="no model here")
    engine._source_state(LiveState.DISCONNECTED, {"error": "gone"})
    assert engine.state == (lost or LiveState.DISCONNECTED)
    engine._fault = None
    engine._slot = _captured()
    with _analysing(engine):
        wait_for(lambda: engine.analysed == 1, 10, "the frame analysed")
        wait_for(lambda: engine.state not in (LiveState.NO_MODEL, LiveState.RUNNING), 10,
                 "the stop said")
    assert engine.state == (lost or LiveState.STALLED)


def test_an_unforeseen_fault_opening_the_source_does_not_end_the_capture(tmp_path,
                                                                          monkeypatch):
    """Before: an exception other than SourceUnavailable/StreamRefused while opening (a
    MemoryError under [live] memory_mb, a PyAV error not foreseen) ended the capture thread
    silently; the process lived on, showing the last state for ever, and was never
    restarted."""
    monkeypatch.setattr(engine_module, "MAX_BACKOFF", 0.05)
    opened = []

    def open_source(source, config):
        opened.append(1)
        if len(opened) == 1:
            raise MemoryError("the address space bound")
        return _FakeInput(iter([_captured()]))

    monkeypatch.setattr(engine_module, "VideoInput", open_source)
    engine = _engine(tmp_path)
    stop = threading.Event()
    thread = threading.Thread(target=engine.capture, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: engine.captured == 1, 10, "the source opened again and read")
    stop.set()
    thread.join(timeout=10)
    assert len(opened) >= 2 and engine.state == LiveState.STOPPED


# -- stopping ---------------------------------------------------------------------------------

class _RecordingKeeper:
    """A keeper that says whether the capture was still reading when it was closed."""

    def __init__(self, reading: threading.Event, release: threading.Event) -> None:
        self.reading, self.release = reading, release
        self.closed_while_reading: bool | None = None

    def view(self) -> None:
        return None

    def observe(self, *args) -> None:
        pass

    def picture_changed(self, mm_per_pixel: float) -> None:
        pass

    def close(self) -> None:
        self.closed_while_reading = self.reading.is_set()
        self.release.set()


def test_on_stop_the_sessions_frames_are_kept_before_waiting_on_the_source(tmp_path,
                                                                           monkeypatch):
    """SIGTERM: the service kills the process 15 s later. Before: the engine first waited
    (up to 10 s) for a capture thread blocked in FFmpeg's read, and only then flushed the
    keeper: a held lesion's frame could be lost. The keeper needs only the analysis stopped."""
    reading, release = threading.Event(), threading.Event()

    def blocked() -> Iterator[Captured]:
        reading.set()
        release.wait(8)  # a read that does not return soon (a stalled stream)
        reading.clear()
        return
        yield

    monkeypatch.setattr(engine_module, "VideoInput",
                        lambda source, config: _FakeInput(blocked()))
    keeper = _RecordingKeeper(reading, release)
    engine = _engine(tmp_path, keeper=keeper)
    stop = threading.Event()
    thread = threading.Thread(target=engine.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(reading.is_set, 10, "the capture reading")
    stop.set()
    thread.join(timeout=15)
    assert keeper.closed_while_reading is True


# -- what a session keeps ---------------------------------------------------------------------

def _lesion(score: float) -> Box:
    return Box(10.0, 10.0, 30.0, 30.0, score, "lesion")


def test_a_lesion_best_seen_before_it_was_held_is_kept(tmp_path):
    """Before: the keeper held a frame only when the track's best score was on a frame where
    it was already held; a lesion seen strongest on its first frame (the usual case) was
    never kept."""
    box = keeper_box(tmp_path)
    tracker = LiveTracker(hold_frames=3)
    for seq, score in enumerate([0.9, 0.8, 0.8, 0.8], start=1):
        box.clock[0] = seq * 0.1
        on, closed = tracker.update(seq, [_lesion(score)])
        box.keeper.observe(np.full((48, 64), seq * 40, np.uint8), on, closed, seq)
    assert on[0].held
    for seq in range(5, 10):
        box.clock[0] = seq * 0.1
        on, closed = tracker.update(seq, [])
        box.keeper.observe(np.full((48, 64), 10, np.uint8), on, closed, seq)
    box.keeper.close()
    with box.database() as conn:
        kept = live_sessions.kept_by(conn, box.session.id)
    assert [k.kind for k in kept] == [LiveKept.KEY_FRAME]
    assert kept[0].score == pytest.approx(0.8)  # the best of the frames it was held on
    assert box.keeper.auto_kept == 1


class _HeldLander:
    """A lander that waits for ``go`` before landing (a slow disk)."""

    def __init__(self, lander) -> None:
        self.lander, self.go, self.waiting = lander, threading.Event(), threading.Event()

    def land(self, data: bytes, **kwargs):
        self.waiting.set()
        self.go.wait(10)
        return self.lander.land(data, **kwargs)


def test_a_keep_in_flight_when_the_session_changes_counts_for_its_own_session(tmp_path):
    """Before: the writer thread added a landed object of the ended session to the count of
    the next one (``kept`` shared by both threads), and numbered that session's objects
    from it."""
    held: list[_HeldLander] = []
    box = keeper_box(tmp_path, wrap=lambda lander: held.append(_HeldLander(lander)) or held[0])
    lander, keeper = held[0], box.keeper
    with box.database() as conn:
        live_sessions.ask(conn, box.session.id, LiveRequest.KEY_FRAME, "nurse")
    keeper.observe(np.full((48, 64), 80, np.uint8), [], [], 1)
    wait_for(lander.waiting.is_set, 10, "the first session's frame being written")
    with box.database() as conn:
        live_sessions.end(conn, box.session.id)
        second = live_sessions.start(conn, source="us-1", started_by="nurse")
    box.clock[0] = 1.0
    keeper.observe(np.full((48, 64), 90, np.uint8), [], [], 2)
    assert keeper.view()["id"] == second.id
    lander.go.set()
    wait_for(lambda: _kept(box, box.session.id) == 1, 10, "the first session's frame kept")
    assert keeper.view() == {"id": second.id, "kept": 0, "error": ""}
    with box.database() as conn:
        live_sessions.ask(conn, second.id, LiveRequest.KEY_FRAME, "nurse")
    box.clock[0] = 2.0
    keeper.observe(np.full((48, 64), 100, np.uint8), [], [], 3)
    keeper.close()
    assert keeper.view()["kept"] == 1
    with box.database() as conn:
        paths = [r[0] for r in conn.execute("SELECT spool_path FROM instances ORDER BY id")]
    assert [pydicom.dcmread(p).InstanceNumber for p in paths] == [1, 1]


def _kept(box, session_id: int) -> int:
    with box.database() as conn:
        return len(live_sessions.kept_by(conn, session_id))


def test_a_keep_asked_just_before_the_session_ended_is_kept_for_that_session(tmp_path):
    """Before: a request filed in the last moments of a session (before the keeper's next
    look, or while the source was away) was never read: not kept, never answered, while
    the page had said "asked"."""
    box = keeper_box(tmp_path)
    box.keeper.observe(np.full((48, 64), 80, np.uint8), [], [], 1)
    with box.database() as conn:
        asked = live_sessions.ask(conn, box.session.id, LiveRequest.KEY_FRAME, "nurse", seq=1)
        live_sessions.end(conn, box.session.id)
    box.clock[0] = 1.0
    box.keeper.observe(np.full((48, 64), 200, np.uint8), [], [], 2)
    box.keeper.close()
    with box.database() as conn:
        outcome = conn.execute("SELECT outcome FROM live_requests WHERE id = ?",
                               (asked,)).fetchone()[0]
        path = conn.execute("SELECT spool_path FROM instances").fetchone()[0]
    assert outcome == LiveKept.KEY_FRAME and _kept(box, box.session.id) == 1
    assert int(pydicom.dcmread(path).pixel_array.mean()) == 80  # the frame it showed


# -- the frame files ---------------------------------------------------------------------------

def test_a_crashed_writers_partial_files_are_removed(tmp_path):
    """Before: a process killed while replacing a file left ``.*.part`` files on the tmpfs
    (memory) for ever; the next process removed only the JPEGs."""
    frames = tmp_path / "live" / "us-1" / "frames"
    frames.mkdir(parents=True)
    (frames / ".7.jpg.4242.part").write_bytes(b"x" * 100)
    (frames.parent / ".state.json.4242.part").write_bytes(b"{")
    FrameWriter(tmp_path / "live", "us-1", 10.0)
    assert sorted(p.name for p in frames.parent.rglob("*")) == ["frames"]


def test_frame_numbers_go_on_after_the_live_process_restarts(tmp_path):
    """Before: a restarted live process (a crash, a model switched, the service restarted)
    numbered its frames from 1 again. An open page asks for frames after the last one it
    drew (``next?after=9000``): it stayed on its old frame until the new process reached
    9000; and a "keep this frame" for the old frame 40 kept the new process's frame 40."""
    engine = _engine(tmp_path)
    for seed in range(3):
        engine.process(_captured(seed=seed))
    assert engine._seq == 3
    write_stopped(tmp_path / "live", "us-1", str(LiveState.DECODER_FAILED), {"status": -9})
    again = _engine(tmp_path)
    again.process(_captured(seed=9))
    state = read_state(tmp_path / "live", "us-1")
    assert [f["seq"] for f in state["frames"]] == [4]
