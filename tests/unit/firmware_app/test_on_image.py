"""The study page's image tools, server side: calibration, lesion table, the previous study.

The distance tool's spacing comes from the box (the previews the worker
stored, the calibration the lesions were measured with), never from the
browser; the previous study is found on the box by Patient ID only.
"""

from __future__ import annotations

import html
import json
import re
import sqlite3

import pydicom
import pytest

from firmware_app.storage import db
from firmware_app.storage import studies as queries
from tests.viewer_state import CLINICIAN
from tests.web_client import ViewerClient


def _study_row(conn: sqlite3.Connection, key: str, patient_id: str, study_date: str,
               received_at: float, name: str = "") -> int:
    return conn.execute(
        "INSERT INTO studies(study_key, instances, max_probability, findings, alert, warnings,"
        " received_at, updated_at, patient_id, study_date, patient_name)"
        " VALUES (?, 1, 0.1, 0, 0, 0, ?, ?, ?, ?, ?)",
        (key, received_at, received_at, patient_id, study_date, name)).lastrowid


def test_previous_study_is_the_same_patients_latest_earlier_one(conn):
    older = _study_row(conn, "1.1", "P-1", "20240101", 100.0)
    earlier = _study_row(conn, "1.2", "P-1", "20250101", 50.0)  # sent late: dated earlier
    _study_row(conn, "2.1", "P-2", "20250601", 150.0)           # another patient
    current = _study_row(conn, "1.3", "P-1", "20250701", 200.0)
    later = _study_row(conn, "1.4", "P-1", "20251201", 300.0)
    conn.commit()
    assert queries.previous_study(conn, current)["id"] == earlier
    assert queries.previous_study(conn, earlier)["id"] == older
    assert queries.previous_study(conn, older) is None
    assert queries.previous_study(conn, later)["id"] == current


def test_no_previous_study_without_a_patient_id_or_for_another_patient(conn):
    _study_row(conn, "1.1", "", "20240101", 100.0)
    blank = _study_row(conn, "1.2", "", "20250101", 200.0)
    _study_row(conn, "2.1", "P-2", "20240101", 100.0)
    alone = _study_row(conn, "3.1", "P-3", "20250101", 200.0)
    conn.commit()
    assert queries.previous_study(conn, blank) is None
    assert queries.previous_study(conn, alone) is None
    assert queries.previous_study(conn, 9999) is None


def test_a_reused_patient_id_does_not_join_two_named_patients(conn):
    """A default ID (phantoms, some modalities) on two named people: no previous study; the
    same person's name written with trailing carets, or a study without a name, still is."""
    _study_row(conn, "1.1", "PHANTOM-0000", "20240101", 100.0, "DARK^PHANTOM")
    other = _study_row(conn, "1.2", "PHANTOM-0000", "20250101", 200.0, "DEMO^PHANTOM")
    same = _study_row(conn, "1.3", "PHANTOM-0000", "20250601", 300.0, "DEMO^PHANTOM^^")
    unnamed = _study_row(conn, "1.4", "PHANTOM-0000", "20250701", 400.0, "")
    conn.commit()
    assert queries.previous_study(conn, other) is None
    assert queries.previous_study(conn, same)["id"] == other
    assert queries.previous_study(conn, unnamed)["id"] == same


@pytest.fixture
def clinician(viewer):
    state, app = viewer
    client = ViewerClient(app)
    assert client.login(*CLINICIAN).status_code == 302
    return state, client


def _page(client, study_id: int) -> str:
    response = client.get(f"/study/{study_id}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_study_page_carries_the_images_calibration_and_its_lesions(clinician):
    state, client = clinician
    page = _page(client, state.studies["alert"])
    conn = db.connect(state.config.database_path)
    path, lesions_json = conn.execute(
        "SELECT i.spool_path, r.lesions_json FROM instances i JOIN results r"
        " ON r.instance_id = i.id WHERE i.id = ?", (state.instances["alert"],)).fetchone()
    conn.close()
    row_mm, column_mm = (float(v) for v in pydicom.dcmread(path).PixelSpacing)
    assert f'data-row-mm="{row_mm!r}"' in page and f'data-column-mm="{column_mm!r}"' in page
    lesions = json.loads(lesions_json)
    assert lesions, "the alert phantom has a lesion"
    rows = re.findall(r'<tr id="lesion-(\d+)" data-lesion="\d+" data-frame="(\d+)"'
                      r' data-box="([^"]+)"', page)
    assert len(rows) == len(lesions)
    for (number, frame, box), lesion in zip(rows, lesions, strict=True):
        assert int(frame) == lesion["frame"]
        assert [float(v) for v in box.split(",")] == pytest.approx(lesion["box"])
        if lesion["frame"] == lesions[0]["frame"]:  # drawn on the frame shown
            assert f'data-lesion="{number}"' in page.split('id="boxes"')[1].split("</svg>")[0]
    assert "mm" in html.unescape(page.split('id="lesion-table"')[1].split("</table>")[0])
    assert 'id="previous-study"' not in page
    assert "image_tools.js" in page and "measure.js" in page


def test_study_page_shows_the_same_patients_previous_study_only(clinician):
    state, client = clinician
    conn = db.connect(state.config.database_path)
    patient, name = conn.execute("SELECT patient_id, patient_name FROM studies WHERE id = ?",
                                 (state.studies["alert"],)).fetchone()
    with db.transaction(conn):  # the clear phantom becomes the same patient's earlier study
        conn.execute("UPDATE studies SET patient_id = ?, patient_name = ?, study_date = '',"
                     " received_at = 1.0 WHERE id = ?", (patient, name, state.studies["clear"]))
        conn.execute("UPDATE studies SET study_date = '' WHERE id = ?", (state.studies["alert"],))
    conn.close()
    page = _page(client, state.studies["alert"])
    section = page.split('id="previous-study"')[1].split("</section>")[0]
    assert f'href="/study/{state.studies["clear"]}"' in section
    assert "/key.png" in section
    assert 'id="previous-study"' not in _page(client, state.studies["sweep"])
    # the earlier study does not show the later one as "previous"
    assert 'id="previous-study"' not in _page(client, state.studies["clear"])


def test_a_cine_lists_its_lesions_with_frames_and_draws_them_on_their_frame(clinician):
    state, client = clinician
    conn = db.connect(state.config.database_path)
    lesions = json.loads(conn.execute("SELECT lesions_json FROM results WHERE instance_id = ?",
                                      (state.instances["sweep"],)).fetchone()[0])
    conn.close()
    assert lesions, "the sweep phantom has a lesion"
    page = _page(client, state.studies["sweep"])
    frames = re.findall(r'<tr id="lesion-\d+" data-lesion="\d+" data-frame="(\d+)"', page)
    assert [int(f) for f in frames] == [lesion["frame"] for lesion in lesions]
    for number, lesion in enumerate(lesions, start=1):
        shown = _page(client, f"{state.studies['sweep']}?instance={state.instances['sweep']}"
                              f"&frame={lesion['frame']}")
        boxes = shown.split('id="boxes"')[1].split("</svg>")[0]
        assert f'data-lesion="{number}"' in boxes
        assert f'frame={lesion["frame"]}#lesion-{number}"' in html.unescape(page)
