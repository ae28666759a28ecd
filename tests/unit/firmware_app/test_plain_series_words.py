"""Why a series is looked at image by image is said in plain words a nurse reads, in English
and Chinese: no DICOM terms ("multi-frame object", "frame of reference", "pixel spacing",
"gantry"), as on the study page and the report (``inference/volume.PER_SLICE_WORDS``,
``firmware_app/words/wording.series_reading_lines``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from clinibox_common.i18n import use_locale
from engine.inference import volume
from firmware_app.words import wording
from tests.i18n_text import is_chinese

JARGON = {
    "en": ("multi-frame object", "frame of reference", "frames of reference", "pixel spacing",
           "gantry", "orientation", "read image by image"),
    "zh_CN": ("多帧对象", "参考坐标系", "坐标系", "像素间距", "机架", "序列按单张图像阅读",
              "其图像"),
}


def _lines(reason: str) -> list[str]:
    series = SimpleNamespace(read_as=volume.READ_PER_SLICE, reason=reason,
                             instance_ids=[1, 2, 3])
    return wording.series_reading_lines(SimpleNamespace(series=[series]))


@pytest.mark.parametrize("language", ["en", "zh_CN"])
@pytest.mark.parametrize("reason", sorted(volume.PER_SLICE_WORDS))
def test_each_reason_is_said_without_jargon(language, reason):
    with use_locale(language):
        (line,) = _lines(reason)
    assert "3" in line
    for term in JARGON[language]:
        assert term not in line, (reason, term, line)
    if language == "zh_CN":
        assert is_chinese(line), line


def test_the_two_sentences_the_nurse_met_are_plain_now():
    with use_locale("zh_CN"):
        multi_frame, = _lines(volume.MULTI_FRAME)
        scans, = _lines(volume.MIXED_FRAME_OF_REFERENCE)
    assert "动态画面" in multi_frame and "多帧对象" not in multi_frame
    assert "不同的扫描" in scans and "参考坐标系" not in scans
