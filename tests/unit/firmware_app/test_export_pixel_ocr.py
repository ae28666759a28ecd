"""``clinibox export-study`` read back with OCR: no patient's name or id readable in a pixel.

Real ultrasound images from pydicom's data (``US1_UNCR.dcm``, ``US1_J2KR.dcm``,
640 x 480) carry a patient's name in Chinese and Latin letters and their id,
drawn as glyphs (Noto Sans CJK) where scanners put them: in the banner (the
top rows) and inside the ultrasound region. Landed and analysed by the real
Lander and Worker, exported by ``clinibox export-study --json``, each exported
image is read with Tesseract (chi_sim + eng) by this test: no identifier may
be readable, and the image whose region holds the name is left out with its
code (``ocr-identifier-readable``). Every drawing is first read on the source
by the same reading, so a test that finds nothing has something to find.
Without Tesseract the export leaves the images out (``ocr-unavailable``) and
refuses when none is left, never exports them unread.
"""

from __future__ import annotations

import io
import json
import os
import re
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytesseract
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from clinibox.table import main
from firmware_app.dicom_out import pixel_ocr
from firmware_app.dicom_out.export import ExportError, export_study
from firmware_app.settings.box import Config
from firmware_app.storage import db
from tests.viewer_state import local_box

FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"  # Debian's fonts-noto-cjk
CHINESE, LATIN, PATIENT_ID = "王小明", "WANG^XIAOMING", "PX8837261"
#: what must never be read in an exported pixel (normalised as pixel_ocr does)
SECRETS = ("王小明", "xiaoming", "8837261")
#: the tissue region of the ultrasounds with a real region (x0, y0, x1, y1)
REGION = (100, 130, 560, 440)
#: (name, pydicom file, region or None, where the name is drawn, what the export must do)
IMAGES = (("banner", "US1_UNCR.dcm", REGION, "banner", "US-REGIONS"),
          ("in-region", "US1_UNCR.dcm", REGION, "region", "ocr-identifier-readable"),
          ("whole-region", "US1_J2KR.dcm", (0, 0, 639, 479), "banner", "US-FRAME"))
STUDY_UID = generate_uid()


def _draw(ds: pydicom.Dataset, where: str) -> None:
    """The patient's name (Chinese and Latin) and id drawn white into ``ds``'s pixels."""
    picture = Image.fromarray(np.array(ds.pixel_array))  # RGB (the J2K's YBR decoded)
    pen = ImageDraw.Draw(picture)
    if where == "banner":
        font = ImageFont.truetype(FONT, 22)
        pen.rectangle((0, 0, 639, 34), fill="black")  # the scanner's name bar
        pen.text((12, 4), f"{CHINESE}  {LATIN}  ID {PATIENT_ID}", font=font, fill="white")
    else:
        font = ImageFont.truetype(FONT, 30)
        x0, y0 = REGION[0] + 20, REGION[1] + 30
        pen.rectangle((x0 - 6, y0 - 4, x0 + 420, y0 + 84), fill="black")
        pen.text((x0, y0), f"{CHINESE} {LATIN}", font=font, fill="white")
        pen.text((x0, y0 + 42), f"ID {PATIENT_ID}", font=font, fill="white")
    ds.set_pixel_data(np.asarray(picture), "RGB", 8, generate_instance_uid=False)


def _region(x0: int, y0: int, x1: int, y1: int) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = 1, 1, 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    return item


def _read(pixels: np.ndarray) -> str:
    """What Tesseract reads in ``pixels``, normalised, in two page modes (sparse, block)."""
    grey = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("L")
    with pixel_ocr.tesseract_on_one_thread():  # as the export does: 5 x faster here
        text = " ".join(pytesseract.image_to_string(grey, lang="chi_sim+eng",
                                                    config=f"--psm {m}") for m in (11, 3))
    return pixel_ocr.normalise(text)


def _readable(text: str) -> list[str]:
    """The secrets in ``text``, one character wrong allowed (王小明 is read as 玉小明)."""
    return [s for s in SECRETS if pixel_ocr._near(s, text, 1)]


@dataclass
class OcrBox:
    config: Config
    study_id: int
    instances: dict[str, int]  # image name -> instance id
    sources: dict[str, Path]


@pytest.fixture(scope="module")
def ocr_box(tmp_path_factory, demo_runner) -> OcrBox:
    root = tmp_path_factory.mktemp("ocr-box")
    box = local_box(Config(), root / "state", demo_runner)
    instances, sources = {}, {}
    for number, (name, source, region, where, _) in enumerate(IMAGES, start=1):
        ds = pydicom.dcmread(get_testdata_file(source))
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName, ds.PatientID = f"{LATIN}={CHINESE}", PATIENT_ID
        ds.PatientBirthDate = "19800512"
        ds.StudyInstanceUID, ds.SOPInstanceUID = STUDY_UID, generate_uid()
        ds.SeriesInstanceUID, ds.InstanceNumber = generate_uid(), number
        ds.BurnedInAnnotation = "YES"
        ds.SequenceOfUltrasoundRegions = [_region(*region)]
        _draw(ds, where)
        path = root / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        sources[name] = path
        instances[name] = box.lander.land(path.read_bytes(), sop_instance_uid=None,
                                          source="dicom", origin="TEST").instance_id
        assert box.worker.run_once()
    study_id = box.conn.execute("SELECT id FROM studies WHERE study_key = ?",
                                (STUDY_UID,)).fetchone()[0]
    box.conn.close()
    return OcrBox(box.config, int(study_id), instances, sources)


@pytest.mark.slow
def test_every_drawn_identifier_is_readable_in_the_sources(ocr_box):
    for name, path in ocr_box.sources.items():
        assert _readable(_read(pydicom.dcmread(path).pixel_array)) == list(SECRETS), name


@pytest.mark.slow
def test_the_export_leaves_no_identifier_readable_and_says_which_it_left_out(ocr_box,
                                                                             tmp_path):
    config = tmp_path / "box.toml"
    config.write_text(f'[storage]\nstate_dir = "{ocr_box.config.state_dir}"\n')
    out, printed = tmp_path / "export", io.StringIO()
    with redirect_stdout(printed):
        assert main(["export-study", str(ocr_box.study_id), "--out", str(out), "--json",
                     "--config", str(config)]) == 0
    summary = json.loads(printed.getvalue()[printed.getvalue().index("{"):])
    expected = {f"instance {ocr_box.instances[name]}": code
                for name, _, _, _, code in IMAGES if code.startswith("ocr-")}
    assert {x["what"]: x["code"] for x in summary["left_out"]} == expected
    assert all("PatientName" in x["reason"] or "PatientID" in x["reason"]
               for x in summary["left_out"])
    images = sorted(out.glob("IMAGE*.dcm"))
    assert len(images) == len(IMAGES) - len(expected)
    rules = []
    for path in images:
        ds = pydicom.dcmread(path)
        assert _readable(_read(ds.pixel_array)) == [], path.name
        rules.append(re.sub(r"^CLEAN PIXEL DATA ", "", ds.DeidentificationMethod[-1]))
        assert CHINESE.encode() not in path.read_bytes()
    assert sorted(rules) == sorted(code for *_, code in IMAGES if not code.startswith("ocr-"))


def test_without_tesseract_images_are_left_out_and_the_export_refused(ocr_box, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(tmp_path / "none"))
    monkeypatch.setattr(pixel_ocr, "_ready", [])
    monkeypatch.setattr(pixel_ocr, "_remembered", {})
    conn = db.connect(ocr_box.config.database_path)
    try:
        with pytest.raises(ExportError, match=r"tesseract program"):
            export_study(conn, str(ocr_box.study_id), tmp_path / "out", account="cli:tester")
    finally:
        conn.close()
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_command_says_in_chinese_which_image_it_left_out(ocr_box, tmp_path, monkeypatch):
    monkeypatch.setenv("LC_ALL", "zh_CN.UTF-8")
    config = tmp_path / "box.toml"
    config.write_text(f'[storage]\nstate_dir = "{ocr_box.config.state_dir}"\n')
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert main(["export-study", str(ocr_box.study_id), "--out", str(tmp_path / "out"),
                     "--config", str(config)]) == 0
    line = next(x for x in printed.getvalue().splitlines()
                if f"instance {ocr_box.instances['in-region']}" in x)
    assert "图像上还能认出患者姓名或编号" in line and "PatientName" not in line, line


def test_the_match_allows_for_ocr_mistakes_but_not_for_chance():
    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientID = "LI^XIAOMING=李小明", "20485"
    ds.PatientBirthDate, ds.OtherPatientIDs = "19800512", "MRN-77310042"
    targets = pixel_ocr.ocr_targets(ds)
    found = pixel_ocr.found_in
    assert found("玉小明  3cm", targets) == ["PatientName"]  # one Chinese character misread
    assert found("Li Xiaorning", targets) == ["PatientName"]  # m read as rn
    assert found("DOB 12/05/1980", targets) == ["PatientBirthDate"]
    assert found("1980.05.13", targets) == ["PatientBirthDate"]  # one digit of eight
    assert found("mrn 77310O42", targets) == ["OtherPatientIDs"]
    assert found("ID: 20485", targets) == ["PatientID"]
    # chance: a short name inside a word, a short id one digit off, a lone Chinese character
    assert found("CLINIC 20486 李 TIS<0.4 MI=0.8 1980", targets) == []


def test_tesseract_s_one_thread_limit_is_its_alone(monkeypatch):
    """Left in the environment, the limit reaches every process started later (a
    converter's torch ran ten times slower under it in the suite)."""
    monkeypatch.delenv("OMP_THREAD_LIMIT", raising=False)
    with pixel_ocr.tesseract_on_one_thread():
        assert os.environ["OMP_THREAD_LIMIT"] == "1"
    assert "OMP_THREAD_LIMIT" not in os.environ
