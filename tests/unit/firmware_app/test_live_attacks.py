"""Red team of the bedside live mode (issue 47): a low-privilege or careless user of the
viewer, a page left frozen on a session that ended, a hostile video source (frames a browser
cannot draw, a FIFO for a file), a disk that is full while a session keeps frames, and the
long poll holding every web thread. Each test shows a hole found and closed, or pins a
defence that held under attack."""

from __future__ import annotations

import datetime
import io
import json
import os
import threading
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pydicom
import pytest
from PIL import Image

from clinibox_common.contracts.statuses import LiveRequest
from engine.imaging import live_capture
from firmware_app.ingest.landing import Lander
from firmware_app.live.engine import LiveEngine
from firmware_app.live.source import (
    Captured,
    StreamRefused,
    VideoInput,
    browser_jpeg,
)
from firmware_app.settings.box import Config, from_dict
from firmware_app.settings.live import LiveSource
from firmware_app.settings.storage import StorageConfig
from firmware_app.storage import db, live_sessions
from firmware_app.storage.accounts import Accounts
from firmware_app.storage.live_frames import FrameWriter, live_root, read_state
from firmware_app.storage.spool import SpoolFull
from tests.box_harness import wait_for
from tests.live_keeper import keeper_box
from tests.web_client import ViewerClient
from web import views_live
from web.app import create_app

NURSE = ("nora", "scans-the-patients-1")
HOSTILE_LABEL = '<script>alert("label")</script>'


@pytest.fixture
def box(tmp_path, monkeypatch):
    """A viewer with one source whose label is markup, three web threads and a nurse."""
    monkeypatch.setenv("CLINIBOX_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(views_live, "LONG_POLL_SECONDS", 0.05)
    config = Config(storage=StorageConfig(state_dir=str(tmp_path / "state")))
    config.live.sources = [LiveSource(name="us-1", url="/dev/video0", label=HOSTILE_LABEL)]
    config.web.threads = 3
    app = create_app(config)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a fault answers 500, as in service
    conn = db.connect(config.database_path)
    Accounts(conn).add(*NURSE, "clinician")
    yield config, app, conn
    conn.close()


def _nurse(app) -> ViewerClient:
    client = ViewerClient(app)
    assert client.login(*NURSE).status_code == 302
    return client


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (90, 90, 90)).save(out, "JPEG")
    return out.getvalue()


def _publish(config: Config, seq: int, lesions: list[dict], session: dict | None = None) -> None:
    writer = FrameWriter(live_root(config.state_dir), "us-1", 10.0)
    entry = {"arrived": float(seq), "hint": "hold_here", "quality": [], "lesions": lesions}
    writer.publish(seq, _jpeg(), entry, {"source": "us-1", "state": "running", "width": 32,
                                         "height": 24, "hint": "hold_here", "fps": 15.0,
                                         "session": session})


JSON = {"Accept": "application/json"}


# -- the viewer ----------------------------------------------------------------------------

def test_a_frame_number_that_is_not_ascii_digits_or_absurd_is_ignored_not_a_500(box):
    # "²".isdigit() is True but int("²") fails; 5000 digits pass int()'s limit; 30 digits
    # overflow SQLite's INTEGER: each was a 500
    _config, app, conn = box
    nurse = _nurse(app)
    assert nurse.post("/live/us-1/session", {"patient_id": "P-1"}).status_code == 302
    for seq in ("\u00b2", "9" * 5000, "9" * 30, "\u0661\u0662", "-3", "12"):
        answer = nurse.post("/live/us-1/keep", {"kind": "key_frame", "seq": seq}, headers=JSON)
        assert answer.status_code == 200, seq
    session = live_sessions.open_session(conn, "us-1")
    assert [r.seq for r in live_sessions.open_requests(conn, session.id)] == \
        [None, None, None, None, None, 12]


def test_invisible_characters_are_not_kept_in_patient_fields_and_names_fit_dicom_pn(box):
    # a bidi override shows "P-1" spelled backwards as another ID; a zero-width space makes
    # "P-1" another patient at the PACS; "=" and "^" beyond PN's 3 groups of 5 components
    # made an invalid Patient's Name
    _config, app, conn = box
    nurse = _nurse(app)
    assert nurse.post("/live/us-1/session", {
        "patient_name": "Zhang\u202e^San=X=Y^1^2^3^4^5\u2028", "patient_id": "P-\u200b1\ufeff",
    }).status_code == 302
    session = live_sessions.open_session(conn, "us-1")
    assert session.patient_id == "P-1"
    assert session.patient_name == "Zhang^San=X=Y^1^2^3^4 5"
    context = live_capture.CaptureContext(
        session.study_uid, session.series_uid, "US", session.patient_name,
        session.patient_id, "", "", "box-1", "US", datetime.datetime(2026, 1, 1), 0.0, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom warns of a PN it should not write
        _uid, data = live_capture.key_frame(np.zeros((8, 8), np.uint8), context, 1,
                                            datetime.datetime(2026, 1, 1))
        name = pydicom.dcmread(io.BytesIO(data)).PatientName
        assert len(name.components) == 3 and str(name) == session.patient_name


def test_a_page_frozen_on_an_ended_session_keeps_nothing_for_the_next_patient(box):
    # nurse A froze her page; her session was ended elsewhere and nurse B began one for
    # another patient: A's "keep this frame" must not land in B's patient's study
    _config, app, conn = box
    nurse = _nurse(app)
    assert nurse.post("/live/us-1/session", {"patient_id": "A-1"}).status_code == 302
    first = live_sessions.open_session(conn, "us-1")
    live_sessions.end(conn, first.id)
    second = live_sessions.start(conn, source="us-1", started_by="other", patient_id="B-2")
    stale = nurse.post("/live/us-1/keep", {"kind": "key_frame", "seq": "4",
                                           "session": str(first.id)}, headers=JSON)
    assert stale.status_code == 409 and "has ended" in stale.get_json()["message"]
    assert nurse.post("/live/us-1/keep", {"kind": "clip", "session": str(first.id)}
                      ).status_code == 409
    assert nurse.post("/live/us-1/session/end", {"session": str(first.id)}).status_code == 409
    assert live_sessions.open_requests(conn, second.id) == []
    assert live_sessions.open_session(conn, "us-1").id == second.id
    fresh = nurse.post("/live/us-1/keep", {"kind": "key_frame", "session": str(second.id)},
                       headers=JSON)
    assert fresh.status_code == 200 and len(live_sessions.open_requests(conn, second.id)) == 1


def test_long_polls_leave_web_threads_for_the_other_pages(box):
    # measured under gunicorn (8 threads): 50 long polls on a quiet source made every other
    # page wait 10-12 s; now at most threads - 2 wait, the rest are told to come back
    config, app, _conn = box
    nurse = _nurse(app)
    with app.app_context():
        slots = views_live._poll_slots()
    taken = 0
    while slots.acquire(blocking=False):  # long polls in flight hold every slot there is
        taken += 1
    assert taken == config.web.threads - views_live.POLL_RESERVED_THREADS
    busy = nurse.get("/live/us-1/next?after=5")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    assert nurse.get("/live").status_code == 200 and nurse.get("/live/us-1").status_code == 200
    for _ in range(taken):
        slots.release()
    assert nurse.get("/live/us-1/next?after=5").status_code == 204
    assert slots.acquire(blocking=False)  # a finished poll gives its slot back
    slots.release()


def test_the_frame_header_is_one_line_of_ascii_json_whatever_the_overlay_holds(box):
    config, app, _conn = box
    nurse = _nurse(app)
    label = "lesion\r\nSet-Cookie: clinibox_session=evil\r\n\r\n<b>\u75c5\u7076</b>"
    _publish(config, 7, [{"track": 1, "box": [1, 2, 3, 4], "score": 0.9, "label": label}])
    answer = nurse.get("/live/us-1/next?after=-1")
    header = answer.headers["X-Live-Frame"]
    assert answer.status_code == 200 and header.isascii()
    assert "\r" not in header and "\n" not in header
    assert "evil" not in (answer.headers.get("Set-Cookie") or "")
    assert json.loads(header)["lesions"][0]["label"] == label


def test_a_sources_label_and_a_patients_name_are_text_on_the_page_never_markup(box):
    _config, app, _conn = box
    nurse = _nurse(app)
    name = '<img src=x onerror="alert(1)">'
    assert nurse.post("/live/us-1/session", {"patient_name": name}).status_code == 302
    for url in ("/live", "/live/us-1"):
        page = nurse.get(url).get_data(as_text=True)
        assert HOSTILE_LABEL not in page and "&lt;script&gt;" in page, url
    assert "<img src=x" not in nurse.get("/live/us-1").get_data(as_text=True)


def test_a_keep_the_box_could_not_store_is_said_on_the_page(box):
    # the live process wrote "SpoolFull" on its state; the page only ever said "Asked to keep"
    config, app, conn = box
    nurse = _nurse(app)
    assert nurse.post("/live/us-1/session", {"patient_id": "P-1"}).status_code == 302
    session = live_sessions.open_session(conn, "us-1")
    _publish(config, 1, [], {"id": session.id, "kept": 0, "error": "SpoolFull"})
    said = nurse.get("/live/us-1/state").get_json()["session"]["error"]
    assert said == "Not kept: the box's storage is full. Tell the technician."
    _publish(config, 2, [], {"id": session.id, "kept": 0, "error": "OperationalError"})
    assert "could not store it" in nurse.get("/live/us-1/state").get_json()["session"]["error"]
    _publish(config, 3, [], {"id": session.id + 1, "kept": 0, "error": "SpoolFull"})
    assert nurse.get("/live/us-1/state").get_json()["session"]["error"] == ""
    _publish(config, 4, [], {"id": session.id, "kept": 1, "error": ""})
    assert nurse.get("/live/us-1/state").get_json()["session"]["error"] == ""


# -- the live process ------------------------------------------------------------------------

class _FullThenFine:
    """A lander whose disk is full for the first ``full`` objects."""

    def __init__(self, lander: Lander, full: int) -> None:
        self.lander, self.full = lander, full

    def land(self, data: bytes, **kwargs):
        if self.full:
            self.full -= 1
            raise SpoolFull("the disk is below its floor")
        return self.lander.land(data, **kwargs)


def test_a_full_disk_is_said_on_the_request_and_the_keeper_goes_on(tmp_path):
    box = keeper_box(tmp_path, wrap=lambda lander: _FullThenFine(lander, full=1))
    keeper, clock, session = box.keeper, box.clock, box.session
    with box.database() as conn:
        first = live_sessions.ask(conn, session.id, LiveRequest.KEY_FRAME, "nurse")
    keeper.observe(np.full((48, 64), 80, np.uint8), [], [], 1)
    wait_for(lambda: keeper.last_error, 10, "the writer's answer")  # a thread of its own
    assert keeper.last_error == "SpoolFull" and keeper.view()["error"] == "SpoolFull"
    with box.database() as conn:
        outcome = conn.execute("SELECT outcome FROM live_requests WHERE id = ?",
                               (first,)).fetchone()[0]
        assert outcome == "not kept: SpoolFull"
        live_sessions.ask(conn, session.id, LiveRequest.KEY_FRAME, "nurse")
    clock[0] = 1.0
    keeper.observe(np.full((48, 64), 90, np.uint8), [], [], 2)
    keeper.close()
    assert keeper.kept == 1 and keeper.last_error == ""
    with box.database() as conn:
        assert len(live_sessions.kept_by(conn, session.id)) == 1


def _mjpeg_file(path: Path, codec: str, pix_fmt: str) -> Path:
    """Frames of ``codec`` (mjpeg: baseline; ljpeg: lossless JPEG) one after another."""
    context = av.CodecContext.create(codec, "w")
    context.width, context.height, context.pix_fmt = 64, 48, pix_fmt
    context.time_base = Fraction(1, 10)
    rng = np.random.default_rng(0)
    with path.open("wb") as out:
        for n in range(6):
            frame = av.VideoFrame.from_ndarray(
                rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24")
            frame = frame.reformat(format=pix_fmt)
            frame.pts = n
            for packet in context.encode(frame):
                out.write(bytes(packet))
        for packet in context.encode(None):
            out.write(bytes(packet))
    return path


@pytest.mark.parametrize(("codec", "pix_fmt", "passed_on"),
                         [("mjpeg", "yuvj420p", True), ("ljpeg", "bgr24", False)])
def test_an_mjpeg_frame_a_browser_cannot_draw_is_encoded_again(tmp_path, codec, pix_fmt,
                                                                passed_on):
    # FFmpeg decodes lossless JPEG (SOF3) in an MJPEG stream; no browser draws it: passed on
    # as it came, the tablet's picture stopped (live.js's loop ended on the failed draw)
    path = _mjpeg_file(tmp_path / f"{codec}.mjpeg", codec, pix_fmt)
    first = path.read_bytes()
    assert browser_jpeg(first) is passed_on
    config = from_dict({"live": {"stall_seconds": 1.0,
                                 "sources": [{"name": "cam", "url": str(path)}]}})
    video = VideoInput(config.live.sources[0], config.live)
    try:
        assert video.codec == "mjpeg"
        got = next(iter(video.frames()))
    finally:
        video.close()
    assert (got.jpeg is not None) is passed_on
    writer = FrameWriter(tmp_path / "live", "cam", 2.0)
    engine = LiveEngine(config.live.sources[0], config.live, None, writer, None, no_model="x")
    engine.process(got)
    seq = read_state(tmp_path / "live", "cam")["frames"][-1]["seq"]
    shown = (tmp_path / "live" / "cam" / "frames" / f"{seq}.jpg").read_bytes()
    assert browser_jpeg(shown)
    assert Image.open(io.BytesIO(shown)).size == (64, 48)


def test_browser_jpeg_reads_only_the_frame_header():
    progressive, grey = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (16, 16)).save(progressive, "JPEG", progressive=True)
    Image.new("L", (16, 16)).save(grey, "JPEG")
    assert browser_jpeg(progressive.getvalue()) and browser_jpeg(grey.getvalue())
    twelve = bytearray(grey.getvalue())
    at = twelve.index(b"\xff\xc0")
    twelve[at + 4] = 12  # the same header claiming 12-bit samples
    assert not browser_jpeg(bytes(twelve))
    for broken in (b"", b"\xff\xd8", b"\xff\xd8\xff\xe0\xff\xff", b"\xff\xd8\x00\x00\x00\x00"):
        assert not browser_jpeg(broken)


def test_a_file_source_that_is_a_fifo_or_a_device_is_refused_at_once(tmp_path):
    # opening a FIFO with no writer blocked the capture thread for good (no timeout reaches
    # open(2)): the page said "starting" forever
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    for url in (str(fifo), "/dev/zero"):
        config = from_dict({"live": {"stall_seconds": 1.0,
                                     "sources": [{"name": "f", "url": url}]}})
        outcome: list[BaseException] = []

        def open_it(cfg=config, outcome=outcome) -> None:
            try:
                VideoInput(cfg.live.sources[0], cfg.live).close()
            except Exception as exc:  # what the source raised is the result
                outcome.append(exc)

        thread = threading.Thread(target=open_it, daemon=True)
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), url
        assert isinstance(outcome[0], StreamRefused) and "not a regular file" in str(outcome[0])


@pytest.mark.parametrize("pix_fmt", ["gray16le", "yuv444p10le", "pal8", "rgba", "nv12"])
def test_frames_of_any_pixel_format_are_shown(tmp_path, pix_fmt):
    config = from_dict({"live": {"sources": [{"name": "cam", "url": "rtsp://10.0.0.9/x"}]}})
    writer = FrameWriter(tmp_path / "live", "cam", 2.0)
    engine = LiveEngine(config.live.sources[0], config.live, None, writer, None, no_model="x")
    picture = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    frame = av.VideoFrame(64, 48, "pal8") if pix_fmt == "pal8" else \
        av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format=pix_fmt)
    engine.process(Captured(frame, 1.0, None))
    state = read_state(tmp_path / "live", "cam")
    assert (state["width"], state["height"]) == (64, 48) and state["analysed"] == 1
