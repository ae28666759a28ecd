"""The box's events and audit details in the reader's language (issue 54): every event code
the box records has Chinese words with its parts; an event from before codes is a plain note
in Chinese, never its English line; the audit trail's details are words, data kept as is."""

from __future__ import annotations

import pytest

from clinibox_common.i18n import use_locale
from firmware_app.storage import db, event_codes
from firmware_app.words import event_words
from tests.i18n_text import english_sentences, is_chinese, visible_text
from web import audit_words

#: one code of every kind the box records (``storage/event_codes.py``, the downlink's), and
#: a part of it the words must name
CODES = {
    "link_down": "", "outbox_dropped:12:500": "12", "pacs_failed:unreachable": "",
    "pacs_failed:tls": "TLS", "pacs_failed:rejected": "", "pacs_failed:aborted": "",
    "pacs_failed:rejected:called_ae": "ae_title", "pacs_failed:rejected:busy": "",
    "pacs_failed:no_answer": "", "pacs_failed:refused:0xA700": "0xA700",
    "pacs_failed:lost": "", "pacs_failed:unreadable": "", "pacs_failed:cannot_send": "",
    "pacs_failed:auth": "username", "pacs_failed:auth:no_user": "https://",
    "pacs_failed:no_service": "url", "pacs_failed:server_error": "",
    "pacs_failed:unconfirmed": "url", "pacs_failed:password_file": "",
    "pacs_failed:password_file:missing": "password_file",
    "pacs_failed:password_file:readable_by_others": "600",
    "pacs_failed:password_file:link": "", "pacs_failed:password_file:empty": "",
    "pacs_failed:password_file:not_utf8": "UTF-8",
    "pacs_failed:password_file:unreadable": "600",
    "pacs_failed:password_file:not_regular": "",
    "pacs_held:3:refused:0xA900": "0xA900", "requeued:4:tech": "tech",
    "deleted:5:tech": "5", "interrupted:2": "2", "retention:3:4000000:1:0": "3.8 MB",
    "retention:3:0:0:1": "3", "audit_kept:90": "90", "dicom_requeued:2:main": "main",
    "dicom_requeued:2": "2", "usb_unfinished:sdb1": "sdb1", "usb_problem:sdb1": "sdb1",
    "dicomdir_missing:DICOM/IM0001": "DICOM/IM0001", "conflict:12:8f3a": "8f3a",
    "cstore_refused:uid_mismatch:CT_1": "CT_1", "cstore_refused:odd:CT_1": "CT_1",
    "study_left_out:7:2": "7", "study_seg_left_out:7:2": "7", "study_header_fixes:7:2": "7",
    "study_results_not_made:7:2:1": "7", "study_results_held:7:2:3": "7",
    "routed_model_down:chest": "chest", "downlink_unknown_study": "",
    "downlink_late": "", "downlink_link_check": "", "downlink_order_stale": "",
    "downlink_bad-signature": "", "downlink_clock": "", "clock_moved:4320": "4320",
    "clock_refused:bad-signature": "",
    **{f"records_failed:{failure}": "" for failure in event_codes.RECORDS_FAILURES},
    "records_failed:refused:AE": "AE", "records_failed:server_error:503": "503",
    "records_failed:auth:no_user": "", "records_failed:password_file:readable_by_others": "",
    "records_held:5:AR": "AR", "records_held:1:not_made": "", "records_requeued:3:his": "3",
    "records_not_queued:12": "",
}


def test_every_kind_of_event_code_is_covered_here():
    kinds = {value for name, value in vars(event_codes).items()
             if name.isupper() and isinstance(value, str) and not name.startswith("PACS_")
             and value not in event_codes.RECORDS_FAILURES}
    assert kinds <= {event_codes.kind(code) for code in CODES}, kinds


@pytest.mark.parametrize("code", sorted(CODES))
def test_each_event_code_reads_in_chinese_with_its_parts(code):
    with use_locale("zh_CN"):
        said, recorded = event_words.message({"code": code, "message": "broker link down"})
    assert not recorded and is_chinese(said), said
    assert english_sentences(said) == [], said
    assert CODES[code] in said, said
    assert said != event_words.RECORDED_IN_ENGLISH


def test_an_event_without_a_known_code_is_a_plain_note_outside_english():
    event = {"code": "", "message": "3 object(s) failed after repeated interrupted processing"}
    with use_locale("zh_CN"):
        assert event_words.message(event) == ("（仅有英文记录，请看英文页面或日志）", False)
        assert event_words.pacs_error("", "cannot connect to PACS@h:104")[0] == (
            "发送到 PACS 失败（仅有英文记录，请看英文页面或日志）")
    with use_locale("en"):  # English keeps the line: it says more than the words
        assert event_words.message(event) == (event["message"], True)
        assert event_words.message({"code": "link_down", "message": "broker link down: x"}) \
            == ("broker link down: x", True)


def test_a_capped_event_is_counted_by_its_codes_kind(tmp_path):
    conn = db.open_database(tmp_path / "box.db")
    kept = [db.record_event_capped(conn, "WARNING", "ingest", f"refused {n}",
                                   event_codes.code("cstore_refused", "uid_mismatch", f"AE{n}"),
                                   3, now=1000.0 + n) for n in range(5)]
    assert kept == [True, True, True, False, False]
    assert db.events_since(conn, "ingest", "cstore_refused", 0.0) == 3
    assert db.events_since(conn, "ingest", "cstore", 0.0) == 0  # a kind, not a prefix


#: audit details as the box writes them (``storage/audit.py``'s callers) and what the
#: Chinese words must hold
DETAILS = [
    ("login", "technician", "技术员"), ("login_failed", "wrong password", "密码"),
    ("login_throttled", "wait 30 s", "30"), ("worklist_view", "status alert, page 2", "2"),
    ("study_view", "instance 12", "12"), ("image_view", "frame 3", "3"),
    ("image_view", "key image", "关键图像"), ("feedback", "finding 1: agree", "同意"),
    ("report_download", "PDF", "PDF"), ("audit_viewed", "all rows", "全部"),
    ("audit_viewed", "since 2026-11-01, action export", "2026-11-01"),
    ("live_view", "session 4", "4"), ("live_session_started", "source us-1", "us-1"),
    ("live_session_started", "source us-1 (from a worklist study)", "us-1"),
    ("live_session_ended", "source us-1", "us-1"),
    ("live_keep_requested", "key_frame at frame 120", "120"), ("live_keep_requested", "clip",
                                                                "短视频"),
    ("export", "export 3: 4 file(s) to /media/usb/x", "/media/usb/x"),
    ("quarantine_requeued", "quarantined: truncated file: runs past the end", "已隔离"),
    ("quarantine_deleted", "failed: cannot decode", "失败"),
    ("account_created", "role clinician", "临床人员"),
    ("password_changed", "2 session(s) ended", "2"),
    ("model_installed", "was demo@1.0.0; 2/2 golden cases within tolerance on onnxruntime",
     "demo@1.0.0"),
    ("model_refused", "signature: demo@1.0.0 is signed with an untrusted key", "签名"),
    ("model_rolled_back", "from demo@1.1.0 (technician)", "demo@1.1.0"),
    ("model_kept", "trial passed after 20 analyses", "20"),
    ("model_rollout_received", "rollout 7; stale", "7"),
    ("model_rollout_received", "rollout 7", "7"), ("hospital_review_received", "refer", ""),
    ("audit_pruned", "40 row(s) from before 2026-01-01 ([audit] keep_days = 365)", "40"),
]


@pytest.mark.parametrize(("action", "detail", "part"), DETAILS)
def test_each_audit_detail_reads_in_chinese(action, detail, part):
    with use_locale("zh_CN"):
        said, as_written = audit_words.detail(action, detail)
    assert english_sentences(visible_text(str(said))) == [], said  # a path: data, marked
    assert part in said, said
    assert not as_written, said
    with use_locale("en"):
        assert audit_words.detail(action, detail) == (detail, True)


def test_an_unknown_audit_detail_is_data_or_a_plain_note():
    with use_locale("zh_CN"):
        assert audit_words.detail("login", "some new English words") == (
            "（仅有英文记录，请看英文页面）", False)
        assert audit_words.detail("model_installed", "demo@2.0.0") == ("demo@2.0.0", True)
        assert audit_words.target("study:12") == ("检查", "12")
        assert audit_words.target("odd:12") == ("", "odd:12")
    with use_locale("en"):
        assert audit_words.target("study:12") == ("", "study:12")


def test_the_box_itself_and_its_console_are_said_in_words():
    with use_locale("zh_CN"):
        assert audit_words.account("system:service") == "设备自身"
        assert audit_words.account("system:retention") == "设备自动清理旧图像"
        assert audit_words.account("cli:root") == "命令行（root）"
        assert audit_words.account("nurse-wang") == "nurse-wang"  # a name is data
        assert audit_words.address("local") == "本机"
        assert audit_words.address("10.0.0.7") == "10.0.0.7"
    with use_locale("en"):
        assert audit_words.account("cli:root") == "cli:root"
        assert audit_words.address("local") == "local"
