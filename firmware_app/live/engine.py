"""The real-time loop of one live source: capture, newest frame first, analyse, show, keep.

Two threads. The capture thread (``source.VideoInput``) decodes every frame as it arrives
and leaves only the newest in a one-frame slot: a frame not taken before the next arrives is
dropped (counted), so the analysis never falls behind the picture and no queue grows. The
analysis thread takes the newest frame, judges the picture (``picture.PictureWatch``: no
signal, probe not on the skin, frozen), runs the model on the image area the way the box
runs it on a pushed image (``inference/runner.py``: the same preprocessing and validated-
range guard), follows the lesions (``tracker.LiveTracker``: shown once held), writes the
frame and its overlay for the page (``storage/live_frames.py``) and hands the session's
key frames to the ``Keeper``. Every state the page shows is a ``LiveState`` code.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import deque
from typing import Any

import numpy as np
from PIL import Image

from clinibox_common.contracts.statuses import LiveHint, LiveState
from clinibox_common.redaction import redact_text
from engine.imaging import live_capture
from engine.inference.assessment import frame_blockers
from engine.inference.lesions import lesion_from_box
from engine.inference.runner import ModelRunner
from firmware_app.live.keeper import FOOTAGE_FPS, Keeper
from firmware_app.live.picture import PictureWatch
from firmware_app.live.source import (
    Captured,
    SourceUnavailable,
    StreamRefused,
    VideoInput,
    source_secrets,
)
from firmware_app.live.tracker import LiveTracker, Track
from firmware_app.settings.live import LiveConfig, LiveSource
from firmware_app.storage.live_frames import FrameWriter

log = logging.getLogger(__name__)

#: the longest wait before opening a source again (seconds)
MAX_BACKOFF = 5.0
#: a frozen or unanalysable picture is still shown, this often (seconds)
IDLE_FRAME_SECONDS = 1.0
#: the state file is written at least this often while no frame comes (seconds)
STATE_SECONDS = 0.5
#: a source's timestamps further apart than this (seconds) are a jump of its clock
MAX_FRAME_GAP = 1.0
#: the states a frame itself implies (``process``): turned STALLED when frames stop coming
FRAME_STATES = frozenset({LiveState.RUNNING, LiveState.NO_MODEL, LiveState.NO_SIGNAL,
                          LiveState.NO_CONTACT, LiveState.FROZEN})


class LiveEngine:
    """One source's capture and analysis, until ``stop``."""

    def __init__(self, source: LiveSource, config: LiveConfig, runner: ModelRunner | None,
                 writer: FrameWriter, keeper: Keeper | None, no_model: str = "") -> None:
        self.source = source
        self.config = config
        self.runner = runner
        self.writer = writer
        self.keeper = keeper
        self.no_model = no_model
        #: what no state or log line may carry (the source's password)
        self.secrets = source_secrets(source)
        self.watch = PictureWatch(config.frozen_seconds, source.modality)
        self.tracker = LiveTracker(config.hold_frames)
        self._cond = threading.Condition()
        self._slot: Captured | None = None
        #: what the capture thread last said of the source (disconnected, refused, ended),
        #: until it captures a frame again: a frame captured before it does not hide it
        self._fault: tuple[LiveState, dict[str, Any]] | None = None
        self.captured = self.dropped = self.analysed = 0
        self.broken_packets = 0
        self.state = LiveState.STARTING
        self.detail: dict[str, Any] = {}
        self.hint = LiveHint.NONE
        self.size: tuple[int, int] | None = None
        #: the picture size the region and scale were measured on: the source's word, else
        #: the first picture seen
        self.reference: tuple[int, int] | None = source.reference_size
        self._times: deque[float] = deque()
        self._last_frame_at = 0.0
        self._last_shown = 0.0
        self._last_state = 0.0
        #: the source's clock for clips (``_source_time``): its last timestamp, and the
        #: offset that makes it continuous
        self._stamp_last: float | None = None
        self._stamp_offset = 0.0
        self._stamp_time = 0.0
        #: frame numbers go on from the previous process's (an open page asks for frames
        #: after the last it drew; a request names the frame it showed)
        self._seq = writer.last_seq

    # -- capture ---------------------------------------------------------------------------
    def capture(self, stop: threading.Event) -> None:
        """Open the source, decode its frames into the slot; open it again when it fails."""
        backoff = 0.5
        while not stop.is_set():
            try:
                video = VideoInput(self.source, self.config)
            except SourceUnavailable as exc:
                self._source_state(LiveState.DISCONNECTED, {"error": str(exc)})
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            except StreamRefused as exc:
                self._source_state(LiveState.REFUSED, {"error": str(exc)})
                stop.wait(MAX_BACKOFF)
                continue
            except Exception as exc:  # unforeseen (a MemoryError under the bound): said, again
                log.exception("live %s: the source could not be opened", self.source.name)
                self._source_state(LiveState.REFUSED, {"error": f"{type(exc).__name__}: {exc}"})
                stop.wait(MAX_BACKOFF)
                continue
            try:
                for captured in video.frames():
                    backoff = 0.5
                    self.broken_packets = video.broken_packets
                    self._feed_footage(captured)  # before the analysis thread may touch it
                    with self._cond:
                        if self._slot is not None:
                            self.dropped += 1
                        self._slot = captured
                        self._fault = None
                        self.captured += 1
                        self._cond.notify()
                    if stop.is_set():
                        break
            except StreamRefused as exc:
                self._source_state(LiveState.REFUSED, {"error": str(exc)})
                stop.wait(MAX_BACKOFF)
            except SourceUnavailable as exc:
                if self.source.kind == "file" and exc.ended:
                    if self.source.loop:
                        continue  # from the start again, at once
                    self._source_state(LiveState.STOPPED, {"error": str(exc)})
                    return
                self._source_state(LiveState.DISCONNECTED, {"error": str(exc)})
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except Exception as exc:  # an unforeseen fault of the decoder: said, then again
                log.exception("live %s: the capture failed", self.source.name)
                self._source_state(LiveState.REFUSED, {"error": f"{type(exc).__name__}: {exc}"})
                stop.wait(MAX_BACKOFF)
            finally:
                self.broken_packets = video.broken_packets
                video.close()

    def _feed_footage(self, captured: Captured) -> None:
        """Hand a received frame's image area to the keeper for clips (a session open, at
        most its rate): every frame received counts, not only those analysed. In colour
        where the picture has colour (judged on a quarter-size copy), else grey."""
        keeper = self.keeper
        frame = captured.frame
        if keeper is None:
            return
        when = self._source_time(frame, captured.arrived)
        if not keeper.wants_footage(when) or self.size != (frame.width, frame.height):
            return  # no session, or a new size the analysis has not taken in yet
        x, y, w, h = self.region()
        colour = self.source.modality == "ES"
        if not colour:
            small = frame.reformat(width=max(1, frame.width // 4),
                                   height=max(1, frame.height // 4),
                                   format="rgb24").to_ndarray()
            colour = live_capture.is_colour(small[y // 4:(y + h) // 4, x // 4:(x + w) // 4])
        picture = frame.to_ndarray(format="rgb24" if colour else "gray")[y:y + h, x:x + w]
        keeper.footage(when, np.ascontiguousarray(picture))

    def _source_time(self, frame, arrived: float) -> float:
        """When a received frame was taken, by the source's own clock (its timestamp: a
        burst of frames late off the network keeps its spacing), made continuous where the
        clock jumps (a file loops, the source is opened again); its arrival without one."""
        if frame.time is None:
            return arrived
        stamp = float(frame.time)
        last = self._stamp_last
        if last is None or not 0.0 < stamp - last <= MAX_FRAME_GAP:
            # a jump: go on from the last time, one frame of the footage's rate later
            self._stamp_offset = (self._stamp_time + 1.0 / FOOTAGE_FPS) - stamp \
                if last is not None else arrived - stamp
        self._stamp_last = stamp
        self._stamp_time = stamp + self._stamp_offset
        return self._stamp_time

    def _lost(self, state: LiveState) -> LiveState:
        """``state`` as a source of this kind says it: a network stream that cannot be
        reached or stopped sending is a network fault (NETWORK_LOST), not a cable's."""
        if self.source.kind == "stream" and state in (LiveState.DISCONNECTED,
                                                      LiveState.STALLED):
            return LiveState.NETWORK_LOST
        return state

    def _source_state(self, state: LiveState, detail: dict[str, Any]) -> None:
        """The capture thread's word on the source: it stands until a frame is captured.
        Its error without the source's secrets (an FFmpeg error quotes the URL)."""
        state = self._lost(state)
        if "error" in detail:
            detail = {**detail, "error": redact_text(str(detail["error"]), self.secrets)}
        if state != self.state:
            log.info("live %s: %s %s", self.source.name, state, detail.get("error", ""))
        with self._cond:
            self._fault = (state, detail)
            self.state, self.detail = state, detail

    # -- analysis --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Capture in a thread; analyse the newest frame in this one until ``stop``."""
        thread = threading.Thread(target=self.capture, args=(stop,), daemon=True,
                                  name=f"capture-{self.source.name}")
        thread.start()
        try:
            self._analyse_loop(stop)
        finally:
            stop.set()
            if self.keeper is not None:  # first: the service kills this process 15 s on
                self.keeper.close()
            thread.join(timeout=10)
            self.state, self.detail = LiveState.STOPPED, {}
            self._write_state()

    def _analyse_loop(self, stop: threading.Event) -> None:
        interval = 1.0 / self.config.max_fps
        while not stop.is_set():
            with self._cond:
                if self._slot is None:
                    self._cond.wait(STATE_SECONDS)
                taken, self._slot = self._slot, None
            now = time.monotonic()
            if taken is None:
                with self._cond:
                    if (self.state in FRAME_STATES and self._fault is None
                            and now - self._last_frame_at > self.config.stall_seconds):
                        log.info("live %s: no frame for %s s", self.source.name,
                                 self.config.stall_seconds)
                        self.state = self._lost(LiveState.STALLED)
                        self.detail = {"seconds": self.config.stall_seconds}
                if now - self._last_state >= STATE_SECONDS:
                    self._write_state()
                continue
            self._last_frame_at = now
            self.process(taken)
            spent = time.monotonic() - now
            if spent < interval:
                stop.wait(interval - spent)

    def process(self, taken: Captured) -> None:
        """Judge, analyse and show one frame."""
        frame = taken.frame
        now = time.monotonic()
        self._picture_size(frame.width, frame.height)
        grey = frame.to_ndarray(format="gray")
        x, y, w, h = self.region()
        area = grey[y:y + h, x:x + w]
        state, warnings = self.watch.judge(area, now)
        with self._cond:  # a frame captured before the capture said otherwise does not hide it
            if self._fault is None and state == LiveState.RUNNING and self.no_model:
                self.state, self.detail = LiveState.NO_MODEL, {"why": self.no_model}
            elif self._fault is None:
                self.state, self.detail = state, {}
        if state == LiveState.FROZEN and now - self._last_shown < IDLE_FRAME_SECONDS:
            return  # a frozen picture is shown once a second, not analysed again
        lesions: list[dict[str, Any]] = []
        hint = LiveHint.NONE
        on_frame: list[Track] = []
        closed: list[Track] = []
        blocked = frame_blockers([str(code) for code in warnings])
        if state in (LiveState.NO_SIGNAL, LiveState.NO_CONTACT) or blocked:
            hint = LiveHint.NOT_ASSESSABLE
            closed = self.tracker.clear()
        elif state == LiveState.FROZEN:
            closed = self.tracker.clear()
        elif self.runner is not None:
            findings, _ms = self.runner.run(area.astype(np.float32) / 255.0, refine=True)
            boxes = findings.boxes
            if findings.range_score is not None and findings.range_score.outside:
                hint, boxes = LiveHint.OUTSIDE_VALIDATED_RANGE, []
            on_frame, closed = self.tracker.update(self._seq + 1, boxes)
            lesions = [self._lesion(track, x, y) for track in on_frame if track.held]
            if lesions:
                hint = LiveHint.HOLD_HERE
        self._seq += 1
        if self.keeper is not None:  # the picture in colour only when something is kept
            self.keeper.observe(area, on_frame, closed, self._seq,
                                colour=lambda: frame.to_ndarray(format="rgb24")[y:y + h, x:x + w])
        self.hint = hint
        self.analysed += 1
        self._times.append(now)
        while self._times and now - self._times[0] > 2.0:
            self._times.popleft()
        shown_as_captured = not self.config.display_width or \
            frame.width <= self.config.display_width
        jpeg = taken.jpeg if taken.jpeg is not None and shown_as_captured else self._jpeg(frame)
        entry = {"arrived": round(taken.arrived, 4), "hint": str(hint),
                 "quality": [str(code) for code in warnings], "lesions": lesions}
        self.writer.publish(self._seq, jpeg, entry, self._state_body())
        self._last_shown = self._last_state = now

    def _lesion(self, track: Track, x: int, y: int) -> dict[str, Any]:
        box = track.box
        spacing = self.mm_per_pixel()
        record = lesion_from_box(box, self._seq, (spacing, spacing) if spacing else None)
        return {"track": track.number, "box": [round(box.x0 + x, 1), round(box.y0 + y, 1),
                                               round(box.x1 + x, 1), round(box.y1 + y, 1)],
                "score": round(float(box.score), 3), "label": box.label,
                "long_axis_mm": record.long_axis_mm, "short_axis_mm": record.short_axis_mm,
                "long_axis_px": record.long_axis_px,
                "held": track.seen}

    def _jpeg(self, frame) -> bytes:
        """The frame as the page shows it: at most ``[live] display_width`` wide (FFmpeg's
        scaler), JPEG (the page draws it at the frame's own size: boxes stay in frame px)."""
        width = self.config.display_width
        if width and frame.width > width:
            height = max(1, round(frame.height * width / frame.width))
            frame = frame.reformat(width=width, height=height, format="rgb24")
        buffer = io.BytesIO()
        Image.fromarray(frame.to_ndarray(format="rgb24")).save(
            buffer, "JPEG", quality=self.config.jpeg_quality)
        return buffer.getvalue()

    # -- the picture's geometry --------------------------------------------------------------
    def _picture_size(self, width: int, height: int) -> None:
        if self.size == (width, height):
            return
        if self.size is not None:
            log.warning("live %s: the picture changed from %dx%d to %dx%d", self.source.name,
                        *self.size, width, height)
            self.tracker.clear()
        self.size = (width, height)
        if self.reference is None:
            self.reference = (width, height)
        if self.keeper is not None:  # what is kept from now on: at this size's scale
            self.keeper.picture_changed(self.mm_per_pixel() or 0.0)

    def region(self) -> tuple[int, int, int, int]:
        """The image area in this frame's pixels (the configured one scaled with the
        picture's size, clamped to the frame)."""
        assert self.size is not None and self.reference is not None
        width, height = self.size
        region = self.source.region
        if region is None:
            return 0, 0, width, height
        sx, sy = width / self.reference[0], height / self.reference[1]
        x, y = min(int(region[0] * sx), width - 1), min(int(region[1] * sy), height - 1)
        w = max(1, min(int(region[2] * sx), width - x))
        h = max(1, min(int(region[3] * sy), height - y))
        return x, y, w, h

    def mm_per_pixel(self) -> float | None:
        """The image area's scale at this picture size; None when not calibrated."""
        if not self.source.mm_per_pixel or self.size is None or self.reference is None:
            return None
        return self.source.mm_per_pixel * self.reference[0] / self.size[0]

    # -- the state the page reads ----------------------------------------------------------
    def fps(self) -> float:
        """Frames analysed a second, over the last two seconds."""
        if len(self._times) < 2:
            return 0.0
        return round((len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-6), 1)

    def _state_body(self) -> dict[str, Any]:
        width, height = self.size or (0, 0)
        return {"source": self.source.name, "label": self.source.label,
                "modality": self.source.modality, "state": str(self.state),
                "detail": self.detail, "width": width, "height": height,
                "region": list(self.region()) if self.size else None,
                "mm_per_pixel": self.mm_per_pixel(), "fps": self.fps(),
                "analysed": self.analysed, "dropped": self.dropped,
                "broken_packets": self.broken_packets, "hint": str(self.hint),
                "model": self.runner.package.model_id if self.runner else "",
                "session": self.keeper.view() if self.keeper else None}

    def _write_state(self) -> None:
        self.writer.write_state(self._state_body())
        self._last_state = time.monotonic()

