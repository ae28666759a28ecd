"""What a live session keeps: the frame where each lesion was best seen, the frames asked
for, and clips; landed in the spool as DICOM, so the rest of the box (the worker, the study
page, the report, SR/SEG to the PACS, the hospital's alert) sees them as any pushed study.

Nothing is kept for a source without an open session (``storage/live_sessions.py``). While
one is open: each held lesion's best frame so far is held in memory and kept when the
lesion leaves the picture (at most ``[live] key_frames_per_session`` kept this way); "keep
this frame" keeps the frame shown; "keep a clip" keeps the last ``[live] clip_seconds`` of
image area as a multi-frame object: every frame received in that time (up to FOOTAGE_FPS a
second), fed by the capture thread, not only those the analysis took, timed as they came.
Only the image area (``[[live.sources]] region``) is kept, never the machine's menus around
it; in colour where the picture has colour (``imaging.live_capture.is_colour``). The DICOM
is written and landed by a thread of its own, so the analysis never waits on a disk.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clinibox_common.contracts.statuses import LiveKept, LiveRequest
from engine.imaging import live_capture
from firmware_app.ingest.landing import Lander, Outcome
from firmware_app.live.tracker import Track
from firmware_app.settings.live import LiveConfig, LiveSource
from firmware_app.storage import db, live_sessions
from firmware_app.storage.live_sessions import LiveSession

log = logging.getLogger(__name__)

#: how often the open session and its requests are read (seconds)
SESSION_POLL = 0.5
#: how often the open session's requests are read (seconds): a keep waits at most this
REQUEST_POLL = 0.2
#: the analysed frames held for "keep this frame" (the one the page showed): at most this
#: many a second over ``[live] ring_seconds``
CLIP_FPS = 15.0
#: a clip keeps the frames received (not only those analysed) at the source's own rate, up
#: to this many a second (its memory: clip_seconds x the rate, image areas)
FOOTAGE_FPS = 30.0
#: jobs waiting to be written at most (a full queue drops the automatic key frames first)
MAX_JOBS = 16


@dataclass
class _Job:
    session: LiveSession
    kind: LiveKept
    frames: list[np.ndarray]
    acquired: datetime.datetime
    score: float | None = None
    request: int | None = None
    #: the clip's frame interval (ms)
    interval_ms: float = 0.0
    #: the image area's scale when its frames were taken (0: not calibrated)
    mm_per_pixel: float = 0.0


@dataclass
class _Best:
    score: float
    area: np.ndarray
    acquired: datetime.datetime
    mm_per_pixel: float


class Keeper:
    """Keep a session's key frames and clips for one source."""

    def __init__(self, source: LiveSource, config: LiveConfig, database: Path, lander: Lander,
                 station: str, now: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.config = config
        self.database = database
        self.lander = lander
        self.station = station
        self._now = now
        self.session: LiveSession | None = None
        #: what each session kept, by its id: the writer thread counts a session's objects
        #: as they land, the analysis thread reads the open session's (a session ended with
        #: an object still being written never counts it for the next one)
        self._kept: dict[int, int] = {}
        self.auto_kept = 0
        #: the image area's scale at the picture's present size (the engine says when the
        #: size changes: ``picture_changed``); what is kept carries the scale it was taken at
        self.scale = source.mm_per_pixel
        self.last_error = ""
        self._checked = -1e9
        self._asked = -1e9
        self._best: dict[int, _Best] = {}
        #: the session's recent image areas (time, seq, area), at most CLIP_FPS a second
        #: over the longer of a clip and the page's ring (a frame the page steps back to)
        self._clip: deque[tuple[float, int, np.ndarray]] = deque()
        self._keep_seconds = max(config.clip_seconds, config.ring_seconds)
        #: the last clip_seconds of frames received (arrival, area), fed by the capture
        #: thread (``footage``) while a session is open: what a clip keeps
        self._footage: deque[tuple[float, np.ndarray]] = deque()
        self._footage_lock = threading.Lock()
        self._jobs: queue.Queue[_Job | None] = queue.Queue(MAX_JOBS)
        self._writer = threading.Thread(target=self._write_jobs, name=f"keep-{source.name}",
                                        daemon=True)
        self._writer.start()

    # -- the analysis thread's side ------------------------------------------------------
    @property
    def kept(self) -> int:
        """What the open session kept (0 without one)."""
        return self._kept.get(self.session.id, 0) if self.session is not None else 0

    def view(self) -> dict | None:
        """The open session for the state file, or None."""
        if self.session is None:
            return None
        return {"id": self.session.id, "kept": self.kept, "error": self.last_error}

    def observe(self, area: np.ndarray, on_frame: list[Track], closed: list[Track],
                seq: int, colour: Callable[[], np.ndarray] | None = None) -> None:
        """One analysed frame's image area (uint8 grey), its held tracks and those that
        closed with it; ``colour`` gives the same area in RGB, asked only when something
        of this frame is held (``_picture``: colour kept as colour)."""
        now = self._now()
        acquired = datetime.datetime.now()
        resolved: list[np.ndarray] = []

        def picture() -> np.ndarray:
            if not resolved:
                resolved.append(self._picture(area, colour))
            return resolved[0]

        self._refresh(now, picture, acquired)
        if self.session is None:
            return
        if not self._clip or now - self._clip[-1][0] >= 1.0 / CLIP_FPS:
            self._clip.append((now, seq, picture()))
        while self._clip and now - self._clip[0][0] > self._keep_seconds:
            self._clip.popleft()
        for track in on_frame:  # the best frame it was held on (its best may precede that)
            best = self._best.get(track.number)
            if track.held and (best is None or float(track.box.score) > best.score):
                self._best[track.number] = _Best(float(track.box.score), picture(), acquired,
                                                 self.scale)
        for track in closed:
            best = self._best.pop(track.number, None)
            if best is not None and track.held:
                self._keep_best(best)
        self._answer(self._requests(now), now, picture, acquired)

    def _picture(self, area: np.ndarray, colour: Callable[[], np.ndarray] | None
                 ) -> np.ndarray:
        """What is held of a frame: its RGB image area where it has colour (a colour
        Doppler box, an endoscope: always), else its grey one (a copy either way)."""
        if colour is not None:
            rgb = colour()
            if self.source.modality == "ES" or live_capture.is_colour(rgb):
                return np.ascontiguousarray(rgb)  # the area alone, not the frame it views
        return np.ascontiguousarray(area).copy()

    def _answer(self, requests: list[live_sessions.Request], now: float,
                newest: Callable[[], np.ndarray], acquired: datetime.datetime) -> None:
        """Keep what the open session's requests ask for (``newest``: the newest frame's
        picture)."""
        assert self.session is not None
        for request in requests:
            if request.kind == LiveRequest.CLIP:
                frames, interval = self._clip_frames(now)
                if not frames:
                    continue
                self._submit(_Job(self.session, LiveKept.CLIP, frames, acquired,
                                  request=request.id,
                                  interval_ms=max(interval * 1000.0, 1000.0 / FOOTAGE_FPS),
                                  mm_per_pixel=self.scale))
            else:
                shown = self._shown(request.seq, newest)
                if shown is None:  # the page's frame is older than anything held
                    self.last_error = "gone"
                    self._not_kept(_Job(self.session, LiveKept.KEY_FRAME, [], acquired,
                                        request=request.id), "gone")
                    continue
                self._submit(_Job(self.session, LiveKept.KEY_FRAME, [shown], acquired,
                                  request=request.id, mm_per_pixel=self.scale))

    def _shown(self, seq: int | None, newest: Callable[[], np.ndarray]) -> np.ndarray | None:
        """The image area of frame ``seq`` (the one the page showed; the nearest one held
        before it), the newest when none is named, None when the page's frame is older than
        anything held (never another frame in its place)."""
        if seq is None:
            return newest()
        held = [item for item in self._clip if item[1] <= seq]
        return held[-1][2] if held else None

    def _clip_frames(self, now: float) -> tuple[list[np.ndarray], float]:
        """A clip's frames and their interval (seconds): the last ``clip_seconds`` of the
        frames received, as many as the source sent at its own rate (up to FOOTAGE_FPS), so
        that frames x interval is the clip's length; the analysed ones where none were fed."""
        with self._footage_lock:
            received = list(self._footage)
        if len(received) < 2:  # no capture thread (a keeper fed by hand): what was analysed
            received = [(t, frame) for t, _seq, frame in self._clip
                        if now - t <= self.config.clip_seconds]
        if not received:
            return [], 0.0
        if len(received) == 1:
            return [received[0][1]], 0.0
        steps = sorted(b[0] - a[0] for a, b in itertools.pairwise(received))
        period = max(steps[len(steps) // 2], 1e-3)  # the source's own (median) interval
        count = max(1, min(len(received), round(self.config.clip_seconds / period)))
        taken = received[-count:]
        span = taken[-1][0] - taken[0][0]
        return [frame for _t, frame in taken], span / (count - 1) if count > 1 else period

    @property
    def recording(self) -> bool:
        """Whether a session is open (the capture thread feeds ``footage`` only then)."""
        return self.session is not None

    def wants_footage(self, arrived: float) -> bool:
        """Whether a frame taken at ``arrived`` (seconds, the source's clock) joins the
        footage: a session is open and it is not closer to the last than FOOTAGE_FPS allows."""
        if self.session is None:
            return False
        with self._footage_lock:
            last = self._footage[-1][0] if self._footage else None
        return last is None or arrived - last >= 0.9 / FOOTAGE_FPS

    def footage(self, arrived: float, area: np.ndarray) -> None:
        """One received frame's image area and when it was taken (the capture thread): the
        last ``clip_seconds`` are held for a clip (a frame of another size, or a clock that
        goes back, starts them again)."""
        with self._footage_lock:
            if self._footage and (self._footage[-1][1].shape != area.shape
                                  or arrived <= self._footage[-1][0]):
                self._footage.clear()
            self._footage.append((arrived, area))
            margin = 2.0 / FOOTAGE_FPS
            while arrived - self._footage[0][0] > self.config.clip_seconds + margin:
                self._footage.popleft()

    def _forget_footage(self) -> None:
        with self._footage_lock:
            self._footage.clear()

    def picture_changed(self, mm_per_pixel: float) -> None:
        """The picture's size changed (its image area's scale now ``mm_per_pixel``, 0: not
        calibrated): a clip cannot mix sizes; start it again."""
        self._clip.clear()
        self._forget_footage()
        self.scale = mm_per_pixel

    def flush(self) -> None:
        """Keep the best frames of the lesions still in the picture (the session ends, the
        source stops)."""
        for best in self._best.values():
            self._keep_best(best)
        self._best.clear()

    def close(self) -> None:
        """Keep what was asked and not yet read, flush, then let the writer finish what
        waits."""
        if self.session is not None and self._clip:
            held = self._clip[-1][2]
            self._answer(self._requests(self._now(), every=True), self._now(),
                         lambda: held, datetime.datetime.now())
        self.flush()
        self._jobs.put(None)
        self._writer.join(timeout=30)

    def _keep_best(self, best: _Best) -> None:
        if self.session is None or self.auto_kept >= self.config.key_frames_per_session:
            return
        self.auto_kept += 1
        self._submit(_Job(self.session, LiveKept.KEY_FRAME, [best.area], best.acquired,
                          score=best.score, mm_per_pixel=best.mm_per_pixel))

    def _refresh(self, now: float, picture: Callable[[], np.ndarray],
                 acquired: datetime.datetime) -> None:
        if now - self._checked < SESSION_POLL:
            return
        self._checked = now
        try:
            with contextlib.closing(db.connect(self.database)) as conn:
                session = live_sessions.open_session(conn, self.source.name)
                if session is not None and self.session is not None \
                        and session.id == self.session.id:
                    return  # the same session: nothing more to read
                done = live_sessions.kept_by(conn, session.id) if session is not None else []
        except Exception as exc:  # a locked or unreadable database: try at the next poll
            log.warning("live %s: cannot read the session: %s", self.source.name, exc)
            return
        if self.session is not None:
            # what was asked in its last moments, from the frames it showed; then its lesions
            held = self._clip[-1][2] if self._clip else None
            self._answer(self._requests(now, every=True), now,
                         picture if held is None else lambda: held, acquired)
            self.flush()
        self.session = session
        self._clip.clear()
        self._forget_footage()
        self._best.clear()
        if session is not None:
            self._kept[session.id] = len(done)
            self.auto_kept = sum(1 for k in done if k.kind == LiveKept.KEY_FRAME
                                 and k.score is not None)
        else:
            self.auto_kept = 0

    def _requests(self, now: float, every: bool = False) -> list[live_sessions.Request]:
        """The session's new requests, read at most every REQUEST_POLL seconds (``every``:
        now, the session ending)."""
        if self.session is None or (now - self._asked < REQUEST_POLL and not every):
            return []
        self._asked = now
        try:
            with contextlib.closing(db.connect(self.database)) as conn:
                asked = live_sessions.open_requests(conn, self.session.id)
                for request in asked:
                    live_sessions.finish_request(conn, request.id, "taken")
        except Exception as exc:
            log.warning("live %s: cannot read the requests: %s", self.source.name, exc)
            return []
        return asked

    def _submit(self, job: _Job) -> None:
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            self.last_error = "busy"
            log.warning("live %s: %s not kept: the writer is behind", self.source.name,
                        job.kind)
            self._not_kept(job, "busy")

    def _not_kept(self, job: _Job, why: str) -> None:
        """Say on the job's request that nothing was kept (it was marked taken)."""
        if job.request is None:
            return
        try:
            with contextlib.closing(db.connect(self.database)) as conn:
                live_sessions.finish_request(conn, job.request, f"not kept: {why}")
        except Exception as exc:  # a locked database: the log says it
            log.warning("live %s: cannot finish request %d: %s", self.source.name,
                        job.request, exc)

    # -- the writer thread -----------------------------------------------------------------
    def _write_jobs(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._write(job)
                self.last_error = ""
            except Exception as exc:  # a full disk, a locked database: said on the page
                self.last_error = type(exc).__name__
                log.error("live %s: %s not kept: %s", self.source.name, job.kind, exc)
                self._not_kept(job, type(exc).__name__)

    def _write(self, job: _Job) -> None:
        session = job.session
        context = live_capture.CaptureContext(
            study_uid=session.study_uid, series_uid=session.series_uid,
            modality=self.source.modality, patient_name=session.patient_name,
            patient_id=session.patient_id, birth_date=session.birth_date, sex=session.sex,
            station=self.station, source_label=self.source.label or self.source.name,
            started=datetime.datetime.fromtimestamp(session.started_at),
            mm_per_pixel=job.mm_per_pixel, burned_in=self.source.region is None,
            accession_number=session.accession_number, sps_id=session.sps_id)
        number = self._kept.get(session.id, 0) + 1
        if job.kind == LiveKept.CLIP:
            sop_uid, data = live_capture.clip(job.frames, context, number, job.acquired,
                                              round(job.interval_ms, 1))
        else:
            sop_uid, data = live_capture.key_frame(job.frames[0], context, number,
                                                   job.acquired)
        landed = self.lander.land(data, sop_instance_uid=sop_uid, source="live",
                                  origin=f"live:{self.source.name}")
        if landed.outcome != Outcome.ACCEPTED:
            raise ValueError(f"landed as {landed.outcome.value}")
        self._kept[session.id] = self._kept.get(session.id, 0) + 1
        with contextlib.closing(db.connect(self.database)) as conn:
            live_sessions.record_kept(conn, session.id, live_sessions.Kept(
                job.kind, landed.instance_id, sop_uid, len(job.frames), job.score, time.time()))
            if job.request is not None:
                live_sessions.finish_request(conn, job.request, str(job.kind))
        log.info("live %s: session %d kept a %s (%d frames)", self.source.name, session.id,
                 job.kind, len(job.frames))
