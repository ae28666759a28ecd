"""A key image's label keeps its separator: lesion 1 at 77 % reads "1: 77%", never "177%"
(``engine/imaging/annotate.py``), on the viewer's printed key image, in Chinese and
English, and on the secondary capture sent to the PACS."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFont

from engine.imaging import annotate
from engine.imaging.preview_file import FramePreview, Window
from engine.settings import LimitsConfig
from firmware_app.dicom_out.key_image import key_image
from firmware_app.dicom_out.source import AnalysedInstance, ModelIdentity, ResultIds
from firmware_app.storage import db, studies
from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import generate
from tests.viewer_state import CLINICIAN
from tests.web_client import ViewerClient
from web.render import key_image_png, load_frame

#: a box 100 px from the left, 200 px from the top of a 512 px picture (drawn at scale 1)
BOX = {"x0": 100, "y0": 200, "x1": 220, "y1": 300, "score": 0.77}


def _tab_at(picture: np.ndarray, text: str, left: int, top: int) -> bool:
    """True when ``picture`` holds the tab of ``text`` just above the box at (left, top)."""
    font = annotate.label_font(picture.shape[1], picture.shape[0])
    expected = np.asarray(annotate.label_tab(text, font))
    height, width = expected.shape[:2]
    found = picture[top - height:top, left:left + width]
    return found.shape == expected.shape and np.array_equal(found, expected)


def _image(tmp_path: Path) -> Path:
    phantom = generate("ct", np.random.default_rng(5), size=512, lesion=False)
    return write_dicom(ct_dataset(phantom), tmp_path / "ct.dcm")


def _missing_glyph(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> bytes:
    return bytes(font.getmask("\ue000"))  # a private-use character: no font draws it


@pytest.mark.parametrize("size", [(512, 512), (1024, 768)])
def test_every_character_of_a_label_has_a_glyph_in_the_labels_font(size):
    font = annotate.label_font(*size)
    notdef = _missing_glyph(font)
    for ch in "0123456789:%<>" + "lesion":
        mask = font.getmask(ch)
        assert mask.getbbox() is not None, ch  # drawn, not blank
        assert bytes(mask) != notdef, ch  # not the missing-glyph box
    # the separator is not a hair: the colon and its blank are at least as wide as a digit
    assert font.getlength(": ") >= 0.75 * font.getlength("7")


def test_the_label_is_the_number_a_colon_and_the_percentage():
    assert annotate.label_text(BOX, 1) == "1: 77%"
    assert annotate.label_text({**BOX, "label": "lesion"}, 2) == "2: lesion 77%"
    assert annotate.label_text({**BOX, "score": 0.9996}, 3) == "3: >99%"  # never a certainty
    assert annotate.label_text({**BOX, "score": 0.001}, 1) == "1: <1%"
    assert annotate.label_text({**BOX, "label": "lesion"}) == "lesion 77%"
    assert annotate.label_texts({**BOX, "label": "lesion"}, 1) == ["1: lesion 77%", "1: 77%", "1"]
    assert annotate.label_text({"x0": 0, "y0": 0, "x1": 1, "y1": 1}, 1) == ""  # no tab


def test_the_drawn_label_is_the_rendering_of_its_text_with_the_colon(tmp_path):
    image = load_frame(_image(tmp_path), 0, LimitsConfig(), 1)
    picture = np.asarray(Image.open(io.BytesIO(key_image_png(image, None, [BOX], None))))
    assert picture.shape == (512, 512, 3)
    assert _tab_at(picture, "1: 77%", 100, 200)
    assert not _tab_at(picture, "177%", 100, 200) and not _tab_at(picture, "1 77%", 100, 200)
    second = {**BOX, "x0": 300, "x1": 400, "score": 0.5, "label": "lesion"}
    both = np.asarray(Image.open(io.BytesIO(key_image_png(image, None, [BOX, second], None))))
    assert _tab_at(both, "1: 77%", 100, 200) and _tab_at(both, "2: lesion 50%", 300, 200)


def test_a_label_too_wide_for_the_picture_drops_its_class_not_its_score():
    values = np.zeros((64, 96), dtype=np.float32)
    narrow = FramePreview(values=values, frame=0, total_frames=1, rows=64, columns=96,
                          default_window=Window(0.5, 1.0), value_range=(0.0, 1.0),
                          modality="CT", invert=False, colour=False, pixel_spacing=None,
                          previewed=(0,))
    box = {**BOX, "x0": 0, "y0": 40, "x1": 20, "y1": 60, "label": "x" * 40}
    picture = np.asarray(annotate.key_picture(narrow, None, [box], None, max_side=96,
                                              min_side=96))
    assert _tab_at(picture, "1: 77%", 0, 40)


def test_the_viewers_chinese_key_image_numbers_the_lesions_as_the_page(viewer):
    state, app = viewer
    client = ViewerClient(app)
    client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN,zh;q=0.9"
    assert client.login(*CLINICIAN).status_code == 302
    conn = db.connect(state.config.database_path)
    try:
        result = studies.instance_result(conn, state.instances["alert"])
    finally:
        conn.close()
    assert result is not None and result["boxes"]
    response = client.get(f"/instance/{state.instances['alert']}/key.png")
    assert response.status_code == 200
    picture = np.asarray(Image.open(io.BytesIO(response.data)))
    frame = load_frame(Path(result["spool_path"]), result["key_frame"], LimitsConfig(), 1)
    scale = picture.shape[1] / frame.columns
    for number, box in enumerate(result["boxes"], start=1):
        text = annotate.label_text({**box, "label": ""}, number)
        assert text == f"{number}: {annotate.label_text({'score': box['score']})}"
        left, top = int(box["x0"] * scale), int(box["y0"] * scale)
        assert _tab_at(picture, text, left, top), text


def test_the_key_image_sent_to_the_pacs_keeps_the_separator(tmp_path):
    path = _image(tmp_path)
    result = {"key_frame": 0, "findings": [{**BOX, "label": "lesion"}]}
    model = ModelIdentity("phantom@1.0.0", "phantom", "1.0.0", 0.5, demo=True)
    document = key_image(AnalysedInstance(path, result), model,
                         ResultIds("box-1", "1.2.3", model.model_id, 1))
    picture = document.pixel_array
    assert picture.shape == (512, 512, 3)
    assert _tab_at(picture, "1: lesion 77%", 100, 200)


def test_the_tab_is_drawn_text_not_an_empty_box():
    font = annotate.label_font(512, 512)
    tab = annotate.label_tab("1: 77%", font)
    blank = Image.new("RGB", tab.size, annotate.BOX_COLOUR)
    assert not np.array_equal(np.asarray(tab), np.asarray(blank))
    assert tab.width > annotate.label_tab("177%", font).width
