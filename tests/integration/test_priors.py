"""A study with a finding is compared with the patient's earlier study, which the box asks a
real PACS for (Orthanc: C-FIND, then C-GET) and analyses itself.

Orthanc holds the patient's earlier CT study (a phantom of the bundled demo model, trained
on synthetic images and not for clinical use, dated 2026-03-02) with a smaller pixel
spacing: the same lesion, measured smaller then. dcmtk's storescu sends today's study to
the box; the box asks Orthanc, fetches the earlier study into its own intake, analyses it,
and only then completes today's study: its page says "was … mm on 2026-03-02", its report
to the records and its alert carry the growth, and the earlier study itself is sent
nowhere (no SR of it reaches Orthanc, no alert, no report).
"""

from __future__ import annotations

import html
import io
import json
import re
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from firmware_app.service.appliance import load_runner
from firmware_app.settings.box import Config, load
from phantoms.dicom import write_dicom
from tests.box_harness import add_viewer_account
from tests.integration.conftest import Box, storescu, wait_for
from tests.orthanc_server import Orthanc
from tests.viewer_state import ct_phantom
from tests.web_client import ViewerClient
from web.app import create_app

pytestmark = pytest.mark.integration

PATIENT = {"PatientName": "PRIOR^CANARY", "PatientID": "PRIOR-CANARY-77"}
EARLIER_DATE = "20260302"
#: the earlier study's pixel spacing, as a share of today's: its lesion measured smaller
EARLIER_SCALE = 0.8
NURSE_PASSWORD = "Kq7-earlier-lesion-3301"


@pytest.fixture(scope="module")
def lesion_slice(tmp_path_factory) -> Path:
    """A CT phantom on which the demo model alerts (searched with the box's own runner)."""
    config = Config()
    config.runtime.backend = "onnxruntime"
    folder = tmp_path_factory.mktemp("priors")
    return ct_phantom(load_runner(config), folder / "lesion.dcm", lesion=True, alert=True,
                      identity=PATIENT)


def one_slice_study(source: Path, path: Path, *, date: str, scale: float = 1.0) -> Path:
    """The slice as a study of its own, dated ``date``, its pixels ``scale`` times as large."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyDate = ds.SeriesDate = date
    ds.PixelSpacing = [round(float(v) * scale, 6) for v in ds.PixelSpacing]
    return write_dicom(ds, path)


def priors_box(root: Path, pacs: Orthanc, **priors: object) -> Box:
    """A box asking ``pacs`` for earlier studies and sending its SRs there; ``pacs`` (not
    started yet) is told the box's AE title and port, as a clinic's PACS must be."""
    root.mkdir()
    box = Box(root, {
        "studies": {"stable_seconds": 2.0},
        "pacs": {"retry_min_seconds": 0.2, "retry_max_seconds": 1.0,
                 "destinations": [{"name": "pacs", "ae_title": pacs.ae_title,
                                   "host": pacs.host, "port": pacs.dicom_port,
                                   "send": ["sr"]}]},
        "priors": {"enabled": True, "host": pacs.host, "port": pacs.dicom_port,
                   "ae_title": pacs.ae_title, "timeout": 10.0, "wait_seconds": 120.0,
                   **priors}})
    pacs.extra = {"DicomModalities": {"clinibox": ["CLINIBOX", pacs.host, box.port]}}
    return box


def study_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def completed(box: Box, study_key: str) -> bool:
    return bool(box.db_rows("SELECT 1 FROM studies WHERE study_key = ? AND completed_at IS NOT"
                            " NULL", (study_key,)))


def long_axis(box: Box, study_key: str) -> float:
    """The long axis (mm) of the first lesion of the study's most suspicious image, as the
    box stored it."""
    row = box.db_rows("SELECT r.lesions_json FROM results r JOIN instances i"
                      " ON i.id = r.instance_id WHERE i.study_instance_uid = ?"
                      " ORDER BY r.probability DESC LIMIT 1", (study_key,))[0]
    return float(json.loads(row[0])[0]["long_axis_mm"])


def sr_studies(pacs: Orthanc) -> set[str]:
    """The studies Orthanc holds an SR of."""
    found = pacs.post("/tools/find", {"Level": "Instance", "Expand": True,
                                      "Query": {"Modality": "SR"}})
    return {pacs.instance_tags(item["ID"])["StudyInstanceUID"] for item in found}


def sr_texts(pacs: Orthanc, study_key: str) -> list[str]:
    """Every TEXT content item of the study's SR at the PACS, read with pydicom."""
    found = pacs.post("/tools/find", {"Level": "Instance",
                                      "Query": {"StudyInstanceUID": study_key, "Modality": "SR"}})
    texts: list[str] = []

    def walk(items) -> None:
        for item in items or []:
            if item.get("ValueType") == "TEXT":
                texts.append(str(item.TextValue))
            walk(item.get("ContentSequence"))

    for instance in found:
        with urllib.request.urlopen(f"{pacs.base_url}/instances/{instance}/file",
                                    timeout=30) as answer:
            walk(pydicom.dcmread(io.BytesIO(answer.read())).ContentSequence)
    return texts


def test_the_earlier_study_is_fetched_analysed_compared_and_sent_nowhere(tmp_path, lesion_slice):
    earlier = one_slice_study(lesion_slice, tmp_path / "earlier.dcm", date=EARLIER_DATE,
                              scale=EARLIER_SCALE)
    today = one_slice_study(lesion_slice, tmp_path / "today.dcm", date="20261128")
    earlier_key, today_key = study_uid(earlier), study_uid(today)
    pacs = Orthanc(tmp_path / "orthanc")
    box = priors_box(tmp_path / "box", pacs)
    with pacs:
        assert storescu(pacs.dicom_port, [earlier], ae_title=pacs.ae_title).returncode == 0
        box.start()
        try:
            assert storescu(box.port, [today]).returncode == 0
            wait_for(lambda: completed(box, today_key), 180, "today's study to complete")
            lookup = dict(box.db_rows("SELECT * FROM prior_lookups")[0])
            assert (lookup["study_key"], lookup["state"], lookup["studies"],
                    lookup["images"]) == (today_key, "fetched", 1, 1), lookup
            assert [tuple(r) for r in box.db_rows(
                "SELECT study_key, study_date, for_study_key FROM prior_studies")] == [
                (earlier_key, EARLIER_DATE, today_key)]
            # today's study completed only once the earlier one was analysed
            analysed = box.db_rows("SELECT MAX(r.created_at) FROM results r JOIN instances i"
                                   " ON i.id = r.instance_id WHERE i.study_instance_uid = ?",
                                   (earlier_key,))[0][0]
            assert analysed is not None
            assert box.db_rows("SELECT completed_at FROM studies WHERE study_key = ?",
                               (today_key,))[0][0] >= analysed
            now_mm, was_mm = long_axis(box, today_key), long_axis(box, earlier_key)
            assert was_mm < now_mm
            percent = (now_mm - was_mm) / was_mm * 100
            assert 20 < percent < 30  # the spacing's 1 / 0.8, as measured by the model

            # the alert carries the growth as a number, and nothing of the earlier study
            wait_for(lambda: box.db_rows("SELECT 1 FROM outbox WHERE kind = 'alert'"), 60,
                     "today's alert")
            alerts = [json.loads(r[0]) for r in box.db_rows(
                "SELECT payload FROM outbox WHERE kind = 'alert'")]
            assert len(alerts) == 1, alerts  # none for the earlier study
            grown = [lesion["growth_pct"] for lesion in alerts[0]["lesions"]
                     if "growth_pct" in lesion]
            assert grown and abs(grown[0] - percent) < 1.5, alerts[0]
            text = json.dumps(alerts[0])
            assert EARLIER_DATE not in text and "2026-03-02" not in text
            assert earlier_key not in text and PATIENT["PatientID"] not in text

            # today's SR reaches the PACS; the earlier study's results are sent nowhere
            wait_for(lambda: today_key in sr_studies(pacs), 90, "today's SR at the PACS")
            said = sr_texts(pacs, today_key)
            compared = [t for t in said if "earlier study" in t]
            assert compared and compared[0].startswith("Image 1, lesion 1: ") \
                and f"{now_mm:.1f} mm" in compared[0] and f"{was_mm:.1f} mm" in compared[0], said
            assert not any(EARLIER_DATE in t or "2026-03-02" in t for t in compared)
            box.wait_idle(2)
            time.sleep(3.0)  # the earlier study's own completion has come and gone
            assert completed(box, earlier_key)
            assert earlier_key not in sr_studies(pacs)
            assert not box.db_rows("SELECT 1 FROM dicom_outbox d WHERE d.study_key = ?",
                                   (earlier_key,))
            add_viewer_account(box, "nurse", NURSE_PASSWORD, "clinician")
        finally:
            box.stop()
        page_says_it(box, today_key, earlier_key, now_mm, was_mm, percent)


def page_says_it(box: Box, today_key: str, earlier_key: str, now_mm: float, was_mm: float,
                 percent: float) -> None:
    """The study pages, in Chinese, as the viewer serves them from the box's state."""
    config = load(box.config)
    config.web.language = "zh_CN"
    client = ViewerClient(create_app(config))
    assert client.login("nurse", NURSE_PASSWORD).status_code == 302
    ids = {r[0]: r[1] for r in box.db_rows("SELECT study_key, id FROM studies")}
    page = html.unescape(client.get(f"/study/{ids[today_key]}").get_data(as_text=True))
    growth = re.search(r'<ul class="growth" id="growth">(.*?)</ul>', page, re.S)
    assert growth, page[-3000:]
    line = re.sub(r"<[^>]+>", "", growth.group(1)).strip()
    assert f"{now_mm:.1f} mm" in line and f"{was_mm:.1f} mm" in line, line
    assert "2026年3月2日" in line or "2026-03-02" in line, line
    assert f"+{round(percent)}%" in line, line
    assert not re.search(r"[A-Za-z]{4,}", line.replace("mm", "")), line  # no English words
    earlier_page = html.unescape(client.get(f"/study/{ids[earlier_key]}").get_data(
        as_text=True))
    assert 'id="earlier-fetched"' in earlier_page and "不会发往任何地方" in earlier_page
    worklist = html.unescape(client.get("/").get_data(as_text=True))
    assert worklist.count('class="earlier-study"') == 1  # the earlier study, marked; not today's
    assert "以前的检查（对比用）" in worklist
    assert re.search(r"1\s*个警报", worklist), "the earlier study is no alert of today's"
