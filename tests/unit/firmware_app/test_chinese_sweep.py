"""Chinese everywhere a person reads (issue 54): one sweep over every page and command.

In a Chinese locale, in each of the box's states a clinic meets (waiting for a model, a
rollout's package downloading, just rolled back, a live source disconnected and a network
stream lost):

* every route of the viewer (``web/app.py``'s ``url_map``, so a new page cannot be
  forgotten) as a technician and as a clinician;
* every route of the hospital's console (``central_console/app.py``) over
  ``tests/console_scene.py``'s day, as an admin and as a radiologist;
* every ``clinibox`` command a person reads (``clinibox/table.py``'s ``COMMANDS``)
  with ``LANG=zh_CN.UTF-8``.

Each fails on a run of English words or a catalog sentence (``tests/i18n_text.py``), and a
page on data shown as recorded (``lang="en"``: an id, a file name, a runtime's name) that
no Chinese words introduce, or that holds an English sentence (a table's cell too): on a
Chinese page a ``lang="en"`` element holds data only. Routes and commands left out are
named below, each with why.
"""

from __future__ import annotations

import dataclasses
import re
import time
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from clinibox.table import COMMANDS, main
from firmware_app.settings.live import LiveSource
from firmware_app.settings.pacs import PacsDestination
from firmware_app.storage import audit, db, download_progress, model_offers
from firmware_app.storage.live_frames import live_root, write_stopped
from firmware_app.telemetry.messages import device_event, queue_device_event
from firmware_app.words import labels
from tests.box_events import EVENTS, record_events
from tests.i18n_text import catalog_sentences, english_sentences, is_chinese, visible_text
from tests.viewer_state import CLINICIAN, TECHNICIAN
from tests.web_client import ViewerClient
from web.app import create_app

ZH = "zh-CN,zh;q=0.9,en;q=0.5"
STATES = ("waiting_for_model", "downloading", "rolled_back", "live_lost")
PACKAGE = "clinibox-demo-lesion"
SOURCES = [LiveSource(name="us-1", url="/dev/video0", label="超声 1 号", mm_per_pixel=0.1),
           LiveSource(name="cam-1", url="rtsp://10.0.0.5/scope", label="内镜", modality="ES")]

#: viewer routes not rendered as a page, each with why (any other GET route is rendered)
VIEWER_SKIPPED = {
    "static": "the stylesheet and scripts: no sentence of their own",
    "clinic.frame_png": "an image", "clinic.heatmap_png": "an image",
    "clinic.key_png": "an image", "live.frame": "an image", "live.next_frame": "an image",
    "clinic.report_as_pdf": "a download: test_web_i18n reads the Chinese PDF's text",
    "device.device_json": "JSON for programs: codes, English by contract",
    "clinic.worklist_json": "JSON for programs: codes, English by contract",
}
#: JSON a page's script shows words of: the endpoint and where its words are
VIEWER_JSON_WORDS = {
    "live.state_json": lambda body: [*((body["session"] or {}).get("kept") or []),
                                     (body["session"] or {}).get("error") or "",
                                     *((body["last"] or {}).get("kept") or [])],
}
#: console routes not rendered as a page, each with why
CONSOLE_SKIPPED = {
    "static": "the stylesheet and scripts: no sentence of their own",
    "alerts.latest": "JSON for the worklist's script: codes, English by contract",
}
#: ``clinibox`` commands not run here, each with why
COMMANDS_SKIPPED = {
    "serve": "a service: its records are the journal's, English (cli/language.py)",
    "web": "a service", "live": "a service", "service-failed": "run by systemd, a service's",
    "usb-import": "run by udev: writes the box's records, English",
    "hospital-time": "run by systemd (clinibox-clock.path): its lines go to the journal and "
                     "the screen, English; the device page says its event in Chinese",
    "console-banner": "the appliance's screen: the Linux console has no Chinese font, English "
                      "(cli/language.py); the device page says the same in Chinese",
    "config": "prints the example file for the technician's editor, English (language.py); "
              "its --check refusals in Chinese: test_refusals_chinese",
    "provision": "needs an enrolment bundle from the hospital: test_provision covers it, "
                 "test_refusals_chinese its refusals in Chinese",
    "demo-video": "writes a video file for a demonstration",
    "study": "needs a hospital's study reference: test_cli_i18n covers the words",
    "export-disagreements": "writes a file for the hospital, English by contract",
}


# -- the box's states --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _rollout_audit_actions(monkeypatch):
    """As in test_waiting_for_model_pages: the rollout actions in the audit vocabulary."""
    for kind in ("rollout", "rollback"):
        action = f"model_{kind}_received"
        if action not in audit.ACTIONS:
            monkeypatch.setitem(audit.ACTIONS, action, labels.ACTION_NAMES[action])


def put_in_state(config, name: str) -> None:
    """The box of ``config`` in state ``name``, as the service and updater record it."""
    conn = db.connect(config.database_path)
    try:
        record_events(conn)
        with db.transaction(conn):
            model_offers.add(conn, seq=3, kind="rollout", step="kept", done=True,
                             payload={"rollout": 6, "name": PACKAGE, "version": "1.0.0"})
            if name == "waiting_for_model":
                model_offers.set_waiting(conn, "signature", "clinibox-demo-lesion@1.0.0 is "
                                         "signed with the DEMO-ONLY key, which this box does "
                                         "not trust")
                model_offers.add(conn, seq=4, kind="rollout", step="refused", reason="no_space",
                                 done=True, payload={"rollout": 7, "name": PACKAGE,
                                                     "version": "1.1.0"})
            elif name == "downloading":
                model_offers.add(conn, seq=4, kind="rollout", step="downloading",
                                 payload={"rollout": 7, "name": PACKAGE, "version": "1.1.0"})
                download_progress.record(conn, 4, 2_300_000, 4_700_000, 16_400.0, time.time())
            elif name == "rolled_back":
                model_offers.add(conn, seq=4, kind="rollout", step="rolled_back",
                                 reason="technician", done=True,
                                 payload={"rollout": 7, "name": PACKAGE, "version": "1.1.0"})
        if name == "waiting_for_model":
            queue_device_event(conn, 100, device_event("model_unavailable", "signature", "",
                                                       f"{PACKAGE}@1.0.0"),
                               "model_unavailable (signature): clinibox-demo-lesion@1.0.0; "
                               "the box waits for a model")
        if name == "rolled_back":
            queue_device_event(conn, 100, device_event(
                "model_rolled_back", "technician", f"{PACKAGE}@1.0.0", f"{PACKAGE}@1.1.0",
                rollout=7), f"model rolled back from {PACKAGE}@1.1.0 to {PACKAGE}@1.0.0")
    finally:
        conn.close()
    if name == "live_lost":
        root = live_root(config.state_dir)
        write_stopped(root, "us-1", "disconnected",
                      {"error": "[Errno 19] No such device: '/dev/video0'"})
        write_stopped(root, "cam-1", "network_lost",
                      {"error": "Connection to tcp://10.0.0.5:554 failed: No route to host"})


@pytest.fixture(params=STATES)
def box(request, viewer, tmp_path, monkeypatch):
    """The viewer's populated box with two live sources, in one of :data:`STATES`."""
    monkeypatch.setenv("CLINIBOX_RUNTIME_DIR", str(tmp_path / "run"))
    state, _app = viewer
    state.config.live.sources = [dataclasses.replace(source) for source in SOURCES]
    state.config.pacs.destinations = [PacsDestination(name="main", host="10.0.0.9")]
    put_in_state(state.config, request.param)
    _live_session(state.config)
    return request.param, state, create_app(state.config)


def _live_session(config) -> None:
    """A session open on us-1 that kept a key frame (the page and its script list it)."""
    from clinibox_common.contracts.statuses import LiveKept
    from firmware_app.storage import live_sessions

    conn = db.connect(config.database_path)
    try:
        session = live_sessions.start(conn, source="us-1", started_by=CLINICIAN[0],
                                      patient_id="P-7", patient_name="王^芳")
        live_sessions.record_kept(conn, session.id, live_sessions.Kept(
            LiveKept.KEY_FRAME, "local-1", "1.2.3", 1, 0.8, time.time()))
    finally:
        conn.close()


# -- what a page may show ----------------------------------------------------------------------


class _Introduced(HTMLParser):
    """Words recorded as they are (``lang="en"``) that no Chinese words come just before
    (a table's cell excepted: its column's heading says what it is), and the text of every
    such element (``recorded``)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.last = ""  # the last readable text before the current point
        self.depth = 0  # inside a lang="en" element: its depth
        self.bare: list[str] = []
        self.recorded: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "img", "input", "meta", "link", "hr", "wbr", "source"):
            return
        self.open.append(tag)
        if self.depth:
            self.depth += 1
        elif dict(attrs).get("lang") == "en":
            self.depth = 1  # a table's cell is named by its column's heading
            self.bare.append("" if tag == "td" or is_chinese(self.last) else "?")
            self.recorded.append("")

    def handle_endtag(self, tag: str) -> None:
        if self.open:
            self.open.pop()
            if self.depth:
                self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.recorded[-1] += data
            if self.bare and self.bare[-1] == "?":
                self.bare[-1] = "? " + data.strip()
            elif self.bare and self.bare[-1].startswith("? "):
                self.bare[-1] += data.strip()
        elif data.strip() and "script" not in self.open[-1:] and "style" not in self.open[-1:]:
            self.last = data.strip()


def unintroduced(html: str) -> list[str]:
    """Recorded English on a page that no Chinese words say what it is, and recorded text
    that is more than data (an English sentence, even in a table's cell)."""
    parser = _Introduced()
    parser.feed(html)
    return [*(item[2:] for item in parser.bare if item),
            *(text for text in parser.recorded if english_sentences(text))]


def assert_chinese_page(where: str, html: str, *, fragment: bool = False) -> None:
    """The page reads in Chinese: no catalog English, no English run, no bare record."""
    assert fragment or '<html lang="zh-CN">' in html, where
    text = visible_text(html)
    assert is_chinese(text), where
    assert catalog_sentences(text) == [], (where, catalog_sentences(text))
    assert english_sentences(text) == [], (where, english_sentences(text))
    assert unintroduced(html) == [], (where, unintroduced(html))


def _paths(rule, values: dict[str, list[Any]]) -> list[str]:
    """The rule's path for each combination of its arguments' values (one list per name)."""
    paths = [rule.rule]
    for argument in sorted(rule.arguments):
        assert argument in values, f"no value for <{argument}> of {rule.rule}: add one"
        paths = [re.sub(rf"<(?:[a-z]+:)?{argument}>", str(value), path)
                 for path in paths for value in values[argument]]
    return paths


def _get(client: ViewerClient, path: str):
    answer = client.get(path)
    if answer.status_code == 302:  # where the route sends a logged-in reader
        answer = client.get(answer.location)
    return answer


def _pages(app, skipped: dict[str, str], values: dict[str, list[Any]]
           ) -> list[tuple[str, str]]:
    """Every GET route's (endpoint, path)s, those in ``skipped`` left out (and each skip a
    real route)."""
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert set(skipped) <= endpoints, set(skipped) - endpoints
    return [(rule.endpoint, path)
            for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule)
            if "GET" in rule.methods and rule.endpoint not in skipped
            for path in _paths(rule, values)]


# -- the viewer --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("who", [TECHNICIAN, CLINICIAN], ids=["technician", "clinician"])
def test_every_viewer_page_reads_in_chinese(box, who):
    name, state, app = box
    values = {"study_id": sorted(state.studies.values()), "source": ["us-1", "cam-1"]}
    client = ViewerClient(app)
    client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = ZH
    assert client.login(*who).status_code == 302
    pages = _pages(app, VIEWER_SKIPPED, values)
    paths = [path for _endpoint, path in pages]
    assert "/device" in paths and "/live/cam-1" in paths and "/login" in paths
    for endpoint, path in pages:
        answer = _get(client, path)
        assert answer.status_code in (200, 403), (name, path, answer.status_code)
        if endpoint in VIEWER_JSON_WORDS:
            if answer.status_code == 200:
                words = " ".join(VIEWER_JSON_WORDS[endpoint](answer.get_json()))
                assert english_sentences(words) == [], (name, path, words)
                assert is_chinese(words) or path != "/live/us-1/state", (name, path, words)
            continue
        assert_chinese_page(f"{name} {who[0]} {path}", answer.get_data(as_text=True),
                            fragment=path == "/worklist/rows")
    for path in ("/?status=quarantined", "/?status=waiting", "/?status=not_analysed",
                 "/device/quarantine"):
        answer = client.get(path)
        assert_chinese_page(f"{name} {who[0]} {path}", answer.get_data(as_text=True))


def test_the_logged_out_pages_read_in_chinese(viewer):
    _state, app = viewer
    client = ViewerClient(app)
    client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = ZH
    assert_chinese_page("login", client.get("/login").get_data(as_text=True))


def test_a_decoders_words_are_said_from_their_code_in_chinese(box):
    """The technician's Chinese pages say a decoder's refusal from the reason's code; its
    own English words are on the English pages only."""
    _name, _state, app = box
    client = ViewerClient(app)
    client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = ZH
    client.login(*TECHNICIAN)
    for path in ("/device", "/device/quarantine"):
        html = client.get(path).get_data(as_text=True)
        assert "runs past the end" not in html, path
        assert "无法读取文件中的图像" in html, path
        assert unintroduced(html) == [], (path, unintroduced(html))
    client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    for path in ("/device", "/device/quarantine"):
        assert "runs past the end" in client.get(path).get_data(as_text=True), path


def test_the_device_page_says_events_and_pacs_errors_from_their_codes(viewer):
    """In Chinese the events and a PACS destination's last error are words from their codes,
    an event from before codes a plain note, never the English line; in English the line."""
    state, _app = viewer
    state.config.pacs.destinations = [PacsDestination(name="main", host="10.0.0.9")]
    conn = db.connect(state.config.database_path)
    try:
        record_events(conn)
    finally:
        conn.close()
    client = ViewerClient(create_app(state.config))
    client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = ZH
    client.login(*TECHNICIAN)
    html = client.get("/device").get_data(as_text=True)
    error = re.search(r'<dd class="pacs-error">(.*?)</dd>', html, re.S)
    assert error and "PACS 拒绝了连接" in error[1], error
    for words in ("与中心医院消息服务器的连接断开", "PACS 拒收了一个结果（状态码 0xA700）",
                  "拒收了 CT_1 发来的一张图像",
                  "清理旧图像：删除了 3 张图像，释放 3.8 MB", "图像 4 已由 tech 重新放回分析队列",
                  "（仅有英文记录，请看英文页面或日志）"):
        assert words in html, words
    assert not [message for _c, message, _code in EVENTS if message[:20] in html]
    assert unintroduced(html) == [], unintroduced(html)
    client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    html = unescape(client.get("/device").get_data(as_text=True))
    assert all(message in html for _c, message, _code in EVENTS)


def test_recorded_english_is_data_only():
    """The sweep's own check: a lang="en" element holding a sentence fails, in a cell too;
    one holding data (an AE title, a runtime's name) after Chinese words does not."""
    assert unintroduced('<p>运行环境：<span lang="en">onnxruntime</span></p>') == []
    assert unintroduced('<td lang="en">CT_SCANNER_1</td>') == []
    assert unintroduced('<td lang="en">broker link down: connection refused</td>') == [
        "broker link down: connection refused"]
    assert unintroduced('<p>原因：<span lang="en">cannot connect to PACS</span></p>') == [
        "cannot connect to PACS"]


# -- the console -------------------------------------------------------------------------------


@pytest.fixture
def console(tmp_path):
    """A console over the scene's day (as test_console_story builds it): (app, scene)."""
    from central.config import CentralConfig
    from central.store import Store
    from central_console.accounts import ConsoleAccounts
    from central_console.app import create_app as console_app
    from tests import console_scene
    from tests.unit.central_console.test_console_web import ADMIN, RADIOLOGIST

    config = CentralConfig()
    config.database.url = f"sqlite:///{tmp_path}/db/central.db"
    config.web.state_dir = str(tmp_path / "state")
    config.keys.hospital_signing_key = str(tmp_path / "hospital-signing.pem")
    store = Store(config.database.url)
    accounts = ConsoleAccounts(store.database)
    accounts.add(*RADIOLOGIST, "radiologist")
    accounts.add(*ADMIN, "admin")
    made = console_scene.build(store)
    yield console_app(config, store), made
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize("role", ["admin", "radiologist"])
def test_every_console_page_reads_in_chinese(console, role):
    from tests import console_scene
    from tests.unit.central_console.test_console_web import ADMIN, RADIOLOGIST, ConsoleClient

    app, made = console
    values = {"alert_id": [made.alert_id], "rollout_id": [made.rollout_id],
              "clinic": [console_scene.CLINIC],
              "device": [console_scene.DEVICE, console_scene.QUIET]}
    client = ConsoleClient(app)
    client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = ZH
    assert client.login(*(ADMIN if role == "admin" else RADIOLOGIST)).status_code == 302
    paths = [path for _endpoint, path in _pages(app, CONSOLE_SKIPPED, values)]
    assert "/fleet" in paths and "/rollouts" in paths
    for path in [*paths, "/alerts?state=all"]:
        answer = _get(client, path)
        assert answer.status_code in (200, 403), (role, path, answer.status_code)
        assert_chinese_page(f"{role} {path}", answer.get_data(as_text=True))


# -- the commands ------------------------------------------------------------------------------

#: words a command prints that are names, not sentences: the commands it tells a person to run
_COMMAND_LINE = re.compile(r"clinibox(?: [a-z][a-z-]*)+(?: --[a-z-]+(?: [^\s-]\S*)?)*")
_PATH = re.compile(r"\S*/\S*")
#: a key as written for the hospital (PEM, whose armour lines are a format's names)
_PEM = re.compile(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", re.S)


def readable(output: str) -> str:
    """A command's output without keys, paths and the command lines it names (names and data,
    not words)."""
    return _PATH.sub(" ", _COMMAND_LINE.sub(" ", _PEM.sub(" ", output)))


def _runs(state, tmp_path: Path) -> list[list[str]]:
    """Every command a person reads, with real arguments (``{config}``: the box's file)."""
    out, phantoms = tmp_path / "out", tmp_path / "phantoms"
    out.mkdir()
    return [["status", "{config}"], ["results", "{config}"],
            ["results", "{config}", "--studies"], ["outbox", "{config}"],
            ["identity", "{config}"], ["audit", "{config}"], ["audit", "{config}", "--verify"],
            ["retention", "{config}", "--dry-run"], ["dicom-out", "held", "{config}"],
            ["model", "rollback", "{config}"], ["model", "status", "{config}"],
            ["model", "list", "{config}"], ["model", "rollback", "{config}"],
            ["user", "list", "{config}"], ["selftest", "{config}", "--timeout", "0.5"],
            ["export-study", "{config}", str(state.studies["alert"]), "--zip", "--out",
             str(out / "study.zip")],
            ["keys", "generate", "--out", str(out / "signing.pem")],
            ["keys", "generate", "--out", str(out / "signing.pem")],  # refused: it exists
            ["keys", "generate", "--kind", "hospital", "--out", str(out / "hospital.pem")],
            ["keys", "generate", "--kind", "hospital-signing", "--out",
             str(out / "downlink.pem")],
            ["infer", "{config}", "--no-progress", str(phantoms / "truncated.dcm"),
             str(phantoms / "clear.dcm")],
            ["software", "status", "{config}"],
            ["software", "pack", str(out / "no-bundle"), "--key", str(out / "signing.pem"),
             "--out", str(out)],
            ["dicom-out", "check", "{config}"],
            ["records", "held", "{config}"], ["records", "retry", "{config}"],
            ["learning", "cases", "{config}"], ["learning", "status", "{config}"]]


def test_every_command_a_person_reads_is_run_or_named(tmp_path):
    from tests.viewer_state import ViewerState

    state = ViewerState(config=None, studies={"alert": 1})  # type: ignore[arg-type]
    run = {argv[0] for argv in _runs(state, tmp_path)}
    assert run | set(COMMANDS_SKIPPED) == set(COMMANDS), set(COMMANDS) - run - set(
        COMMANDS_SKIPPED)
    assert not run & set(COMMANDS_SKIPPED)


def _recorded_audit(config: Path, capsys) -> list[str]:
    """The audit rows' recorded fields (account, address, target, detail: data shown as
    recorded, as the viewer's audit page marks them), longest first."""
    import json

    assert main(["audit", "--config", str(config), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    fields = {str(row[key]) for row in rows for key in ("account", "address", "target",
                                                         "detail") if row[key]}
    return sorted(fields, key=len, reverse=True)


@pytest.mark.slow
def test_every_command_speaks_chinese(box, tmp_path, capsys, monkeypatch, viewer_template):
    import shutil

    from firmware_app.models.install import install
    from firmware_app.settings.box import load
    from tests.model_packages import make_package

    name, state, _app = box
    shutil.copytree(viewer_template.config.state_dir.parent / "phantoms", tmp_path / "phantoms")
    config = tmp_path / "clinibox.toml"
    sources = "".join(f'[[live.sources]]\nname = "{s.name}"\nurl = "{s.url}"\n' for s in SOURCES)
    config.write_text(f'[storage]\nstate_dir = "{state.config.state_dir.as_posix()}"\n'
                      '[dicom]\nenabled = false\n[runtime]\nbackend = "onnxruntime"\n'
                      'precision = "fp32"\n' + sources
                      + '[[records.receivers]]\nname = "his"\nhost = "127.0.0.1"\nport = 9\n')
    if name == "rolled_back":  # two packages installed: the first rollback is done
        for version in ("1.1.0", "1.2.0"):
            install(load(str(config)), make_package(tmp_path / "packages", version))
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    capsys.readouterr()
    outputs: list[str] = []
    for argv in _runs(state, tmp_path):
        code = main([part for word in argv for part in (
            ("--config", str(config)) if word == "{config}" else (word,))])
        said = capsys.readouterr()
        words = said.out + said.err
        if argv[0] == "audit":  # the rows as recorded are data; their action is in words
            for field in _recorded_audit(config, capsys):
                words = words.replace(field, " ")
        assert english_sentences(readable(words)) == [], (
            english_sentences(readable(words)), name, argv, code, said)
        assert catalog_sentences(words) == [], (name, argv, said)
        assert is_chinese(words) or not words.strip(), (name, argv, said)
        outputs.append(said.out)
    if name == "rolled_back":  # the rollback done, in words
        assert outputs[9].startswith("已从 clinibox-demo-lesion@1.2.0 退回到 "), outputs[9]
