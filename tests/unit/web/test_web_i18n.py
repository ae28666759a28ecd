"""The viewer in Simplified Chinese: how the language is chosen, and every page read in it.

A clinician's whole day in Chinese: the login page, the worklist (every filter),
each kind of study (alert, clear, multi-frame, not assessable, outside the
validated range, image deleted by retention), the report and its PDF, the
technician's device, quarantine and audit pages, the error pages. On each, no
English sentence of the catalog appears and no run of English words is left
outside the data the page shows as recorded (``tests/i18n_text.py``).
"""

from __future__ import annotations

import io
import re
import sqlite3
import time

import pytest
from pypdf import PdfReader

from clinibox_common.i18n.fonts import find_cjk_font
from firmware_app.storage import db
from firmware_app.storage.accounts import Accounts
from tests.i18n_text import catalog_sentences, english_sentences, is_chinese, visible_text
from tests.viewer_state import CLINICIAN, TECHNICIAN
from tests.web_client import ViewerClient, csrf_token
from web.app import create_app

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}
#: the demo model card's statement, as the catalog translates it
DEMO_USE_ZH = "仅供演示——用程序生成的模拟体模训练；不可用于临床"
ASSIST_ZH = "本结果只是辅助医生，不能代替医生。必须由医生阅片并作出诊断。"


def _html(answer) -> str:
    return answer.get_data(as_text=True)


def _chinese_client(app, who=None) -> ViewerClient:
    client = ViewerClient(app)
    client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = ZH["Accept-Language"]
    if who is not None:
        assert client.login(*who).status_code == 302
    return client


def _assert_all_chinese(name: str, answer, *, fragment: bool = False) -> str:
    """The page reads in Chinese: html lang, no catalog English, no English run of words."""
    html = _html(answer)
    assert fragment or '<html lang="zh-CN">' in html, name
    text = visible_text(html)
    assert is_chinese(text), name
    assert catalog_sentences(text) == [], (name, catalog_sentences(text))
    assert english_sentences(text) == [], (name, english_sentences(text))
    return text


def pdf_text(data: bytes) -> str:
    """The text of a PDF as pypdf reads it, blanks folded.

    pypdf reads the two-byte codes of fpdf2's CFF (OpenType) Chinese font as a NUL
    before each character (its CMap handling, py-pdf/pypdf#2295): NULs are dropped.
    """
    reader = PdfReader(io.BytesIO(data))
    text = " ".join(page.extract_text() for page in reader.pages).replace("\x00", "")
    return " ".join(text.split())


def _language(state) -> dict[str, str]:
    conn = sqlite3.connect(state.config.database_path)
    try:
        return dict(conn.execute("SELECT name, language FROM accounts"))
    finally:
        conn.close()


def test_a_browser_without_a_language_gets_english(viewer):
    _state, app = viewer
    client = ViewerClient(app)
    page = _html(client.get("/login"))
    assert '<html lang="en">' in page and "Log in" in page and "登录" not in page


@pytest.mark.parametrize(("accepted", "chinese"), [
    ("zh-CN,zh;q=0.9", True), ("zh", True), ("zh-Hans", True), ("zh-Hans-CN", True),
    ("fr-FR, zh;q=0.5", True), ("en-US,en;q=0.9,zh-CN;q=0.8", False),
    ("zh-TW", False), ("zh-Hant, en;q=0.4", False), ("de, fr", False),
])
def test_accept_language_chooses_simplified_chinese(viewer, accepted, chinese):
    _state, app = viewer
    page = _html(ViewerClient(app).get("/login", headers={"Accept-Language": accepted}))
    assert ('<html lang="zh-CN">' in page) is chinese, accepted
    assert ("登录" in page) is chinese and ("Log in" in page) is not chinese


def test_the_clinics_setting_wins_over_the_browser(viewer):
    state, _app = viewer
    state.config.web.language = "zh_CN"
    app = create_app(state.config)
    page = _html(ViewerClient(app).get("/login", headers={"Accept-Language": "en-US"}))
    assert '<html lang="zh-CN">' in page and "登录" in page
    state.config.web.language = "en"
    app = create_app(state.config)
    assert "Log in" in _html(ViewerClient(app).get("/login", headers=ZH))


def test_the_switch_keeps_each_users_choice_with_the_account(viewer):
    state, app = viewer
    nurse = ViewerClient(app)  # an English browser
    nurse.login(*CLINICIAN)
    worklist = _html(nurse.get("/"))
    assert "Worklist" in worklist and 'id="language-zh_CN"' in worklist
    answer = nurse.post("/language", {"language": "zh_CN", "next": "/?status=alert"},
                        token=csrf_token(worklist))
    assert answer.status_code == 302 and answer.location.endswith("/?status=alert")
    assert _language(state)[CLINICIAN[0]] == "zh_CN"
    page = _html(nurse.get("/"))
    assert '<html lang="zh-CN">' in page and "工作列表" in page
    assert 'class="chosen" aria-pressed="true">中文' in page

    # the choice follows the account to another (English) browser, and over a new login
    elsewhere = ViewerClient(app)
    elsewhere.login(*CLINICIAN)
    assert "工作列表" in _html(elsewhere.get("/"))
    # the technician on the same box still reads English: the choice is per user
    technician = ViewerClient(app)
    technician.login(*TECHNICIAN)
    assert "Worklist" in _html(technician.get("/")) and _language(state)[TECHNICIAN[0]] == ""

    # back to English: stored, and the page after the switch is in English
    nurse.post("/language", {"language": "en", "next": "/"}, token=csrf_token(page))
    assert _language(state)[CLINICIAN[0]] == "en"
    assert "Worklist" in _html(nurse.get("/", headers=ZH))  # the user's choice beats the browser


def test_a_choice_made_before_login_becomes_the_accounts(viewer):
    state, app = viewer
    client = ViewerClient(app)
    login = _html(client.get("/login"))
    answer = client.post("/language", {"language": "zh_CN", "next": "/login"},
                         token=csrf_token(login))
    assert answer.status_code == 302 and answer.location.endswith("/login")
    assert "登录" in _html(client.get("/login"))
    client.login(*TECHNICIAN)
    assert _language(state)[TECHNICIAN[0]] == "zh_CN"
    page = _html(client.get("/"))
    assert "工作列表" in page
    client.post("/logout", token=csrf_token(page))
    assert "登录" in _html(client.get("/login"))  # the login page stays in the user's language


def test_the_switch_refuses_other_languages_and_foreign_return_addresses(viewer):
    state, app = viewer
    client = ViewerClient(app)
    client.login(*CLINICIAN)
    assert client.post("/language", {"language": "fr"}).status_code == 400
    answer = client.post("/language", {"language": "zh_CN", "next": "https://evil.example/"})
    assert answer.status_code == 302 and answer.location == "/"
    assert _language(state)[CLINICIAN[0]] == "zh_CN"
    assert ViewerClient(app).post("/language", {"language": "en"}, token="").status_code == 400


def test_an_account_language_is_checked(viewer):
    state, _app = viewer
    conn = db.connect(state.config.database_path)
    accounts = Accounts(conn)
    carl = next(a for a in accounts.all() if a.name == CLINICIAN[0])
    with pytest.raises(ValueError):
        accounts.set_language(carl.id, "klingon")
    accounts.set_language(carl.id, "zh_CN")
    assert accounts.get(carl.id).language == "zh_CN"
    conn.close()


@pytest.mark.slow
def test_a_clinicians_day_reads_in_chinese(viewer):
    """Every page a clinician opens, with the data of every kind of study."""
    state, app = viewer
    client = _chinese_client(app)
    _assert_all_chinese("login", client.get("/login"))
    wrong = client.post("/login", {"name": CLINICIAN[0], "password": "not-the-password"})
    assert "账号或密码错误。" in _assert_all_chinese("wrong password", wrong)
    client.login(*CLINICIAN)
    for status in ("all", "alert", "done", "waiting", "quarantined", "not_analysed"):
        page = _assert_all_chinese(f"worklist {status}", client.get(f"/?status={status}"))
        if status == "waiting":  # the waiting object's badge and status, in words
            assert "等待分析 图像 " in page and "waiting" not in page
        if status == "quarantined":  # the decoder's English is the technician's, not hers
            assert "来自扫描设备（DICOM）：" in page and "dicom" not in page
            assert "本机无法读取这个文件；技术员可在隔离列表中查看原因" in page
    _assert_all_chinese("worklist rows", client.get("/worklist/rows"), fragment=True)
    yesterday = time.strftime("%Y-%m-%d", time.localtime(time.time() - 86400))
    _assert_all_chinese("empty day", client.get(f"/?day={yesterday}"))

    texts = {}
    for kind, study in state.studies.items():
        texts[kind] = _assert_all_chinese(f"study {kind}", client.get(f"/study/{study}"))
        report = _assert_all_chinese(f"report {kind}", client.get(f"/study/{study}/report"))
        assert DEMO_USE_ZH in report and ASSIST_ZH in report, kind
    assert "发现可疑区域——请医生尽快查看这个检查" in texts["alert"]
    assert "区域 1：疑似病灶，位于图像" in texts["alert"] and "模型置信度" in texts["alert"]
    assert "恶性" in texts["alert"] and "良性" in texts["alert"] and " mm" in texts["alert"]
    assert "演示模型的猜测" in texts["alert"]  # the caution beside the kind of lesion
    assert "模型未发现可疑区域" in texts["clear"]
    assert "不可评估：图像太暗，建议重新扫描。" in texts["dark"]
    assert "超出模型验证范围。模型对这张图像不给出结果，必须由医生阅片" in texts["real_ct"]
    for unjudged in ("real_ct", "dark"):  # no result: no percentage, no "do you agree?"
        assert "%" not in texts[unjudged] and "您同意吗" not in texts[unjudged], unjudged
    assert re.search(r"第 \d 帧，共 6 帧", texts["sweep"])
    for kind in ("dark", "real_ct"):
        assert "必须由医生阅片" in texts[kind] and "模型未发现" not in texts[kind]
    assert "年" in texts["alert"] and "月" in texts["alert"]  # dates in the Chinese form

    # a verdict, then the page again (the tally), the image of a study deleted by retention
    alert = state.instances["alert"]
    answer = client.post(f"/instance/{alert}/feedback", {"finding": 0, "verdict": "agree"})
    assert answer.status_code == 302
    page = _assert_all_chinese("after a verdict", client.get(answer.location))
    assert "目前： 1 同意" in page
    conn = sqlite3.connect(state.config.database_path)
    conn.execute("UPDATE instances SET image_deleted_at = received_at + 3 * 86400 WHERE id = ?",
                 (state.instances["clear"],))
    conn.commit()
    conn.close()
    gone = _assert_all_chinese("deleted image", client.get(f"/study/{state.studies['clear']}"))
    assert "删除（保存 3 天后按保留期限删除）；分析结果仍保留。" in gone

    for url, code in (("/device", 403), ("/study/999999", 404),
                      (f"/instance/{state.instances['clear']}/key.png", 410)):
        answer = client.get(url)
        assert answer.status_code == code, url
        if code != 410:
            _assert_all_chinese(url, answer)
    assert client.get("/?status=coffee").status_code == 400
    _assert_all_chinese("400", client.get("/?status=coffee"))


@pytest.mark.slow
def test_a_technicians_pages_read_in_chinese(viewer):
    state, app = viewer
    client = _chinese_client(app, TECHNICIAN)
    clinician = _chinese_client(app, CLINICIAN)
    clinician.get(f"/study/{state.studies['alert']}")  # audit rows of several kinds
    clinician.get(f"/study/{state.studies['alert']}/report.pdf")
    clinician.post("/logout")
    device = _assert_all_chinese("device", client.get("/device"))
    assert "仅供演示" in device and "签名已验证" in device
    held = _assert_all_chinese("quarantine", client.get("/device/quarantine"))
    assert "重新处理" in held and "要从本机永久删除这个对象吗？" in _html(
        client.get("/device/quarantine"))  # the delete button's question, for viewer.js
    answer = client.post(f"/device/quarantine/{state.instances['truncated']}/process")
    assert answer.status_code == 302
    flashed = _assert_all_chinese("flash", client.get(answer.location))
    assert f"对象 {state.instances['truncated']} 已重新排队。" in flashed
    audit = _assert_all_chinese("audit", client.get("/audit"))
    assert "记录链检查：完好" in audit and "查看检查" in audit and "下载报告" in audit
    _assert_all_chinese("audit filtered", client.get("/audit?action=login&account=carl"))
    bad = client.get("/audit?since=someday")
    assert bad.status_code == 400 and "不是日期" in _assert_all_chinese("bad date", bad)


def test_the_english_pages_are_unchanged(viewer):
    """The default (no Accept-Language) keeps the English wording the suite knows."""
    state, app = viewer
    client = ViewerClient(app)
    client.login(*CLINICIAN)
    page = _html(client.get(f"/study/{state.studies['alert']}"))
    assert "Suspicious area found — a doctor should review this study soon" in page
    assert "Area 1: possible lesion in the " in page and "(model confidence " in page
    assert '<html lang="en">' in page and not is_chinese(visible_text(page).replace(
        "中文", ""))


@pytest.mark.slow
def test_the_pdf_report_in_chinese(viewer):
    if find_cjk_font() is None:
        pytest.fail("no Chinese font: install fonts-noto-cjk (apt-get install fonts-noto-cjk), "
                    "as .ci/run does")
    state, app = viewer
    client = _chinese_client(app, CLINICIAN)
    answer = client.get(f"/study/{state.studies['alert']}/report.pdf")
    assert answer.status_code == 200 and answer.mimetype == "application/pdf"
    reader = PdfReader(io.BytesIO(answer.data))
    text = pdf_text(answer.data)
    for expected in ("clinibox 检查报告", "患者编号", "发现可疑区域——请医生尽快查看这个检查",
                     "区域 1：疑似病灶", DEMO_USE_ZH, "本结果只是辅助医生", "生成于", "第 1 页"):
        assert expected.replace(" ", "") in text.replace(" ", ""), expected  # lines wrap
    fonts = " ".join(str(font.get_object()["/BaseFont"]) for font in
                     reader.pages[0]["/Resources"]["/Font"].get_object().values())
    assert "NotoSansCJK" in fonts or "WenQuanYi" in fonts, fonts
    data = ("CT CHEST PHANTOM",)  # the study as recorded
    assert english_sentences(" ".join(text.split(data[0]))) == []
    dark = client.get(f"/study/{state.studies['dark']}/report.pdf")
    dark_text = pdf_text(dark.data)
    assert "不可评估" in dark_text and "模型未发现" not in dark_text


@pytest.mark.slow
def test_without_a_chinese_font_the_pdf_says_so_in_english(viewer, monkeypatch):
    import web.views_clinic as views

    state, app = viewer
    monkeypatch.setattr(views, "find_cjk_font", lambda: None)
    client = _chinese_client(app, CLINICIAN)
    answer = client.get(f"/study/{state.studies['alert']}/report.pdf")
    text = pdf_text(answer.data)
    assert "This box has no Chinese font (apt-get install fonts-noto-cjk" in text
    assert "Suspicious area found" in text and "?" * 4 not in text
