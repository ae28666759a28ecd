"""While the box has no model it may run it keeps receiving images: the worklist, the study
page, the device page and ``clinibox status`` say so in plain words, in English and Chinese,
and show the hospital's latest model rollouts with words for their steps and reasons."""

from __future__ import annotations

import json
import re

import pytest

from clinibox.table import main
from clinibox_common.i18n import gettext, ngettext, use_locale
from firmware_app.storage import audit, db, model_offers
from firmware_app.telemetry.messages import device_event, queue_device_event
from firmware_app.words import event_words, labels
from firmware_app.words import model_update_words as model_words
from tests.i18n_text import english_sentences, is_chinese, visible_text
from tests.viewer_state import CLINICIAN, TECHNICIAN
from tests.web_client import ViewerClient

ZH = "zh-CN,zh;q=0.9,en;q=0.5"
PACKAGE = "clinibox-demo-lesion"


@pytest.fixture(autouse=True)
def _rollout_audit_actions(monkeypatch):
    """``model_offers.add`` records ``model_<kind>_received``; until the audit vocabulary
    (``storage/audit.ACTIONS``) names them, they are added here for these tests."""
    for kind in ("rollout", "rollback"):
        action = f"model_{kind}_received"
        if action not in audit.ACTIONS:
            monkeypatch.setitem(audit.ACTIONS, action, labels.ACTION_NAMES[action])


def _client(app, who: tuple[str, str], chinese: bool = False) -> ViewerClient:
    client = ViewerClient(app)
    if chinese:
        client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = ZH
    assert client.login(*who).status_code == 302
    return client


def _html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def _wait(state, reason: str = "not_installed") -> None:
    """The box waits for a model (as the service notes it) and has had two rollout orders."""
    conn = db.connect(state.config.database_path)
    try:
        with db.transaction(conn):
            model_offers.set_waiting(conn, reason, "no model package found under /srv/models")
            model_offers.add(conn, seq=4, kind="rollout", step="refused", reason="no_space",
                             done=True, payload={"rollout": 6, "name": PACKAGE,
                                                 "version": "1.1.0"})
            model_offers.add(conn, seq=5, kind="rollout", step="downloading",
                             payload={"rollout": 7, "name": PACKAGE, "version": "2.0.0"})
    finally:
        conn.close()


def _zh(message: str, **values: object) -> str:
    with use_locale("zh_CN"):
        return gettext(message, **values)


def test_the_worklist_says_the_box_waits_for_a_model(viewer):
    state, app = viewer
    client = _client(app, CLINICIAN)
    before = _html(client.get("/"))
    assert 'id="model-waiting"' not in before and "1 waiting for analysis" in before
    _wait(state)
    page = _html(client.get("/"))
    assert 'id="model-waiting"' in page
    assert ("This box has no model it may use yet. Images are received and kept; they will be "
            "analysed as soon as the hospital sends a model. Do not send them again.") in page
    assert "1 waiting for a model" in page and "1 waiting for analysis" not in page
    rows = _html(client.get("/worklist/rows"))  # the page's refresh keeps the banner
    assert 'id="model-waiting"' in rows
    waiting = _html(client.get("/?status=waiting"))
    row = re.search(r'<tr class="row-(\w+)">\s*<td><span class="badge \w+">([^<]+)<', waiting)
    assert row and row.groups() == ("waiting_for_model", "waiting for a model")
    assert client.get("/api/worklist").get_json()["waiting_for_model"] == "not_installed"


def test_a_study_with_images_waiting_says_so(viewer):
    state, app = viewer
    conn = db.connect(state.config.database_path)
    key = conn.execute("SELECT study_key FROM studies WHERE id = ?",
                       (state.studies["clear"],)).fetchone()[0]
    conn.execute("UPDATE instances SET study_instance_uid = ? WHERE id = ?",
                 (key, state.instances["waiting"]))
    conn.close()
    client = _client(app, CLINICIAN)
    assert 'id="model-waiting"' not in _html(client.get(f"/study/{state.studies['clear']}"))
    _wait(state)
    page = _html(client.get(f"/study/{state.studies['clear']}"))
    assert "1 image of this study is waiting for a model" in page
    assert 'id="model-waiting"' not in _html(client.get(f"/study/{state.studies['alert']}"))


def test_the_device_page_shows_the_wait_and_the_hospitals_rollouts(viewer):
    state, app = viewer
    client = _client(app, TECHNICIAN)
    before = _html(client.get("/device"))
    assert 'id="model-waiting-alarm"' not in before and "None received yet." in before
    _wait(state, "signature")
    page = _html(client.get("/device"))
    assert ("Waiting for a model: the package&#39;s signature is not from a trusted key."
            in page)
    assert re.search(r'id="model-state" class="bad">waiting for a model: the package&#39;s '
                     r"signature is not from a trusted key, since \d{4}-\d\d-\d\d", page)
    assert "1 image received and held until a model is installed" in page
    orders = re.findall(r'<tr class="model-order"><td>([^<]+)</td><td translate="no">([^<]+)'
                        r"</td><td[^>]*>([^<]+)</td>", page)
    assert orders == [
        ("rollout 7", f"{PACKAGE}@2.0.0", "downloading"),
        ("rollout 6", f"{PACKAGE}@1.1.0",
         "refused (not enough free disk space for the package)")]
    status = client.get("/api/status").get_json()
    assert status["model_waiting"]["reason"] == "signature"
    assert [o["step"] for o in status["model_orders"]] == ["downloading", "refused"]


def test_the_pages_in_chinese(viewer):
    state, app = viewer
    _wait(state)
    nurse = _client(app, CLINICIAN, chinese=True)
    banner = _zh(model_words.WAITING_BANNER)
    assert is_chinese(banner) and not re.search("[A-Za-z]", banner)
    for path in ("/", "/worklist/rows", "/?status=waiting"):
        text = visible_text(_html(nurse.get(path)))
        assert english_sentences(text) == [], (path, english_sentences(text))
    worklist = _html(nurse.get("/"))
    assert banner in worklist and _zh("%(n)s waiting for a model", n=1) in worklist
    with use_locale("zh_CN"):
        word = labels.status("waiting_for_model")
    assert is_chinese(word) and word in _html(nurse.get("/?status=waiting"))
    technician = _client(app, TECHNICIAN, chinese=True)
    device = _html(technician.get("/device"))
    text = visible_text(device)
    assert english_sentences(text) == [], english_sentences(text)
    with use_locale("zh_CN"):
        shown = [model_words.step("downloading"), model_words.reason("no_space"),
                 model_words.reason("not_installed"), model_words.kind(
                     {"kind": "rollout", "rollout": 7})]
    assert all(is_chinese(words) and words in text for words in shown), shown


@pytest.mark.parametrize("chinese", [False, True])
def test_clinibox_status_says_the_box_waits_for_a_model(viewer, tmp_path, capsys, monkeypatch,
                                                        chinese):
    state, _app = viewer
    config = tmp_path / "clinibox.toml"
    config.write_text(f'[storage]\nstate_dir = "{state.config.state_dir.as_posix()}"\n'
                      "[dicom]\nenabled = false\n")
    monkeypatch.setenv("LANG", "zh_CN.UTF-8" if chinese else "C")
    assert main(["status", "--config", str(config)]) == 0
    assert "WAITING FOR A MODEL" not in capsys.readouterr().out
    _wait(state)
    assert main(["status", "--json", "--config", str(config)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model_waiting"]["reason"] == "not_installed"
    assert report["model_orders"][0]["model_id"] == f"{PACKAGE}@2.0.0"
    assert "payload" not in report["model_orders"][0]
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    language = "zh_CN" if chinese else "en"
    with use_locale(language):
        reason = model_words.reason("not_installed")
        held = ngettext("%(num)s image received and held until a model is installed",
                        "%(num)s images received and held until a model is installed", 1)
        lines = [model_words.order_line(order) for order in report["model_orders"]]
        heading = gettext("model updates from the hospital (newest first):")
    assert reason in out[0] and held in out[0] and "clinibox model install" in out[0]
    assert ("model: WAITING FOR A MODEL — " in out[0]) is not chinese
    assert heading in out
    for line in lines:
        assert any(shown.endswith(line) for shown in out), line
    if chinese:
        assert is_chinese(out[0]) and is_chinese(lines[1])
    else:
        assert lines == ["rollout 7, clinibox-demo-lesion@2.0.0: downloading",
                         "rollout 6, clinibox-demo-lesion@1.1.0: refused (not enough free "
                         "disk space for the package)"]


def test_the_chinese_device_page_says_the_refusal_and_the_log_in_words(viewer):
    """While the box waits for a model the Chinese page shows no English refusal and no raw
    log line: the reason, the log's level, part and model event are words from their codes
    (the English page keeps the refusal's detail and the recorded line)."""
    state, app = viewer
    _wait(state, "signature")
    conn = db.connect(state.config.database_path)
    try:
        queue_device_event(conn, 100, device_event("model_unavailable", "signature", "", PACKAGE),
                           "model_unavailable (signature): clinibox-demo-lesion; the box "
                           "waits for a model")
        queue_device_event(conn, 100, device_event("model_refused", "tampered", "",
                                                   f"{PACKAGE}@2.0.0", rollout=7),
                           "model_refused (tampered): clinibox-demo-lesion@2.0.0")
    finally:
        conn.close()
    page = _html(_client(app, TECHNICIAN, chinese=True).get("/device"))
    assert "no model package found under" not in page  # the refusal's English detail
    assert "model_unavailable (signature)" not in page and "WARNING" not in page
    assert "lifecycle" not in page
    with use_locale("zh_CN"):
        unavailable = event_words.said("model_unavailable:signature")
        refused = event_words.said("model_refused:tampered")
        step = event_words.said("rollout:no_space:refused")
        warning, model = event_words.level("WARNING"), event_words.component("lifecycle")
    assert step == _zh("%(event)s (%(reason)s)", event=_zh(
        "%(event)s: %(step)s", event=_zh("model update from the hospital"),
        step=_zh("refused")), reason=_zh(model_words.REASONS["no_space"]))
    assert unavailable == _zh("%(event)s (%(reason)s)", event=_zh("model unavailable"),
                              reason=_zh(model_words.REASONS["signature"]))
    rows = re.findall(r'<tr class="event"><td>[^<]+</td><td>([^<]+)</td><td>([^<]+)</td>'
                      r"<td>([^<]+)</td></tr>", page)
    assert (warning, model, unavailable) in rows, rows
    assert any(row[2] == refused for row in rows), rows
    assert all(is_chinese(words) and not re.search("[A-Za-z]", words)
               for words in (unavailable, refused, step, warning, model))
    assert english_sentences(visible_text(page)) == []
    english = _html(_client(app, TECHNICIAN).get("/device"))
    assert "no model package found under /srv/models" in english
    assert "model unavailable (the package&#39;s signature is not from a trusted key)" in english


def test_the_device_page_shows_the_downloads_progress(viewer):
    """The order being downloaded shows bytes of total, percent, rate and time left (as the
    updater last wrote them), in English and Chinese; /api/status gives the numbers."""
    import time

    from firmware_app.storage import download_progress

    state, app = viewer
    _wait(state)
    conn = db.connect(state.config.database_path)
    try:
        with db.transaction(conn):
            download_progress.record(conn, 5, 2_300_000, 4_700_000, 20_000.0, time.time())
    finally:
        conn.close()
    page = _html(_client(app, TECHNICIAN).get("/device"))
    assert '<progress id="download-bar" max="100" value="48.9">' in page
    assert re.search(r'id="download-progress">2\.3 MB of 4\.7 MB \(48\.9 %\), 20\.0 KB/s, '
                     r"about 2 min left<", page), page[page.index("model-orders"):][:1500]
    shown = _client(app, TECHNICIAN).get("/api/status").get_json()["download"]
    assert (shown["seq"], shown["received_bytes"], shown["seconds_left"]) == (5, 2_300_000, 120)
    chinese = _html(_client(app, TECHNICIAN, chinese=True).get("/device"))
    with use_locale("zh_CN"):
        line = model_words.progress(download_progress_of(state), time.time())
    assert line in chinese and "约剩 2 分钟" in line
    assert english_sentences(visible_text(chinese)) == []


def download_progress_of(state):
    """The download the box noted, read back."""
    from firmware_app.storage import download_progress

    conn = db.connect(state.config.database_path)
    try:
        return download_progress.current(conn)
    finally:
        conn.close()
