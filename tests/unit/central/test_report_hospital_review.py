"""The hospital's verdict reads the same on the study page, the printed report and its PDF:
the verdict with its follow-up months, "arrived late" when it did, when it was given and
the note, in English and in Chinese (``firmware_app/words/review_words.py``)."""

from __future__ import annotations

import datetime as dt
import html
import io

import pytest
from pypdf import PdfReader

from clinibox_common.i18n import formats, gettext, ngettext, use_locale
from firmware_app.storage import db, hospital_reviews
from tests.viewer_state import CLINICIAN
from tests.web_client import ViewerClient

ZH = "zh-CN,zh;q=0.9,en;q=0.5"
NOTE = "Lesion looks solid: book a CT at the county hospital within two weeks."
GIVEN = dt.datetime(2026, 11, 20, 9, 30).timestamp()


def _review(state, study: str, *, late: bool) -> None:
    """Keep a follow-up verdict with a note for ``study``, as the downlink keeps it."""
    conn = db.connect(state.config.database_path)
    try:
        key = conn.execute("SELECT study_key FROM studies WHERE id = ?",
                           (state.studies[study],)).fetchone()[0]
        with db.transaction(conn):
            assert hospital_reviews.add(
                conn, seq=1, study_key=key, study_ref="ab" * 16, alert_seq=3,
                verdict="follow_up", follow_up_months=6, note=NOTE, reviewed_at=GIVEN,
                late=late)
    finally:
        conn.close()


def _client(app, chinese: bool) -> ViewerClient:
    client = ViewerClient(app)
    if chinese:
        client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = ZH
    assert client.login(*CLINICIAN).status_code == 302
    return client


def _pdf_text(response) -> str:
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    reader = PdfReader(io.BytesIO(response.data))
    # pypdf reads the CJK font's two-byte codes with a NUL before each character
    text = "".join(page.extract_text() for page in reader.pages).replace("\x00", "")
    return " ".join(text.split())


def _expected(language: str, late: bool) -> list[str]:
    with use_locale(language):
        words = [gettext("Hospital reviewed: %(verdict)s", verdict=ngettext(
                     "follow up in %(num)s month", "follow up in %(num)s months", 6)),
                 gettext("reviewed %(when)s", when=formats.moment(GIVEN)),
                 gettext("Note from the hospital: %(note)s", note=NOTE)]
        if late:
            words.append(gettext("(arrived late, given %(date)s)",
                                 date=formats.day(dt.date.fromtimestamp(GIVEN))))
    return words


@pytest.mark.slow
@pytest.mark.parametrize(("language", "late"), [("en", False), ("zh_CN", True)])
def test_the_report_and_its_pdf_carry_the_hospitals_verdict_as_the_study_page(
        viewer, language, late):
    state, app = viewer
    client = _client(app, chinese=language != "en")
    study = state.studies["alert"]
    before = client.get(f"/study/{study}/report").get_data(as_text=True)
    assert 'id="hospital-review"' not in before and NOTE not in before
    _review(state, "alert", late=late)
    expected = _expected(language, late)
    assert "6" in expected[0] and (language == "en" or "随访" in expected[0])
    page = html.unescape(client.get(f"/study/{study}").get_data(as_text=True))
    report = html.unescape(client.get(f"/study/{study}/report").get_data(as_text=True))
    pdf = _pdf_text(client.get(f"/study/{study}/report.pdf"))
    for words in expected:
        assert words in page, words
        assert words in report, words
        # the PDF's lines wrap: compare without the blanks a line break leaves
        assert words.replace(" ", "") in pdf.replace(" ", ""), (words, pdf)
    assert ('id="hospital-review-late"' in report) is late


@pytest.mark.slow
def test_a_study_the_hospital_has_not_reviewed_prints_no_review(viewer):
    state, app = viewer
    _review(state, "alert", late=False)
    client = _client(app, chinese=False)
    clear = state.studies["clear"]
    report = client.get(f"/study/{clear}/report").get_data(as_text=True)
    assert 'id="hospital-review"' not in report
    assert "Hospital reviewed" not in _pdf_text(client.get(f"/study/{clear}/report.pdf"))
