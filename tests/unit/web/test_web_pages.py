"""The viewer's pages and image routes on a box the real worker filled (Flask test client)."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from firmware_app.storage import db
from tests.model_packages import DEMO
from tests.viewer_state import CLINICIAN, TECHNICIAN, XSS_ID, XSS_NAME
from tests.web_client import ViewerClient


def _logged_in(viewer, account: tuple[str, str]):
    state, app = viewer
    client = ViewerClient(app)
    assert client.login(*account).status_code == 302
    return state, client


@pytest.fixture
def clinician(viewer):
    return _logged_in(viewer, CLINICIAN)


@pytest.fixture
def technician(viewer):
    return _logged_in(viewer, TECHNICIAN)


def _html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def _png(response) -> Image.Image:
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    return Image.open(io.BytesIO(response.data))


# -- worklist ------------------------------------------------------------------------------


@pytest.mark.smoke
def test_worklist_puts_alerts_first_with_counts(clinician):
    state, client = clinician
    page = _html(client.get("/"))
    links = [int(n) for n in re.findall(r'href="/study/(\d+)"', page)]
    assert links.index(state.studies["clear"]) > max(links.index(state.studies["alert"]),
                                                     links.index(state.studies["sweep"]))
    assert "1 waiting for analysis" in page and "1 quarantined" in page
    assert "2 alerts" in page
    assert "CT CHEST PHANTOM" in page and "CT" in page
    assert dt.date.today().isoformat() in page  # received today


def test_quality_warnings_show_in_the_worklist_and_the_study(clinician):
    state, client = clinician
    worklist = _html(client.get("/"))
    assert '<span class="badge warn">image too dark, rescan suggested</span>' in worklist
    assert "low contrast, check window/exposure</span>" in worklist
    assert worklist.count('class="badge warn"') == 2  # only the dark study has warnings
    study = _html(client.get(f"/study/{state.studies['dark']}"))
    assert "Image too dark, rescan suggested" in study


def test_worklist_filters_by_status_and_day(clinician):
    state, client = clinician
    alerts = _html(client.get("/?status=alert"))
    assert f'/study/{state.studies["alert"]}"' in alerts
    assert f'/study/{state.studies["clear"]}"' not in alerts
    waiting = _html(client.get("/?status=waiting"))
    assert f"image {state.instances['waiting']} from a scanner (DICOM)" in waiting
    assert "/study/" not in waiting
    # its badge and status say so in words (the filter's name is not a label)
    assert '<span class="badge waiting">waiting for analysis</span>' in waiting
    assert ">waiting<" not in waiting
    held = _html(client.get("/?status=quarantined"))
    assert "truncated file" in held and f"image {state.instances['nm']} " not in held
    # good input no model here is meant for is listed apart from quarantine, with its reason
    unanalysed = _html(client.get("/?status=not_analysed"))
    assert f"image {state.instances['nm']} " in unanalysed
    assert "modality NM is not one the model" in unanalysed
    assert "1 not analysed" in _html(client.get("/"))
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    assert "Nothing here for" in _html(client.get(f"/?day={yesterday}"))
    today = _html(client.get(f"/?day={dt.date.today().isoformat()}"))
    assert f'/study/{state.studies["clear"]}"' in today
    assert client.get("/?day=not-a-day").status_code == 400
    assert client.get("/?status=everything").status_code == 400


def test_worklist_rows_fragment_and_json_follow_new_results(clinician):
    state, client = clinician
    rows = _html(client.get("/worklist/rows"))
    assert "<html" not in rows and "<table" in rows
    data = client.get("/api/worklist").get_json()
    assert data["total"] == 5 and data["waiting"] == 1 and data["quarantined"] == 1
    assert [r["alert"] for r in data["rows"]] == [True, True, False, False, False]
    conn = db.connect(state.config.database_path)
    conn.execute("UPDATE studies SET received_at = received_at + 1, alert = 0, band = 1,"
                 " suspicion = 0.01 WHERE id = ?", (state.studies["sweep"],))
    conn.close()
    data = client.get("/api/worklist").get_json()
    assert next(r["id"] for r in data["rows"]) == state.studies["alert"]
    assert data["alerts"] == 1


def test_worklist_is_in_clinical_order_and_never_ranks_a_probability_not_given(clinician):
    """Alerts, findings, then "a doctor must read" (outside the validated range, not
    assessable) with their reason and no percentage, then no finding: the real CT the model
    answered 95 % for, but refused to judge, sits below every finding and shows no 95 %."""
    state, client = clinician
    rows = client.get("/api/worklist").get_json()["rows"]
    levels = [r["level"] for r in rows]
    bands = [r["band"] for r in rows]
    assert bands == sorted(bands), levels
    by_id = {r["id"]: r for r in rows}
    for unjudged, level in (("real_ct", "outside"), ("dark", "unassessable")):
        assert by_id[state.studies[unjudged]]["level"] == level
        assert by_id[state.studies[unjudged]]["probability"] is None
    assert levels.index("outside") > max(i for i, lv in enumerate(levels)
                                         if lv in ("alert", "finding"))
    assert levels.index("clear") > levels.index("outside")
    page = _html(client.get("/"))
    row = re.search(r'<tr class="row-outside">.*?</tr>', page, re.S).group(0)
    result = re.search(r'<td class="result">(.*?)</td>', row, re.S).group(1)
    assert "doctor must read" in result and "outside validated range" in result
    assert "%" not in result


# -- study ---------------------------------------------------------------------------------


def test_study_shows_findings_in_plain_words_model_and_notices(clinician):
    state, client = clinician
    page = _html(client.get(f"/study/{state.studies['alert']}"))
    assert "Suspicious area found — a doctor should review this study soon" in page
    assert re.search(r"Area 1: possible lesion in the .* of the image, about [\d.]+ × [\d.]+ mm"
                     r" \(model confidence \d+ %[^)]*\)",
                     page)
    assert "clinibox-demo-lesion@1.0.0" in page
    assert "assists a doctor and does not replace one" in page
    assert "not for clinical use" in page
    assert 'id="show-boxes"' in page and 'id="show-heatmap"' in page
    assert "<rect " in page  # the boxes layer
    assert "/heatmap.png" in page
    assert "Soft tissue" in page  # CT window presets
    clear = _html(client.get(f"/study/{state.studies['clear']}"))
    assert "No suspicious area found by the model" in clear


def test_dicom_strings_are_escaped_everywhere(clinician):
    state, client = clinician
    study = state.studies["alert"]
    for path in ("/", "/worklist/rows", f"/study/{study}", f"/study/{study}/report"):
        page = _html(client.get(path))
        assert "<script>window.__xss" not in page, path
        assert "onerror=" not in page.replace("onerror=&#34;", "").replace("onerror=&quot;", ""), \
            path
        # the name as a reader writes it (its PN groups split at "="), escaped
        assert "&lt;script&gt;window.__xss" in page, path
    rows = {r["id"]: r for r in client.get("/api/worklist").get_json()["rows"]}
    assert rows[study]["patient_name"] == XSS_NAME  # JSON keeps the value; pages escape it
    assert rows[study]["patient_id"] == XSS_ID


def test_multiframe_navigation_and_window_level(clinician):
    state, client = clinician
    study = state.studies["sweep"]
    page = _html(client.get(f"/study/{study}"))
    frame = int(re.search(r"frame (\d+) of 6", page).group(1))
    other = 0 if frame != 1 else 5
    moved = _html(client.get(f"/study/{study}?frame={other}"))
    assert f"frame {other + 1} of 6" in moved
    assert "Marks are shown on frame" in moved and "<rect " not in moved
    assert client.get(f"/study/{study}?frame=6").status_code == 404
    assert client.get(f"/study/{study}?frame=x").status_code == 400
    assert client.get(f"/study/{study}?centre=1&width=0").status_code == 400
    assert client.get(f"/study/{study}?centre=nan&width=5").status_code == 400
    assert client.get("/study/999999").status_code == 404


def test_frame_png_follows_window_and_frame(clinician):
    state, client = clinician
    instance = state.instances["alert"]
    wide = _png(client.get(f"/instance/{instance}/frame/0.png?centre=40&width=4000"))
    narrow = _png(client.get(f"/instance/{instance}/frame/0.png?centre=40&width=10"))
    assert wide.size == narrow.size
    assert wide.tobytes() != narrow.tobytes()
    sweep = state.instances["sweep"]
    first = _png(client.get(f"/instance/{sweep}/frame/0.png")).tobytes()
    last = _png(client.get(f"/instance/{sweep}/frame/5.png")).tobytes()
    assert first != last
    assert client.get(f"/instance/{sweep}/frame/6.png").status_code == 404
    held = state.instances["truncated"]
    assert client.get(f"/instance/{held}/frame/0.png").status_code == 404


def test_heatmap_and_key_image(clinician):
    state, client = clinician
    instance = state.instances["alert"]
    frame = _png(client.get(f"/instance/{instance}/frame/0.png"))
    heat = _png(client.get(f"/instance/{instance}/heatmap.png"))
    assert heat.mode == "RGBA" and heat.size == frame.size
    alpha = heat.getchannel("A")
    assert alpha.getextrema()[1] > 0  # something is hot
    assert alpha.getextrema()[0] == 0  # and most of the image is not
    key = _png(client.get(f"/instance/{instance}/key.png"))
    rgb = np.asarray(key.convert("RGB")).astype(int)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 100) & (rgb[..., 2] < 100)
    assert red.any()  # the box drawn in


# -- feedback ------------------------------------------------------------------------------


def _feedback_rows(state) -> list[tuple]:
    conn = db.connect(state.config.database_path)
    rows = conn.execute("SELECT f.instance_id, f.finding, f.verdict, a.name FROM feedback f"
                        " JOIN accounts a ON a.id = f.account_id ORDER BY f.id").fetchall()
    conn.close()
    return [tuple(r) for r in rows]


def test_feedback_is_stored_per_clinician_and_finding_and_counted(clinician):
    state, client = clinician
    instance = state.instances["alert"]
    answer = client.post(f"/instance/{instance}/feedback", {"finding": 0, "verdict": "agree"})
    assert answer.status_code == 302 and answer.location.endswith("#feedback")
    client.post(f"/instance/{instance}/feedback", {"finding": 0, "verdict": "disagree"})
    client.post(f"/instance/{instance}/feedback", {"finding": -1, "verdict": "unsure"})
    assert _feedback_rows(state) == [(instance, 0, "disagree", CLINICIAN[0]),
                                     (instance, -1, "unsure", CLINICIAN[0])]
    page = _html(client.get(f"/study/{state.studies['alert']}"))
    assert "so far: 1 disagree" in page and "so far: 1 unsure" in page
    assert 'aria-pressed="true"' in page


def test_feedback_refuses_bad_input(clinician):
    state, client = clinician
    instance = state.instances["alert"]
    assert client.post(f"/instance/{instance}/feedback",
                       {"finding": 0, "verdict": "maybe"}).status_code == 400
    assert client.post(f"/instance/{instance}/feedback",
                       {"finding": 99, "verdict": "agree"}).status_code == 400
    assert client.post(f"/instance/{instance}/feedback",
                       {"finding": "x", "verdict": "agree"}).status_code == 400
    held = state.instances["truncated"]
    assert client.post(f"/instance/{held}/feedback",
                       {"finding": -1, "verdict": "agree"}).status_code == 404
    assert client.post(f"/instance/{instance}/feedback", {"finding": 0, "verdict": "agree"},
                       token="").status_code == 400  # no CSRF token
    assert _feedback_rows(state) == []


# -- report --------------------------------------------------------------------------------


def test_report_page_and_pdf(clinician):
    state, client = clinician
    study = state.studies["alert"]
    page = _html(client.get(f"/study/{study}/report"))
    assert f"/instance/{state.instances['alert']}/key.png" in page
    assert 'id="print-report"' in page and "Suspicious area found" in page
    assert "clinibox-demo-lesion@1.0.0" in page and "Report made" in page
    pdf = client.get(f"/study/{study}/report.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert "inline" in pdf.headers["Content-Disposition"]
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.data)).pages)
    assert "Suspicious area found" in text
    assert "clinibox-demo-lesion@1.0.0" in text
    assert "<script>window.__xss" in text  # a PDF shows the name as text, never markup


def test_pages_images_and_reports_draw_from_the_workers_previews(clinician, monkeypatch):
    """No request decodes an image: the worker stored a preview of every analysed frame."""
    from firmware_app.storage.spool import preview_path
    from web import render

    state, client = clinician
    conn = db.connect(state.config.database_path)
    paths = dict(conn.execute("SELECT id, spool_path FROM instances").fetchall())
    conn.close()
    for name in ("alert", "clear", "sweep", "dark"):
        assert preview_path(Path(paths[state.instances[name]])).is_file(), name
    assert not preview_path(Path(paths[state.instances["truncated"]])).exists()  # quarantined

    def decoding(limits):
        raise AssertionError("the viewer started decoding an image")

    monkeypatch.setattr(render, "_sandbox", decoding)
    render.clear_cache()
    study, alert, sweep = (state.studies["alert"], state.instances["alert"],
                           state.instances["sweep"])
    for path in (f"/study/{study}", f"/instance/{alert}/frame/0.png?centre=40&width=400",
                 f"/instance/{alert}/heatmap.png", f"/instance/{alert}/key.png",
                 f"/study/{study}/report.pdf", f"/instance/{sweep}/frame/5.png",
                 f"/study/{state.studies['sweep']}?frame=3"):
        assert client.get(path).status_code == 200, path


# -- device --------------------------------------------------------------------------------


def test_device_page_shows_the_box(technician):
    _state, client = technician
    page = _html(client.get("/device"))
    assert re.search(r'id="queue-depth">1<', page)
    assert "truncated file" in page
    assert "clinibox-demo-lesion@1.0.0" in page and "signature verified" in page
    int8 = next(a for a in json.loads((DEMO / "manifest.json").read_text())["artifacts"]
                if a["path"] == "model.int8.onnx")
    auc = f'{int8["validation"]["auc"]:.3f}'  # validation metrics, to three decimals
    assert "onnx/int8" in page and f"<td>{auc}</td>" in page
    assert "not configured" in page and "never connected" in page
    assert re.search(r'id="processed-today">5<', page)
    assert "not running" in page  # no appliance service in this test
    status = client.get("/api/status").get_json()
    assert status["queue_depth"] == 1 and status["statuses"]["quarantined"] == 1
    assert status["package"]["model_id"] == "clinibox-demo-lesion@1.0.0"
    assert status["disk"]["free_mb"] > 0


def test_device_page_reads_the_link_state_the_publisher_writes(technician):
    state, client = technician
    conn = db.connect(state.config.database_path)
    conn.executemany("INSERT INTO telemetry_state(name, value) VALUES (?, ?)",
                     [("link_up", 1.0), ("link_since", 1_700_000_000.0),
                      ("appliance_seen_at", time.time())])
    conn.close()
    page = _html(client.get("/device"))
    assert re.search(r'id="link-state" class="ok">up since', page)
    assert re.search(r'id="service-state" class="ok">running', page)


def test_quarantine_list_and_actions(technician):
    state, client = technician
    held = state.instances["truncated"]
    page = _html(client.get("/device/quarantine"))
    assert f'id="object-{held}"' in page and "truncated file" in page
    answer = client.post(f"/device/quarantine/{held}/process")
    assert answer.status_code == 302
    conn = db.connect(state.config.database_path)
    row = conn.execute("SELECT status, attempts, spool_path FROM instances WHERE id=?",
                       (held,)).fetchone()
    assert row["status"] == "queued" and row["attempts"] == 0
    assert Path(row["spool_path"]).exists()
    conn.execute("UPDATE instances SET status='quarantined', reason='again' WHERE id=?", (held,))
    assert client.post(f"/device/quarantine/{held}/delete").status_code == 302
    assert conn.execute("SELECT COUNT(*) FROM instances WHERE id=?", (held,)).fetchone()[0] == 0
    events = [r[0] for r in conn.execute("SELECT message FROM events ORDER BY id")]
    conn.close()
    assert any(f"object {held} queued again by {TECHNICIAN[0]}" in e for e in events)
    assert any(f"object {held} deleted by {TECHNICIAN[0]}" in e for e in events)
    processed = state.instances["alert"]
    assert client.post(f"/device/quarantine/{processed}/delete").status_code == 404
    assert "Nothing is quarantined" in _html(client.get("/device/quarantine"))


def test_status_json_is_serialisable(technician):
    _state, client = technician
    json.dumps(client.get("/api/status").get_json())


def test_device_page_and_clinibox_status_read_the_same_figures(technician):
    """Regression: they disagreed on what a quarantine reason is and on the outbox count."""
    from firmware_app.cli.commands import status_report

    state, client = technician
    conn = db.connect(state.config.database_path)
    conn.execute("UPDATE instances SET status='failed', reason='worker crashed twice'"
                 " WHERE id=?", (state.instances["clear"],))
    conn.execute("INSERT INTO outbox(kind, priority, payload, state, created_at)"
                 " VALUES ('summary', 1, '{}', 'pending', ?)", (time.time(),))
    conn.close()
    page = client.get("/api/status").get_json()
    cli = status_report(state.config)
    shared = ("received", "queued", "processed", "quarantined", "failed", "duplicates_ignored",
              "studies", "quarantine_reasons", "outbox_pending", "images_deleted_by_retention",
              "last_retention_pass")
    assert {k: page[k] for k in shared} == {k: cli[k] for k in shared}
    assert cli["quarantine_reasons"]["worker crashed twice"] == 1
    assert any("truncated file" in reason for reason in cli["quarantine_reasons"])
    assert cli["outbox_pending"] >= 1 and cli["failed"] == 1
    assert "worker crashed twice" in _html(client.get("/device"))


@pytest.mark.slow
def test_an_image_the_model_cannot_judge_is_never_called_clear(clinician):
    """The dark ultrasound phantom: not assessable, with its reason, in every view."""
    state, client = clinician
    dark = state.studies["dark"]
    study = _html(client.get(f"/study/{dark}"))
    assert 'class="verdict unassessable"' in study and "Not assessable: image too dark" in study
    assert "rescan suggested" in study and "No suspicious area found" not in study
    report = _html(client.get(f"/study/{dark}/report"))
    assert "Not assessable" in report and "No suspicious area found" not in report
    worklist = _html(client.get("/"))
    row = re.search(rf'href="/study/{dark}"><span class="badge (\w+)">([^<]+)<', worklist)
    assert row and row.groups() == ("unassessable", "doctor must read")
    pdf = client.get(f"/study/{dark}/report.pdf")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.data)).pages)
    assert "Not assessable" in text and "No suspicious area found" not in text
    _no_result_shown(client, state, "dark", study, report, text)


def _no_result_shown(client, state, name: str, study: str, report: str, pdf_text: str) -> None:
    """An image the model gives no result for shows no probability, no heatmap and no "do
    you agree?" anywhere; its answer stays in the database and ``results --json`` under a
    name that says it was not shown."""
    instance = state.instances[name]
    for text in (study, report, pdf_text):
        assert "%" not in re.sub(r"<(style|script)\b.*?</\1>", "", text, flags=re.S), name
        assert "probability" not in text.lower() and "do you agree" not in text.lower()
    assert 'id="heatmap"' not in study and 'for="show-heatmap"' not in study
    assert client.get(f"/instance/{instance}/heatmap.png").status_code == 404
    conn = db.connect(state.config.database_path)
    raw = conn.execute("SELECT probability, heatmap IS NOT NULL FROM results"
                       " WHERE instance_id = ?", (instance,)).fetchone()
    conn.close()
    assert raw[0] is not None and raw[1] == 0  # the answer kept; no heatmap made
    from firmware_app.storage.results import ResultStore
    conn = db.connect(state.config.database_path)
    row = next(r for r in ResultStore(conn).instances() if r["id"] == instance)
    conn.close()
    assert row["probability"] is None and row["probability_not_shown"] == raw[0]


def test_a_real_scan_outside_the_validated_range_gets_no_verdict(clinician):
    """pydicom's CT_small, a real CT the phantom-trained demo model never saw: outside."""
    state, client = clinician
    real = state.studies["real_ct"]
    study = _html(client.get(f"/study/{real}"))
    assert 'class="verdict outside"' in study
    assert "Outside what the model was validated on" in study and "no result" in study
    assert "No suspicious area found" not in study and "Suspicious area found" not in study
    report = _html(client.get(f"/study/{real}/report"))
    assert "Outside what the model was validated on" in report
    worklist = _html(client.get("/"))
    row = re.search(rf'href="/study/{real}"><span class="badge (\w+)">([^<]+)<', worklist)
    assert row and row.groups() == ("outside", "doctor must read")
    pdf = client.get(f"/study/{real}/report.pdf")
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.data)).pages)
    assert "Outside what the model was validated on" in " ".join(text.split())
    assert "No suspicious area found" not in text
    assert "beyond the validated limit" not in study  # the technician's detail
    _no_result_shown(client, state, "real_ct", study, report, text)


def test_lesions_show_their_outline_class_and_the_study_summary(clinician):
    """The demo model segments and classifies: its lesions carry a contour and classes."""
    state, client = clinician
    alert = state.studies["alert"]
    study = _html(client.get(f"/study/{alert}"))
    assert '<polygon class="contour" points="' in study
    summary = re.search(r'<p class="summary" id="summary">([^<]+)</p>', study)
    assert summary and "lesion" in summary.group(1) and "largest diameter" in summary.group(1)
    assert " mm" in summary.group(1) and "malignant" not in summary.group(1)  # said per lesion
    legend = re.search(r'<p class="legend" id="legend"><small>([^<]+)</small>', study)
    assert legend and "model confidence" in legend.group(1)
    assert "demonstration model" in legend.group(1)  # the model card's caution beside classes
    assert re.search(r"Area 1: possible lesion .*about [\d.]+ × [\d.]+ mm.*(benign|malignant) "
                     r"\d+ %", study)
    report = _html(client.get(f"/study/{alert}/report"))
    assert summary.group(1) in report
