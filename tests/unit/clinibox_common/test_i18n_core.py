"""clinibox_common.i18n: language tags, the current language, dates and numbers, terminal widths;
and the viewer's rendering of the reasons the worker records (firmware_app/words/reasons.py)."""

from __future__ import annotations

import datetime as dt
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

from clinibox_common import i18n
from clinibox_common.bundled import BUNDLED_MODELS_DIR
from clinibox_common.contracts.reasons import Reason, ReasonCode, encode
from clinibox_common.i18n import formats, use_locale
from clinibox_common.i18n.fonts import find_cjk_font
from clinibox_common.i18n.text import display_width, ljust, rjust
from firmware_app.settings.models import DEMO_TRUST_WARNING
from firmware_app.words import reasons, wording


@pytest.mark.parametrize(("tag", "language"), [
    ("zh", "zh_CN"), ("zh-CN", "zh_CN"), ("zh_CN.UTF-8", "zh_CN"), ("zh-Hans", "zh_CN"),
    ("zh-Hans-CN", "zh_CN"), ("zh_Hans_CN", "zh_CN"), ("zh-SG", "zh_CN"), ("ZH-cn", "zh_CN"),
    ("zh-TW", None), ("zh-Hant", None), ("zh_HK.UTF-8", None), ("en", "en"),
    ("en_US.UTF-8", "en"), ("en-GB", "en"), ("C", None), ("C.UTF-8", None), ("POSIX", None),
    ("fr-FR", None), ("", None), (None, None), ("*", None),
])
def test_tags_reduce_to_the_two_languages(tag, language):
    assert i18n.normalise(tag) == language


def test_the_environment_names_the_language_as_posix_says():
    env = i18n.from_environment
    assert env({"LANG": "zh_CN.UTF-8"}) == "zh_CN"
    assert env({"LC_ALL": "en_US.UTF-8", "LANG": "zh_CN.UTF-8"}) == "en"
    assert env({"LC_MESSAGES": "zh_CN.UTF-8", "LANG": "en_US.UTF-8"}) == "zh_CN"
    assert env({"LC_ALL": "C", "LANG": "zh_CN.UTF-8"}) is None  # the first set one decides
    assert env({"LANG": "C.UTF-8"}) is None and env({}) is None


def test_the_current_language_and_its_sources():
    assert i18n.current() == "en" and i18n.gettext("Worklist") == "Worklist"
    with use_locale("zh-CN"):
        assert i18n.current() == "zh_CN" and i18n.gettext("Worklist") == "工作列表"
        with use_locale("fr"):  # not one we speak: English
            assert i18n.gettext("Worklist") == "Worklist"
    i18n.set_provider(lambda: "zh_CN")
    try:
        assert i18n.gettext("Worklist") == "工作列表"
        with use_locale("en"):
            assert i18n.gettext("Worklist") == "Worklist"
    finally:
        i18n.set_provider(None)
    assert i18n.gettext("Worklist") == "Worklist"


def test_placeholders_and_plurals():
    with use_locale("zh_CN"):
        assert i18n.gettext("Object %(id)s deleted.", id=7) == "对象 7 已删除。"
        assert i18n.ngettext("%(num)d day", "%(num)d days", 3) == "3 天"
        assert i18n.gettext("Never in the catalog") == "Never in the catalog"
    assert i18n.ngettext("%(num)d day", "%(num)d days", 1) == "1 day"
    assert i18n.ngettext("%(num)d day", "%(num)d days", 2) == "2 days"


def test_dates_and_numbers_follow_the_language():
    epoch = time.mktime(dt.datetime(2026, 11, 23, 14, 5, 9).timetuple())
    assert formats.moment(epoch) == "2026-11-23 14:05"
    assert formats.moment(epoch, True) == "2026-11-23 14:05:09"
    assert formats.percent(0.87) == "87 %" and formats.decimal(12.25) == "12.2"
    with use_locale("zh_CN"):
        assert formats.moment(epoch) == "2026年11月23日 14:05"
        assert formats.moment(epoch, True) == "2026年11月23日 14:05:09"
        assert formats.day(dt.date(2026, 11, 23)) == "2026年11月23日"
        assert formats.percent(0.87) == "87%" and formats.percent(None) == "–"
        assert formats.decimal(12.34) == "12.3" and formats.decimal(40.4, 0) == "40"
        assert wording.size({"units": "mm", "long_axis_mm": 12.34, "short_axis_mm": 8.06}) \
            == "12.3 × 8.1 mm"  # the unit symbol stays
        assert wording.dicom_date("20261123") == "2026年11月23日"
        assert wording.ago(30) == "30 秒" and wording.ago(3 * 86400) == "3 天"


def test_terminal_widths_count_chinese_twice():
    assert display_width("模型包") == 6 and display_width("clock") == 5
    assert ljust("时钟", 6) == "时钟  " and rjust("时钟", 6) == "  时钟"


def test_a_chinese_font_is_found_where_debian_puts_it(tmp_path):
    assert find_cjk_font([tmp_path]) is None
    (tmp_path / "wqy-zenhei.ttc").write_bytes(b"")
    found = find_cjk_font([tmp_path])
    assert found is not None and found.bold == found.regular and found.index == 0
    (tmp_path / "NotoSansCJK-Regular.ttc").write_bytes(b"")
    found = find_cjk_font([tmp_path])
    assert found.regular.name == "NotoSansCJK-Regular.ttc" and found.index == 2


# -- the worker's recorded sentences, as the viewer shows them --------------------------


def test_every_quality_warning_the_worker_records_is_translated():
    from engine.imaging.quality import check_quality
    from engine.inference import hotspot

    noise = np.random.default_rng(1).random((64, 64))
    frames = {"blank": np.zeros((64, 64)), "too_dark": noise * .05,
              "saturated": 0.9 + noise * .1, "low_contrast": 0.5 + noise * .1}
    seen = {"heatmap_on_annotation": hotspot.WARNING}
    for frame in frames.values():
        seen.update({w.code.value: w for w in check_quality(frame, 32, 32, 64)})
    assert {"too_small", "blank", "too_dark", "saturated", "low_contrast"} <= set(seen)
    with use_locale("zh_CN"):
        for code, reason in seen.items():
            translated = reasons.reason_text(reason)
            assert translated != reason.english(), code
            assert any("\u4e00" <= c <= "\u9fff" for c in translated), code
        assert reasons.reason_text(seen["too_small"]) == "图像太小，难以可靠判读（32 × 32 像素）"
        stored = encode([seen["too_dark"], seen["low_contrast"]])
        assert wording.recorded_reason(stored) == (
            "图像太暗，建议重新扫描；对比度太低，请检查窗宽窗位或曝光", "")
        decoder = encode([Reason(ReasonCode.DECODE_FAILED, {"detail": "a decoder's own words"})])
        assert wording.recorded_reason(decoder) == (
            "a decoder's own words", "a decoder's own words")  # shown as recorded, marked
    assert reasons.reason_text(seen["blank"]) == "image is blank, rescan suggested"
    assert wording.recorded_reason(decoder) == ("a decoder's own words", "")  # English


def test_outside_range_and_routing_reasons_are_translated():
    from engine.inference.validated_range import RangeScore, outside_reason
    from firmware_app.models import routing

    outside = outside_reason([RangeScore(3.25, 1.0), RangeScore(9.0, 1.0)])
    assert outside == Reason(ReasonCode.OUTSIDE_VALIDATED_RANGE, {"ratio": 3.2})
    assert "lie 3.2× beyond" in outside.english()
    with use_locale("zh_CN"):
        assert "验证界限的 3.2 倍" in reasons.reason_text(outside)
        level, headline = wording.verdict(False, False, "outside_validated_range",
                                          encode([outside]))
        assert level == "outside" and headline.startswith("超出模型验证范围")
        assert "必须由医生阅片" in headline and "3.2" not in headline  # the ratio: technician
        package = SimpleNamespace(modalities=["CT", "US"], model_id="demo@1.0")
        refusal = routing.modality_refusal(package, "NM")
        assert reasons.reason_text(refusal) == "模型 demo@1.0 不分析 NM 图像（它接受：CT, US）"
        unrouted = Reason(ReasonCode.NO_ROUTING_RULE, {"series": "modality MR, 8x8"})
        assert reasons.reason_text(unrouted) == "没有分配规则适用于这个序列（modality MR, 8x8）"


def test_the_demo_model_cards_statement_is_in_both_languages():
    manifest = json.loads(next(BUNDLED_MODELS_DIR.glob("*/*/manifest.json")).read_text())
    statement = manifest["intended_use"]
    assert statement in wording.KNOWN_INTENDED_USES
    assert wording.intended_use(statement) == statement
    with use_locale("zh_CN"):
        assert wording.intended_use(statement) == \
            "仅供演示——用程序生成的模拟体模训练；不可用于临床"
        assert wording.intended_use("Made by someone else") == "Made by someone else"
        assert "仅供演示" in i18n.gettext(DEMO_TRUST_WARNING)


@pytest.mark.parametrize(("value", "english", "chinese"), [
    ("王^芳", "王芳", "王芳"),
    ("DOE^JOHN^A", "DOE, JOHN A", "DOE, JOHN A"),
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", "Yamada, Tarou", "山田太郎"),
    ("^^^Dr^", "Dr", "Dr"),
    ("ANONYMOUS", "ANONYMOUS", "ANONYMOUS"),
    ("", "", ""),
])
def test_patient_names_are_written_as_a_reader_writes_them(value, english, chinese):
    """A DICOM Person Name shown as on a hospital's list: no carets; a Chinese reader gets
    the ideographic group when there is one."""

    with use_locale("en"):
        assert formats.person_name(value) == english
    with use_locale("zh_CN"):
        assert formats.person_name(value) == chinese


def test_a_finding_the_model_cannot_locate_says_so_and_what_to_do():
    assert wording.next_step("finding", marked=True) == \
        "The marked areas on the image show where to look."
    unplaced = wording.next_step("alert", marked=False)
    assert "cannot point to one area" in unplaced and "whole image" in unplaced
    assert wording.next_step("outside") == "" and wording.next_step("unassessable") == ""
    with use_locale("zh_CN"):
        assert "整张图像" in wording.next_step("finding", marked=False)


def test_a_quality_warning_says_what_to_do_once():
    """"Low contrast, check window/exposure" is not followed by the same check again."""
    for code in ("low_contrast", "saturated"):
        text = wording.warning_text({"code": code, "params": {}})
        assert text.count("check") == 1 and text.endswith("rescan if needed"), text
        with use_locale("zh_CN"):
            shown = wording.warning_text({"code": code, "params": {}})
            assert shown.count("检查") == 1 and shown.endswith("必要时重新扫描"), shown
