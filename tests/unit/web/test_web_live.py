"""The viewer's bedside live pages (``web/views_live.py``): sources, the page, frames, sessions.

A FrameWriter (the live process's side) writes a source's state and frames into a tmp runtime
folder; the viewer reads them through the Flask test client as a logged-in nurse.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time

import pytest
from PIL import Image

from clinibox_common.contracts.statuses import LiveKept, LiveState
from clinibox_common.i18n import use_locale
from firmware_app.settings.box import Config
from firmware_app.settings.live import LiveSource
from firmware_app.settings.storage import StorageConfig
from firmware_app.storage import audit, db, live_sessions
from firmware_app.storage.accounts import Accounts
from firmware_app.storage.live_frames import FrameWriter, live_root, write_stopped
from firmware_app.words import labels
from tests.web_client import ViewerClient
from web import views_live
from web.app import create_app

NURSE = ("nora", "scans-the-patients-1")
TECH = ("tina", "keeps-the-box-running")
ZH = "zh-CN,zh;q=0.9"
LIVE_ACTIONS = ("live_view", "live_session_started", "live_session_ended",
                "live_keep_requested")
WIDTH, HEIGHT = 320, 240


def test_the_live_actions_are_in_the_audit_vocabulary_with_their_words():
    for action in LIVE_ACTIONS:
        assert action in audit.ACTIONS and labels.ACTION_NAMES[action]


def _config(tmp_path, sources: list[LiveSource]) -> Config:
    config = Config(storage=StorageConfig(state_dir=str(tmp_path / "state")))
    config.live.sources = sources
    config.live.ring_seconds = 2.0
    return config


@pytest.fixture
def box(tmp_path, monkeypatch):
    """A viewer with two live sources (us-1 calibrated, es-1 not), a nurse and a technician;
    the live frames in a tmp runtime folder."""
    monkeypatch.setenv("CLINIBOX_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(views_live, "LONG_POLL_SECONDS", 0.05)
    config = _config(tmp_path, [
        LiveSource(name="us-1", url="/dev/video0", label="Ultrasound room 1",
                   mm_per_pixel=0.1),
        LiveSource(name="es-1", url="rtsp://10.0.0.5/scope", label="Scope", modality="ES")])
    app = create_app(config)
    conn = db.connect(config.database_path)
    Accounts(conn).add(*NURSE, "clinician")
    Accounts(conn).add(*TECH, "technician")
    yield config, app, conn
    conn.close()


def _client(app, who=NURSE, chinese: bool = False) -> ViewerClient:
    client = ViewerClient(app)
    if chinese:
        client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = ZH
    assert client.login(*who).status_code == 302
    return client


def _jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), (shade, shade, shade)).save(out, "JPEG")
    return out.getvalue()


def _publish(writer: FrameWriter, seq: int, *, hint: str = "hold_here",
             mm_per_pixel: float | None = 0.1, arrived: float | None = None) -> None:
    lesion = {"track": 1, "box": [40, 50, 120, 110], "score": 0.8,
              "long_axis_mm": 12.4 if mm_per_pixel else None, "long_axis_px": 80.0, "held": 4}
    entry = {"arrived": float(seq) / 10 if arrived is None else arrived, "hint": hint,
             "quality": [], "lesions": [lesion]}
    state = {"source": "us-1", "label": "", "modality": "US", "state": "running",
             "detail": {}, "width": WIDTH, "height": HEIGHT, "region": None,
             "mm_per_pixel": mm_per_pixel, "fps": 15.2, "analysed": seq, "dropped": 1,
             "hint": hint, "session": None}
    writer.publish(seq, _jpeg(seq % 255), entry, state)


def _writer(config: Config) -> FrameWriter:
    return FrameWriter(live_root(config.state_dir), "us-1", config.live.ring_seconds)


def _audit_rows(conn, action: str) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in conn.execute(
        "SELECT account, target, detail FROM audit WHERE action = ? ORDER BY id", (action,))]


def test_next_answers_the_newest_frame_with_its_overlay_or_204(box):
    config, app, _conn = box
    client = _client(app)
    assert client.get("/live/us-1/next?after=-1").status_code == 204  # nothing written yet
    writer = _writer(config)
    for seq in (1, 2, 3):
        _publish(writer, seq)
    answer = client.get("/live/us-1/next?after=1")
    assert answer.status_code == 200 and answer.mimetype == "image/jpeg"
    assert answer.headers["Cache-Control"] == "no-store"
    assert Image.open(io.BytesIO(answer.data)).size == (WIDTH, HEIGHT)
    frame = json.loads(answer.headers["X-Live-Frame"])
    assert frame["seq"] == 3  # the newest, not the next: a slow tablet never queues
    assert frame["lesions"][0]["box"] == [40, 50, 120, 110]
    assert frame["lesions"][0]["long_axis_mm"] == 12.4
    assert (frame["width"], frame["height"], frame["mm_per_pixel"]) == (WIDTH, HEIGHT, 0.1)
    assert (frame["state"], frame["hint"], frame["fps"]) == ("running", "hold_here", 15.2)
    assert " " not in answer.headers["X-Live-Frame"]  # compact
    empty = client.get("/live/us-1/next?after=3")
    assert empty.status_code == 204 and empty.headers["Cache-Control"] == "no-store"
    assert client.get("/live/us-1/next?after=x").status_code == 400
    # a page left open over a reboot asks for its old number: the box numbers afresh
    restarted = client.get("/live/us-1/next?after=9000")
    assert restarted.status_code == 200
    assert json.loads(restarted.headers["X-Live-Frame"])["seq"] == 3


def test_a_served_frame_says_how_late_it_is(box):
    """Before: the page showed frames a second but not how late the picture was."""
    config, app, _conn = box
    client = _client(app)
    writer = _writer(config)
    _publish(writer, 1, arrived=time.monotonic() - 0.25)  # arrived at the box 250 ms ago
    frame = json.loads(client.get("/live/us-1/next?after=-1").headers["X-Live-Frame"])
    assert 250 <= frame["delay_ms"] < 2000
    _publish(writer, 2, arrived=time.monotonic() + 5000.0)  # not on this boot's clock
    frame = json.loads(client.get("/live/us-1/next?after=1").headers["X-Live-Frame"])
    assert frame["delay_ms"] is None
    for chinese, words in ((False, "picture delay {ms} ms"), (True, "画面延迟 {ms} 毫秒")):
        page = _client(app, chinese=chinese).get("/live/us-1").get_data(as_text=True)
        assert f'data-delay-words="{words}"' in page


def test_a_ring_frame_is_served_until_it_leaves_the_ring(box):
    config, app, _conn = box
    client = _client(app)
    writer = _writer(config)
    _publish(writer, 5, arrived=100.0)
    _publish(writer, 6, arrived=101.0)
    old = client.get("/live/us-1/frame/5")
    assert old.status_code == 200 and json.loads(old.headers["X-Live-Frame"])["seq"] == 5
    _publish(writer, 7, arrived=103.5)  # 2 s ring: frames 5 and 6 are gone
    assert client.get("/live/us-1/frame/5").status_code == 404
    assert client.get("/live/us-1/frame/7").status_code == 200
    assert client.get("/live/us-1/frame/99").status_code == 404


def test_state_json_says_where_the_source_stands(box):
    config, app, conn = box
    client = _client(app)
    starting = client.get("/live/us-1/state").get_json()
    assert starting["state"] == "starting" and starting["seqs"] == []
    writer = _writer(config)
    for seq in (1, 2):
        _publish(writer, seq)
    got = client.get("/live/us-1/state")
    assert got.headers["Cache-Control"] == "no-store"
    body = got.get_json()
    assert body["state"] == "running" and body["hint"] == "hold_here"
    assert body["fps"] == 15.2 and body["analysed"] == 2 and body["dropped"] == 1
    assert body["seqs"] == [1, 2] and body["session"] is None
    write_stopped(live_root(config.state_dir), "us-1", "disconnected", {"error": "gone"})
    assert client.get("/live/us-1/state").get_json()["state"] == "disconnected"
    session = live_sessions.start(conn, source="us-1", started_by="nora", patient_id="P-7")
    live_sessions.record_kept(conn, session.id, live_sessions.Kept(
        LiveKept.KEY_FRAME, "local-1", "1.2.3", 1, 0.8, 1_790_000_000.0))
    shown = client.get("/live/us-1/state").get_json()["session"]
    assert shown["id"] == session.id and len(shown["kept"]) == 1
    assert shown["kept"][0].startswith("key frame, ") and shown["study_url"] is None


def test_a_running_source_that_stopped_writing_reads_stalled():
    now = 1_790_000_000.0
    assert views_live.effective_state({"state": "running", "wall": now - 30}, now) == "stalled"
    assert views_live.effective_state({"state": "running", "wall": now - 1}, now) == "running"
    assert views_live.effective_state({"state": "no_contact", "wall": now - 30}, now) \
        == "no_contact"
    assert views_live.effective_state(None) == "starting"


def test_unknown_sources_and_path_like_names_are_404(box):
    _config, app, _conn = box
    client = _client(app)
    for url in ("/live/us-2", "/live/us-2/next", "/live/us-2/state", "/live/us-2/frame/1",
                "/live/..%2Fstate/state", "/live/US-1", "/live/..", "/live/us-1%2F..%2Fx/state",
                "/live/.hidden/next"):
        assert client.get(url).status_code == 404, url
    assert client.post("/live/us-2/keep", {"kind": "clip"}).status_code == 404


def test_live_pages_need_a_session_and_posts_need_csrf_and_clinic_staff(box):
    _config, app, conn = box
    anonymous = ViewerClient(app)
    for url in ("/live", "/live/us-1", "/live/us-1/state", "/live/us-1/next"):
        answer = anonymous.get(url)
        assert answer.status_code == 302 and "/login" in answer.location, url
    assert anonymous.post("/live/us-1/session", {"patient_id": "P-1"}).status_code == 401
    nurse = _client(app)
    assert nurse.post("/live/us-1/session", {"patient_id": "P-1"},
                      token="").status_code == 400  # no CSRF token
    assert nurse.post("/live/us-1/session", {"patient_id": "P-1"},
                      referer="https://evil.example/").status_code == 400
    technician = _client(app, TECH)
    assert technician.get("/live/us-1").status_code == 200
    for url, form in (("/live/us-1/session", {"patient_id": "P-1"}),
                      ("/live/us-1/session/end", {}), ("/live/us-1/keep", {"kind": "clip"})):
        assert technician.post(url, form).status_code == 403, url
    assert live_sessions.open_session(conn, "us-1") is None
    assert "Sessions are started by clinic staff accounts." in technician.get(
        "/live/us-1").get_data(as_text=True)


def test_a_session_starts_keeps_and_ends_with_audit_rows(box):
    _config, app, conn = box
    nurse = _client(app)
    refused = nurse.post("/live/us-1/session", {"patient_name": "", "patient_id": ""})
    assert refused.status_code == 400
    assert "Give at least the patient&#39;s name or ID" in refused.get_data(as_text=True)
    assert nurse.post("/live/us-1/session", {"patient_id": "P-1", "birth_date": "2999-01-01"}
                      ).status_code == 400  # not a past day
    assert nurse.post("/live/us-1/keep", {"kind": "key_frame"}).status_code == 409
    started = nurse.post("/live/us-1/session", {
        "patient_name": "Wang^Fang\x07\\", "patient_id": " P-1 ", "birth_date": "1980-03-04",
        "sex": "F"})
    assert started.status_code == 302 and started.location.endswith("/live/us-1")
    session = live_sessions.open_session(conn, "us-1")
    assert session is not None and session.started_by == NURSE[0]
    assert (session.patient_name, session.patient_id, session.birth_date, session.sex) == \
        ("Wang^Fang", "P-1", "19800304", "F")
    again = nurse.post("/live/us-1/session", {"patient_id": "P-2"})
    assert again.status_code == 409
    assert "already open" in again.get_data(as_text=True)
    assert nurse.post("/live/us-1/keep", {"kind": "nonsense"}).status_code == 400
    kept = nurse.post("/live/us-1/keep", {"kind": "key_frame", "seq": "17"},
                      headers={"Accept": "application/json"})
    assert kept.status_code == 200 and kept.get_json()["message"] == "Asked to keep this frame."
    assert nurse.post("/live/us-1/keep", {"kind": "clip"}).status_code == 302
    asked = live_sessions.open_requests(conn, session.id)
    assert [r.kind.value for r in asked] == ["key_frame", "clip"]
    assert {r.requested_by for r in asked} == {NURSE[0]}
    page = nurse.get("/live/us-1").get_data(as_text=True)
    assert "Wang, Fang" in page and "P-1" in page and "End session" in page
    assert nurse.post("/live/us-1/session/end").status_code == 302
    assert live_sessions.open_session(conn, "us-1") is None
    assert nurse.post("/live/us-1/session/end").status_code == 409
    target = f"live_session:{session.id}"
    assert _audit_rows(conn, "live_session_started") == [(NURSE[0], target, "source us-1")]
    assert _audit_rows(conn, "live_session_ended") == [(NURSE[0], target, "source us-1")]
    assert _audit_rows(conn, "live_keep_requested") == [
        (NURSE[0], target, "key_frame at frame 17"), (NURSE[0], target, "clip")]
    assert _audit_rows(conn, "live_view")[0][:2] == (NURSE[0], "live:us-1")
    assert all("Wang" not in str(row) for action in LIVE_ACTIONS
               for row in _audit_rows(conn, action))  # no patient strings in the trail


def test_the_form_is_prefilled_from_a_worklist_study_and_kept_frames_link_to_it(box):
    _config, app, conn = box
    with conn:
        conn.execute("INSERT INTO studies(study_key, modality, instances, max_probability, "
                     "findings, alert, warnings, received_at, updated_at, patient_name, "
                     "patient_id) VALUES ('1.2.840.99', 'US', 1, 0.1, 0, 0, 0, 1, 1, "
                     "'LI^NA', 'ID-42')")
    study_id = conn.execute("SELECT id FROM studies WHERE study_key = '1.2.840.99'"
                            ).fetchone()[0]
    nurse = _client(app)
    page = nurse.get("/live/us-1?study=1.2.840.99").get_data(as_text=True)
    # shown as people read a name; the study's own DICOM name kept aside for the session
    assert 'id="patient-name" value="LI, NA"' in page and 'value="ID-42"' in page
    assert 'name="patient_name_dicom" value="LI^NA"' in page
    assert 'name="study" value="1.2.840.99"' in page
    assert 'value="LI^NA"' not in nurse.get("/live/us-1?study=9.9").get_data(as_text=True)
    nurse.post("/live/us-1/session", {"patient_name": "LI, NA", "patient_name_dicom": "LI^NA",
                                      "patient_id": "ID-42", "study": "1.2.840.99"})
    session = live_sessions.open_session(conn, "us-1")
    assert session is not None and session.from_study == "1.2.840.99"
    assert session.patient_name == "LI^NA"  # the study's own name, not the shown one
    live_sessions.record_kept(conn, session.id, live_sessions.Kept(
        LiveKept.CLIP, "local-2", "1.2.4", 75, None, 1_790_000_000.0))
    assert "clip of 75 frames" in nurse.get("/live/us-1").get_data(as_text=True)
    assert nurse.get("/live/us-1/state").get_json()["session"]["study_url"] is None
    with conn:  # the worker analysed what the session kept: its study is on the box
        conn.execute("UPDATE studies SET study_key = ? WHERE id = ?", (session.study_uid,
                                                                       study_id))
    link = nurse.get("/live/us-1/state").get_json()["session"]["study_url"]
    assert link == f"/study/{study_id}"
    assert f'href="/study/{study_id}"' in nurse.get("/live/us-1").get_data(as_text=True)


def test_after_the_session_ends_the_page_says_where_its_study_went(box):
    """Before: once "end session" was pressed the page said only "no session open", and
    nothing of the study the session made."""
    _config, app, conn = box
    nurse = _client(app)
    nurse.post("/live/us-1/session", {"patient_name": "ZHAO^LEI", "patient_id": "ID-77"})
    session = live_sessions.open_session(conn, "us-1")
    live_sessions.record_kept(conn, session.id, live_sessions.Kept(
        LiveKept.CLIP, 1, "1.2.5", 125, None, 1_790_000_000.0))
    assert nurse.post("/live/us-1/session/end", {"session": str(session.id)}).status_code == 302
    page = nurse.get("/live/us-1").get_data(as_text=True)
    assert 'id="live-last"' in page and "ZHAO, LEI" in page and "ID-77" in page
    assert "What it kept is now a study of this patient" in page
    assert 'id="live-last-link" class="live-study-link" href="#" hidden' in page  # not yet
    assert nurse.get("/live/us-1/state").get_json()["last"]["study_url"] is None
    with conn:  # the worker analysed what the session kept: its study is on the box
        conn.execute("INSERT INTO studies(study_key, modality, instances, max_probability, "
                     "findings, alert, warnings, received_at, updated_at) "
                     "VALUES (?, 'US', 1, 0.1, 0, 0, 0, 1, 1)", (session.study_uid,))
    study_id = conn.execute("SELECT id FROM studies WHERE study_key = ?",
                            (session.study_uid,)).fetchone()[0]
    assert nurse.get("/live/us-1/state").get_json()["last"]["study_url"] == \
        f"/study/{study_id}"
    page = nurse.get("/live/us-1").get_data(as_text=True)
    assert f'id="live-last-link" class="live-study-link" href="/study/{study_id}">' in page
    assert 'id="start-form"' in page  # the next patient's session below it
    chinese = _client(app, chinese=True).get("/live/us-1").get_data(as_text=True)
    assert "检查已结束" in chinese and "打开检查结果" in chinese
    # a new session: the page is about it, not the last one
    nurse.post("/live/us-1/session", {"patient_id": "ID-78"})
    assert 'id="live-last"' not in nurse.get("/live/us-1").get_data(as_text=True)
    assert nurse.get("/live/us-1/state").get_json()["last"] is None


def test_the_sources_list_and_the_nav_link_follow_the_configuration(box, tmp_path):
    config, app, _conn = box
    write_stopped(live_root(config.state_dir), "us-1", "no_contact", {})
    nurse = _client(app)
    listing = nurse.get("/live").get_data(as_text=True)
    assert 'href="/live/us-1"' in listing and 'href="/live/es-1"' in listing
    assert "Probe not on the skin" in listing and "Endoscopy" in listing
    assert 'id="nav-live"' in nurse.get("/").get_data(as_text=True)
    bare = create_app(_config(tmp_path / "other", []))
    conn = db.connect(bare.config["CLINIBOX"].config.database_path)
    Accounts(conn).add(*NURSE, "clinician")
    conn.close()
    client = _client(bare)
    assert 'id="nav-live"' not in client.get("/").get_data(as_text=True)
    off = client.get("/live").get_data(as_text=True)
    assert "Live mode is off" in off and "[[live.sources]]" in off
    assert client.get("/live/us-1").status_code == 404


def test_the_page_says_its_words_in_english_and_chinese(box):
    config, app, _conn = box
    write_stopped(live_root(config.state_dir), "us-1", "disconnected", {})
    for chinese in (False, True):
        client = _client(app, chinese=chinese)
        calibrated = client.get("/live/us-1").get_data(as_text=True)
        plain = client.get("/live/es-1").get_data(as_text=True)
        with use_locale("zh-CN" if chinese else "en"):
            expected = [labels.live_state(LiveState.DISCONNECTED),
                        labels.live_hint("hold_here"), labels.live_state("no_contact"),
                        labels.live_state("running")]
            words = {"freeze": views_live.gettext("Freeze"),
                     "session": views_live.gettext("Start a session"),
                     "keep": views_live.gettext("Nothing is kept without a session."),
                     "sizes": views_live.gettext(
                         "Sizes are not measured for this source: it has no calibration.")}
        assert ('lang="zh-CN"' if chinese else 'lang="en"') in calibrated
        for text in (*expected, words["freeze"], words["session"], words["keep"]):
            assert text.replace("'", "&#39;") in calibrated, (chinese, text)
        assert words["sizes"] not in calibrated and words["sizes"] in plain
    english = _client(app).get("/live/us-1").get_data(as_text=True)
    assert "The video is not connected — check the cable" in english
    assert "Possible lesion — hold the probe here" in english
    assert "frames analysed a second" in english


def test_the_page_has_no_inline_script_and_its_data_for_the_script(box):
    _config, app, _conn = box
    answer = _client(app).get("/live/us-1")
    page = answer.get_data(as_text=True)
    assert "unsafe-inline" not in answer.headers["Content-Security-Policy"]
    assert '<script src="/static/live.js" defer></script>' in page
    assert 'data-next-url="/live/us-1/next"' in page
    assert 'data-frame-url="/live/us-1/frame/"' in page
    assert 'data-state-url="/live/us-1/state"' in page
    assert 'data-ring-seconds="2.0"' in page


def test_the_live_pages_read_wholly_in_chinese(box):
    """No catalog English and no English run of words on the list and a source's page, with
    and without a session (the source's own label is the technician's words: Chinese here)."""
    from tests.i18n_text import catalog_sentences, english_sentences, is_chinese, visible_text

    config, app, conn = box
    write_stopped(live_root(config.state_dir), "us-1", "no_contact", {})
    for source in config.live.sources:
        source.label = "超声 1 号" if source.name == "us-1" else "内镜"
    client = _client(app, chinese=True)
    pages = [client.get("/live"), client.get("/live/us-1"), client.get("/live/es-1")]
    live_sessions.start(conn, source="us-1", started_by=NURSE[0], patient_name="王^芳")
    pages.append(client.get("/live/us-1"))
    for answer in pages:
        assert answer.status_code == 200
        text = visible_text(answer.get_data(as_text=True))
        assert is_chinese(text)
        assert catalog_sentences(text) == [] and english_sentences(text) == [], text


def test_a_study_page_offers_a_live_session_for_its_patient_to_clinicians(viewer):
    from tests.viewer_state import CLINICIAN, TECHNICIAN
    from tests.web_client import ViewerClient
    from web.app import create_app

    state, _app = viewer
    state.config.live.sources = [LiveSource(name="us-1", url="/dev/video0", label="超声 1 号")]
    app = create_app(state.config)
    key = sqlite3.connect(state.config.database_path).execute(
        "SELECT study_key FROM studies WHERE id = ?", (state.studies["alert"],)).fetchone()[0]
    pages = {}
    for who in (CLINICIAN, TECHNICIAN):
        client = ViewerClient(app)
        client.login(*who)
        pages[who] = client.get(f"/study/{state.studies['alert']}").get_data(as_text=True)
    assert f'href="/live/us-1?study={key}"' in pages[CLINICIAN] and "超声 1 号" in pages[CLINICIAN]
    assert 'id="live-links"' not in pages[TECHNICIAN]  # sessions are the clinic staff's


def test_the_session_forms_name_their_session(box):
    """Keep and end carry the session the page shows: a page left open on an ended session
    cannot keep into (or end) the next patient's (tests/unit/firmware_app/test_live_attacks.py)."""
    _config, app, conn = box
    session = live_sessions.start(conn, source="us-1", started_by=NURSE[0], patient_id="P-9")
    page = _client(app).get("/live/us-1").get_data(as_text=True)
    assert page.count(f'name="session" value="{session.id}"') == 3
