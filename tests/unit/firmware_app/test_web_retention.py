"""The viewer after retention deleted images: findings stay, a plain note replaces the image.

The box is the one ``tests/viewer_state.py`` fills with the real worker and
demo model; the real telemetry producer queues its alerts and a summary, and
the real retention pass deletes the images of the two studies moved 40 days
back in time.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import time
from collections import namedtuple

import pytest
from pypdf import PdfReader

from firmware_app.dicom_out.study_documents import ModelIdentity
from firmware_app.service.appliance import model_facts
from firmware_app.service.study_completion import StudyCompleter
from firmware_app.storage import db
from firmware_app.storage.retention import apply_retention
from firmware_app.telemetry.identity import load_identity
from firmware_app.telemetry.service import TelemetryProducer
from tests.viewer_state import CLINICIAN
from tests.web_client import ViewerClient

Usage = namedtuple("Usage", "total used free")
DAYS_KEPT = 40


@pytest.fixture
def retained(viewer, demo_runner):
    """The viewer box with the alert and sweep images deleted by retention, logged in."""
    state, app = viewer
    conn = db.connect(state.config.database_path)
    state.config.telemetry.summary_seconds = 1
    old = (state.instances["alert"], state.instances["sweep"])
    conn.executemany("UPDATE instances SET received_at = received_at - ? WHERE id = ?",
                     [(DAYS_KEPT * 86_400, i) for i in old])
    identity = load_identity(state.config)
    completer = StudyCompleter(state.config, ModelIdentity.from_manifest(
        demo_runner.package.manifest), identity.device)
    # the two old studies are complete; the others wait for the object still queued
    assert completer.tick(now=time.time() + state.config.studies.stable_seconds + 1) == 2
    completer.conn.close()
    producer = TelemetryProducer(state.config, identity, model_facts(demo_runner.package))
    producer.tick(now=time.time() + 5)  # alerts and a summary covering every result
    producer.conn.close()
    report = apply_retention(conn, state.config, disk_usage=lambda _p: Usage(100, 10, 90))
    assert sorted(report.instance_ids) == sorted(old)
    client = ViewerClient(app)
    assert client.login(*CLINICIAN).status_code == 302
    yield state, client, conn
    conn.close()


def _page(client: ViewerClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return response.get_data(as_text=True)


def _note() -> str:
    return (f"The image was deleted on {dt.date.today().isoformat()} after {DAYS_KEPT} days"
            " (retention); the findings are kept.")


def test_study_page_keeps_the_findings_and_says_the_image_was_deleted(retained):
    state, client, _conn = retained
    page = _page(client, f"/study/{state.studies['alert']}")
    assert _note() in page
    assert "Suspicious area found — a doctor should review this study soon" in page
    assert re.search(r"Area 1: possible lesion in the \w+ \w+ of the image|"
                     r"Area 1: possible lesion in the centre of the image", page)
    assert "clinibox-demo-lesion@1.0.0" in page and "assists a doctor" in page
    assert 'id="frame-image"' not in page and "/frame/" not in page
    assert "heatmap.png" not in page and 'id="window-form"' not in page
    assert 'name="verdict"' in page  # feedback stays possible
    assert " style=" not in page and "<script>" not in page  # the CSP rules still hold
    assert "script-src 'self'" in client.get(f"/study/{state.studies['alert']}").headers[
        "Content-Security-Policy"]
    kept = _page(client, f"/study/{state.studies['clear']}")
    assert 'id="frame-image"' in kept and "deleted on" not in kept
    sweep = _page(client, f"/study/{state.studies['sweep']}?frame=2")
    assert _note() in sweep and "frame 3 of 6" not in sweep


def test_image_routes_answer_gone(retained):
    state, client, _conn = retained
    instance, sweep = state.instances["alert"], state.instances["sweep"]
    for path in (f"/instance/{instance}/frame/0.png", f"/instance/{instance}/heatmap.png",
                 f"/instance/{instance}/key.png", f"/instance/{sweep}/frame/3.png",
                 f"/instance/{instance}/frame/0.png?centre=40&width=400"):
        response = client.get(path)
        assert response.status_code == 410, path
        assert "Image deleted" in response.get_data(as_text=True)
    assert client.get(f"/instance/{state.instances['clear']}/frame/0.png").status_code == 200
    answer = client.post(f"/instance/{instance}/feedback", {"finding": -1, "verdict": "agree"})
    assert answer.status_code == 302


@pytest.mark.slow
def test_report_and_pdf_keep_the_findings_with_the_note(retained):
    state, client, _conn = retained
    study = state.studies["alert"]
    page = _page(client, f"/study/{study}/report")
    assert _note() in page and "key.png" not in page
    assert "Suspicious area found" in page and "Area 1: possible lesion" in page
    pdf = client.get(f"/study/{study}/report.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    reader = PdfReader(io.BytesIO(pdf.data))
    text = " ".join("".join(p.extract_text() for p in reader.pages).split())
    assert "The image was deleted on" in text and "the findings are kept" in text
    assert "Area 1: possible lesion" in text and "Suspicious area found" in text
    assert not any(page.images for page in reader.pages)
    kept = client.get(f"/study/{state.studies['clear']}/report.pdf")
    assert any(p.images for p in PdfReader(io.BytesIO(kept.data)).pages)


def test_results_stay_and_findings_lose_only_their_place_without_a_size(retained):
    state, client, conn = retained
    instance = state.instances["alert"]
    row = conn.execute("SELECT i.image_deleted_at, i.image_rows, r.probability FROM instances i"
                       " JOIN results r ON r.instance_id = i.id WHERE i.id = ?",
                       (instance,)).fetchone()
    assert row["image_deleted_at"] is not None and row["image_rows"] > 0
    assert row["probability"] > 0.8
    assert f'/study/{state.studies["alert"]}"' in _page(client, "/")
    # an image whose size could not be read before it went: the place is left out
    conn.execute("UPDATE instances SET image_rows = NULL, image_columns = NULL WHERE id = ?",
                 (instance,))
    page = _page(client, f"/study/{state.studies['alert']}")
    assert re.search(
        r"Area 1: possible lesion, about [\d.]+ × [\d.]+ mm \(model confidence \d+ %[^)]*\)", page)
