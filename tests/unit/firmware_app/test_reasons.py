"""Reason codes (clinibox_common/contracts/reasons.py): every code has its template, every maker
gives exactly the parameters its template names, the stored encoding round-trips and reads
hostile values without failing, each template is in the Chinese catalog, and the v14
migration turns every kind of old English sentence into its code."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from clinibox_common.contracts import reasons
from clinibox_common.contracts.reasons import (
    MAX_REASONS,
    PARAMETERS,
    TEMPLATES,
    VERBATIM,
    Reason,
    ReasonCode,
    decode,
    encode,
    from_records,
    reason_table,
    records,
)
from clinibox_common.i18n import translations, use_locale
from firmware_app.storage.migrations import v14_reason_codes as v14
from firmware_app.words import reasons as shown
from firmware_app.words import wording

#: a value for every parameter name a template uses
SAMPLE = {"columns": 40, "rows": 32, "ratio": 3.2, "modality": "NM", "model": "demo@1.0",
          "accepted": "CT, US", "series": "modality MR, 8x8", "rule": "ct-head",
          "running": "demo@1.0", "detail": "truncated file", "attempts": 3, "kept_mb": 1,
          "size_mb": 3, "limit_mb": 2, "stored_mb": 0.5, "text": "words recorded before codes",
          "instance": 7, "origin": "CT1"}


def sample(code: ReasonCode) -> Reason:
    """A reason of ``code`` with every parameter its template names."""
    return Reason(code, {name: SAMPLE[name] for name in PARAMETERS[code]})


# -- the table ---------------------------------------------------------------------------------


def test_every_code_has_a_template_and_the_docs_table_lists_them_all():
    assert set(TEMPLATES) == set(ReasonCode)
    assert [code for code, _template in reason_table()] == [c.value for c in ReasonCode]
    assert dict(reason_table())["too_small"] == \
        "image too small for reliable reading (%(columns)s x %(rows)s pixels)"
    for code in ReasonCode:
        assert sample(code).english(), code  # every template fills from its parameters


def test_a_reason_takes_exactly_the_parameters_its_template_names():
    with pytest.raises(ValueError, match="takes"):
        Reason(ReasonCode.TOO_SMALL, {"columns": 4})
    with pytest.raises(ValueError, match="takes"):
        Reason(ReasonCode.BLANK, {"extra": 1})
    with pytest.raises(ValueError, match="finite"):
        Reason(ReasonCode.OUTSIDE_VALIDATED_RANGE, {"ratio": float("nan")})
    with pytest.raises(ValueError, match="short str"):
        Reason(ReasonCode.DECODE_FAILED, {"detail": ["not", "a", "value"]})
    with pytest.raises(ValueError):
        Reason("no_such_code")  # type: ignore[arg-type]
    assert Reason("blank") == Reason(ReasonCode.BLANK)  # type: ignore[arg-type]


def test_every_maker_gives_the_parameters_its_template_names(tmp_path: Path, demo_runner):
    """The makers themselves, each run: a wrong parameter name would raise in Reason."""
    from engine.imaging.errors import DecodeError
    from engine.imaging.quality import check_quality
    from engine.inference import hotspot
    from engine.inference.validated_range import RangeScore, outside_reason
    from firmware_app.analysis import decode_failed
    from firmware_app.ingest.usb import size_refusal
    from firmware_app.models.routing import Route, Router, modality_refusal
    from firmware_app.settings.routing import RoutingRule

    made: list[Reason] = []
    noise = np.random.default_rng(1).random((64, 64))
    for frame in (np.zeros((64, 64)), noise * .05, 0.9 + noise * .1, 0.5 + noise * .1):
        made += check_quality(frame, 32, 32, 64)
    made.append(hotspot.WARNING)
    made.append(outside_reason([RangeScore(5.0, 2.0)]))
    made.append(outside_reason([RangeScore(float("nan"), 2.0)]))  # NaN counts as outside
    made.append(decode_failed(DecodeError("truncated file")))
    package = SimpleNamespace(modalities=["CT", "US"], model_id="demo@1.0")
    made.append(modality_refusal(package, "NM"))  # type: ignore[arg-type]
    image = SimpleNamespace(modality="MR", body_part="", series_description="", rows=8,
                            columns=8, sop_class_uid="1.2")
    unrouted = Router([RoutingRule(name="ct", model="x", modality=("CT",))],
                      {"demo": demo_runner.package}, "demo").route(image)  # type: ignore
    elsewhere = Router([RoutingRule(name="mr", model="absent", modality=("MR",))],
                       {"demo": demo_runner.package}, "demo").route(image)  # type: ignore
    made += [r.reason for r in (unrouted, elsewhere) if isinstance(r, Route) and r.reason]
    big = SimpleNamespace(st_size=3 * 2**30, st_blocks=3 * 2**30 // 512)
    sparse = SimpleNamespace(st_size=48 * 2**20, st_blocks=8)
    made += [size_refusal(big, 2**30), size_refusal(sparse, 2**30)]  # type: ignore[arg-type]
    codes = {r.code for r in made if r is not None}
    assert codes >= {ReasonCode.BLANK, ReasonCode.TOO_DARK, ReasonCode.SATURATED,
                     ReasonCode.LOW_CONTRAST, ReasonCode.TOO_SMALL,
                     ReasonCode.HEATMAP_ON_ANNOTATION, ReasonCode.OUTSIDE_VALIDATED_RANGE,
                     ReasonCode.DECODE_FAILED, ReasonCode.MODALITY_NOT_ACCEPTED,
                     ReasonCode.NO_ROUTING_RULE, ReasonCode.MODEL_NOT_INSTALLED,
                     ReasonCode.FILE_TOO_LARGE, ReasonCode.SPARSE_FILE}
    for reason in made:
        assert reason is not None and set(reason.params) == PARAMETERS[reason.code]
        assert decode(encode([reason])) == [reason]
    assert made[-2].english() == "file is 3072 MB, over the 1024 MB object limit; not copied"


# -- the stored encoding -----------------------------------------------------------------------


def test_the_encoding_round_trips_every_code():
    every = [sample(code) for code in ReasonCode]
    stored = encode(every)
    assert decode(stored) == every
    assert from_records(records(every)) == every
    assert from_records(json.loads(json.dumps(records(every)))) == every
    assert encode([]) == "" and decode("") == [] and decode(None) == []
    assert encode([Reason(ReasonCode.TOO_SMALL, {"rows": 2, "columns": 3})]) == \
        '[{"code":"too_small","params":{"columns":3,"rows":2}}]'  # keys sorted, compact
    assert decode(encode([Reason(ReasonCode.UNKNOWN, {"text": "中文"})])) == [
        Reason(ReasonCode.UNKNOWN, {"text": "中文"})]


@pytest.mark.parametrize("stored", [
    "a sentence recorded before codes",
    "[not json",
    '{"code": "blank", "params": {}}',  # not a list
    '[{"code": "no_such_code", "params": {}}]',
    '[{"code": "too_small", "params": {"columns": 1}}]',  # a parameter missing
    '[{"code": "blank", "params": {"x": {"nested": 1}}}]',
    '[{"code": "blank", "params": {}, "more": 1}]',
    '[{"code": "too_small", "params": {"columns": true, "rows": 2}}]',
    '[{"code": "outside_validated_range", "params": {"ratio": NaN}}]',
    '[{"code": "decode_failed", "params": {"detail": "%(detail)s %s %%"}}, 7, null, "x"]',
    "[" * 100_000,
    "[" + "[" * 5000 + "]" * 5000 + "]",
    '[{"code": "blank", "params": {}}]' + " " * 70_000,
    b"\xff\xfe[broken bytes",
])
def test_decoding_hostile_values_never_fails_and_shows_them_as_recorded(stored):
    decoded = decode(stored)
    assert 1 <= len(decoded) <= MAX_REASONS
    for reason in decoded:
        assert reason.code in ReasonCode
        text = shown.reason_text(reason)  # rendering never raises either
        assert isinstance(text, str)
        with use_locale("zh_CN"):
            assert isinstance(shown.reason_text(reason), str)
    assert all(r.code == ReasonCode.UNKNOWN for r in decoded
               if "no_such_code" in str(stored) or "not json" in str(stored))


def test_decoding_is_bounded():
    many = encode([Reason(ReasonCode.BLANK)] * (MAX_REASONS + 10))
    assert len(decode(many)) == MAX_REASONS
    long = decode("x" * 100_000)
    assert len(long) == 1 and len(long[0].params["text"]) == reasons.MAX_TEXT
    # a decoder's words holding format marks are shown as they are, never formatted again
    odd = Reason(ReasonCode.DECODE_FAILED, {"detail": "bad %(x)s 100%"})
    assert shown.reason_text(odd) == "bad %(x)s 100%"


# -- rendering ---------------------------------------------------------------------------------


def test_rendering_is_english_by_default_and_chinese_on_request():
    stored = encode([Reason(ReasonCode.TOO_SMALL, {"columns": 40, "rows": 32}),
                     Reason(ReasonCode.LOW_CONTRAST)])
    assert shown.recorded_text(stored) == ("image too small for reliable reading (40 x 32 "
                                           "pixels); low contrast, check window/exposure")
    with use_locale("zh_CN"):
        assert shown.recorded_text(stored) == \
            "图像太小，难以可靠判读（40 × 32 像素）；对比度太低，请检查窗宽窗位或曝光"
        # a decoder's words are not translated: the page marks them English
        held = encode([Reason(ReasonCode.DECODE_FAILED, {"detail": "truncated file"})])
        assert wording.object_reason("quarantined", held)[1] == "truncated file"
        assert wording.recorded_reason("text recorded before codes") == (
            "text recorded before codes", "text recorded before codes")


def test_not_assessable_says_rescan_once():
    dark = encode([Reason(ReasonCode.TOO_DARK)])
    small = encode([Reason(ReasonCode.TOO_SMALL, {"columns": 8, "rows": 8})])
    assert wording.verdict(False, False, "not_assessable", dark)[1].count("rescan") == 1
    assert "8 x 8 pixels); rescan suggested" in \
        wording.verdict(False, False, "not_assessable", small)[1]


@pytest.mark.parametrize("code", [c for c in ReasonCode if c not in VERBATIM])
def test_every_template_is_in_the_chinese_catalog(code):
    """Fails on a template the catalog does not translate yet (`make translations`)."""
    catalog = translations("zh_CN")
    template = TEMPLATES[code]
    assert catalog.gettext(template) != template, f"untranslated: {template!r}"
    with use_locale("zh_CN"):
        text = shown.reason_text(sample(code))
    assert any("\u4e00" <= c <= "\u9fff" for c in text), text


# -- the v14 migration: old sentences to codes ------------------------------------------------

#: each kind of sentence the box stored up to v13, and the reasons it becomes
OLD_REASONS = [
    ("image is blank, rescan suggested", [Reason(ReasonCode.BLANK)]),
    ("image too dark, rescan suggested; low contrast, check window/exposure",
     [Reason(ReasonCode.TOO_DARK), Reason(ReasonCode.LOW_CONTRAST)]),
    ("image saturated, check exposure; image too small for reliable reading (40 x 32 pixels)",
     [Reason(ReasonCode.SATURATED), Reason(ReasonCode.TOO_SMALL, {"columns": 40, "rows": 32})]),
    ("The image is unlike the images this model was validated on (its features lie 3.2× "
     "beyond the validated limit); the model's answer cannot be trusted for it",
     [Reason(ReasonCode.OUTSIDE_VALIDATED_RANGE, {"ratio": 3.2})]),
    ("modality NM is not one the model demo@1.0 accepts (CT, US)",
     [Reason(ReasonCode.MODALITY_NOT_ACCEPTED,
             {"modality": "NM", "model": "demo@1.0", "accepted": "CT, US"})]),
    ("no routing rule matches this series (modality MR, series 'a (b)', 8x8)",
     [Reason(ReasonCode.NO_ROUTING_RULE, {"series": "modality MR, series 'a (b)', 8x8"})]),
    ("routing rule ct head chooses the model head, which is not installed on this box (it "
     "runs demo@1.0)",
     [Reason(ReasonCode.MODEL_NOT_INSTALLED,
             {"rule": "ct head", "model": "head", "running": "demo@1.0"})]),
    ("received object is missing from the spool (disk fault?)",
     [Reason(ReasonCode.MISSING_FROM_SPOOL)]),
    ("processing was interrupted 3 times (crash or power cut); object kept for a technician",
     [Reason(ReasonCode.INTERRUPTED, {"attempts": 3})]),
    ("processing error: RuntimeError: lost; again",
     [Reason(ReasonCode.PROCESSING_ERROR, {"detail": "RuntimeError: lost; again"})]),
    ("invalid_uid", [Reason(ReasonCode.INVALID_UID)]),
    ("picture cannot be read: cannot identify image file",
     [Reason(ReasonCode.PICTURE_UNREADABLE, {"detail": "cannot identify image file"})]),
    ("empty file", [Reason(ReasonCode.EMPTY_FILE)]),
    ("not a DICOM file or a PNG/JPEG picture (content does not match its name); only its "
     "first 1 MB of 1,234 MB kept",
     [Reason(ReasonCode.NOT_AN_IMAGE_FILE),
      Reason(ReasonCode.EXCERPT_KEPT, {"kept_mb": 1, "size_mb": 1234})]),
    ("file is 3,072 MB, over the 1,024 MB object limit; not copied",
     [Reason(ReasonCode.FILE_TOO_LARGE, {"size_mb": 3072, "limit_mb": 1024})]),
    ("sparse file (48 MB long, 0.1 MB stored on the medium): not an image a modality writes; "
     "not copied", [Reason(ReasonCode.SPARSE_FILE, {"size_mb": 48, "stored_mb": 0.1})]),
    ("truncated file (ends inside an element)",  # a decoder's words: kept as recorded
     [Reason(ReasonCode.UNKNOWN, {"text": "truncated file (ends inside an element)"})]),
    ("image is blank, rescan suggested; and something else",
     [Reason(ReasonCode.UNKNOWN,
             {"text": "image is blank, rescan suggested; and something else"})]),
]


def _old_database(folder: Path) -> sqlite3.Connection:
    """The v13 tables the migration reads, with rows as v13 wrote them."""
    folder.mkdir(mode=0o700)
    conn = sqlite3.connect(os.fspath(folder / "box.db"))
    conn.execute("CREATE TABLE instances (id INTEGER PRIMARY KEY, status TEXT, reason TEXT)")
    conn.execute("CREATE TABLE results (instance_id INTEGER PRIMARY KEY, "
                 "warnings_json TEXT NOT NULL, assessment_reason TEXT NOT NULL DEFAULT '')")
    return conn


def test_the_migration_turns_each_old_sentence_into_its_codes(tmp_path: Path):
    conn = _old_database(tmp_path / "db")
    for n, (sentence, _expected) in enumerate(OLD_REASONS, start=1):
        conn.execute("INSERT INTO instances VALUES (?, 'quarantined', ?)", (n, sentence))
        conn.execute("INSERT INTO results VALUES (?, '[]', ?)", (n, sentence))
    conn.execute("INSERT INTO instances VALUES (100, 'queued', NULL)")
    v14.migrate(conn)
    for n, (_sentence, expected) in enumerate(OLD_REASONS, start=1):
        stored = conn.execute("SELECT reason FROM instances WHERE id=?", (n,)).fetchone()[0]
        assert decode(stored) == expected and stored == encode(expected), stored
        stored = conn.execute("SELECT assessment_reason FROM results WHERE instance_id=?",
                              (n,)).fetchone()[0]
        assert decode(stored) == expected
    assert conn.execute("SELECT reason FROM instances WHERE id=100").fetchone()[0] is None
    before = conn.execute("SELECT * FROM instances ORDER BY id").fetchall()
    v14.migrate(conn)  # a second run changes nothing
    assert conn.execute("SELECT * FROM instances ORDER BY id").fetchall() == before
    conn.close()


def test_the_migration_turns_old_warnings_into_records(tmp_path: Path):
    conn = _old_database(tmp_path / "db")
    old = [{"code": "too_small",
            "message": "image too small for reliable reading (40 x 32 pixels)"},
           {"code": "low_contrast", "message": "low contrast, check window/exposure"},
           {"code": "heatmap_on_annotation",
            "message": "the heatmap's hot spot lies on burned-in text or a ruler, not on "
                       "tissue: look at the marked area yourself"},
           {"code": "someday", "message": "a warning of a later version"}]
    conn.execute("INSERT INTO results VALUES (1, ?, '')", (json.dumps(old),))
    conn.execute("INSERT INTO results VALUES (2, '[]', '')")
    conn.execute("INSERT INTO results VALUES (3, 'not json', '')")
    v14.migrate(conn)
    rows = dict(conn.execute("SELECT instance_id, warnings_json FROM results").fetchall())
    assert decode(rows[1]) == [
        Reason(ReasonCode.TOO_SMALL, {"columns": 40, "rows": 32}), Reason(ReasonCode.LOW_CONTRAST),
        Reason(ReasonCode.HEATMAP_ON_ANNOTATION),
        Reason(ReasonCode.UNKNOWN, {"text": "a warning of a later version"})]
    assert rows[2] == "[]" and decode(rows[3]) == [
        Reason(ReasonCode.UNKNOWN, {"text": "not json"})]
    assert json.loads(rows[1])[0] == {"code": "too_small",
                                      "params": {"columns": 40, "rows": 32}}
    conn.close()
