"""The printable study report as PDF (fpdf2): patient and study, key image, verdict, findings.

Labels are in the current language (``clinibox_common.i18n``); the content
arrives already written in it (``web/views_clinic.py``). Fonts
(``web/report_fonts.py``): DejaVu Sans for Latin text, Noto Sans CJK SC (or
WenQuanYi Zen Hei) for Chinese, as the main font of a Chinese report and as
DejaVu's fallback for Chinese names in an English one; without any, the core
Helvetica font and text reduced to latin-1 (typographic punctuation to its
ASCII look-alike, anything else to ``?``). Every string is cleaned first:
control and format characters removed, line breaks and runs of blanks folded
to one space, length capped, so a patient-controlled string can neither break
the PDF nor its layout. Characters no font has a glyph for become ``?``
rather than disappearing.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import WrapMode, XPos, YPos
from PIL import Image

from clinibox_common.i18n import CHINESE, N_, current, gettext
from web.report_content import ReportContent
from web.report_fonts import FONT_DIRS, FontFace, FontPlan, find_fonts, glyphs, plan_fonts

_ = gettext
__all__ = ["FONT_DIRS", "TITLE", "ReportContent", "clean_text", "find_fonts", "report_pdf"]

TITLE = N_("clinibox study report")
#: Longest text kept per field / per finding line (characters).
FIELD_LIMIT, LINE_LIMIT = 200, 1000
#: The key image never takes more than this height (mm).
IMAGE_MAX_HEIGHT = 120.0
#: Plain look-alikes for the core (latin-1) font.
_ASCII = str.maketrans({
    "\u2014": "-", "\u2013": "-", "\u2012": "-", "\u2010": "-", "\u2011": "-", "\u2212": "-",
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"',
    "\u2026": "...", "\u2022": "-", "\u00b7": "-", "\u2192": "->", "\u2264": "<=", "\u2265": ">=",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ",
})
_LINE_BREAKS = "\n\r\t\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def clean_text(value: object, limit: int = LINE_LIMIT) -> str:
    """One line of printable text: controls/format characters dropped, blanks folded, capped."""
    text = unicodedata.normalize("NFC", "" if value is None else str(value))
    kept = []
    for ch in text:
        if ch in _LINE_BREAKS:
            kept.append(" ")
        elif unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"):
            kept.append(ch)
    text = " ".join("".join(kept).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _texts(content: ReportContent) -> list[str]:
    """Every string of ``content`` (to see which fonts the report needs)."""
    texts: list[str] = []
    for item in fields(content):
        value = getattr(content, item.name)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts.extend(str(line) for line in value)
    return texts


def report_pdf(content: ReportContent, *, font_dirs: Sequence[Path] | None = None) -> bytes:
    """The report as PDF bytes (A4 portrait); ``font_dirs`` replaces every folder searched
    for fonts (``FONT_DIRS`` and ``clinibox_common.i18n.fonts.CJK_FONT_DIRS``)."""
    chinese = current() == CHINESE
    title = _(TITLE)
    plan = plan_fonts(_texts(content), chinese=chinese, font_dirs=font_dirs)
    generated = clean_text(content.generated, FIELD_LIMIT)
    try:
        pdf = _Report(plan, title, generated, chinese)
    except Exception:  # an unreadable font file: the core font still makes a report
        pdf = _Report(FontPlan(None), title, generated, chinese)
    pdf.set_title(title)
    pdf.set_creator("clinibox")
    pdf.set_lang("zh-CN" if chinese else "en")
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.add_page()

    if clean_text(content.font_note):
        pdf.use_font(size=9)
        pdf.paragraph(clean_text(content.font_note), 5)
        pdf.ln(1)
    pdf.use_font(bold=True, size=18)
    pdf.paragraph(title, 10)
    pdf.ln(2)

    rows = (
        (_("Patient"), content.patient_name),
        (_("Patient ID"), content.patient_id),
        (_("Study date"), content.study_date),
        (_("Study"), content.study_description),
        (_("Modality"), content.modality),
        (_("Received"), content.received),
    )
    for label, value in rows:
        pdf.field_row(label, clean_text(value, FIELD_LIMIT) or "—")
    pdf.ln(4)

    if content.key_image_png:
        _key_image(pdf, content.key_image_png)
    elif clean_text(content.image_note):
        pdf.use_font(size=10)
        pdf.set_draw_color(80, 80, 80)
        pdf.multi_cell(0, 5.5, pdf.safe(clean_text(content.image_note)), border=1, padding=3,
                       new_x=XPos.LMARGIN, new_y=YPos.NEXT, wrapmode=pdf.wrapmode)
        pdf.ln(4)

    pdf.use_font(bold=True, size=13)
    pdf.paragraph(clean_text(content.verdict) or _("No result"), 7)
    if clean_text(content.hospital_verdict):
        _hospital_review(pdf, content)
    pdf.use_font(size=11)
    for line in (content.next_step, content.summary, content.image_probability):
        if clean_text(line):
            pdf.paragraph(clean_text(line), 6)
    pdf.ln(2)

    findings = [clean_text(line) for line in content.findings or []]
    _section(pdf, _("Findings"), [f for f in findings if f] or [_("None recorded.")])
    warnings = [clean_text(line) for line in content.warnings or []]
    if any(warnings):
        _section(pdf, _("Image quality"), [w for w in warnings if w])  # as the page

    pdf.use_font(size=9)
    model = clean_text(content.model_id, FIELD_LIMIT) or _("unknown")
    pdf.paragraph(_("Model: %(model)s", model=model), 5)
    pdf.ln(3)

    pdf.use_font(bold=True, size=10)
    pdf.set_fill_color(245, 245, 245)
    pdf.set_draw_color(80, 80, 80)
    notice = clean_text(content.notice) or _(
        "This result assists a doctor and does not replace one.")
    pdf.multi_cell(0, 5.5, pdf.safe(notice), border=1, fill=True, padding=3,
                   new_x=XPos.LMARGIN, new_y=YPos.NEXT, wrapmode=pdf.wrapmode)
    return bytes(pdf.output())


class _Report(FPDF):
    """FPDF with the report's fonts, text preparation and footer."""

    def __init__(self, plan: FontPlan, title: str, generated: str, chinese: bool) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.unicode = plan.main is not None
        self.title_text = title
        self.generated = generated
        #: Chinese has no spaces between words: lines break between characters
        self.wrapmode = WrapMode.CHAR if chinese else WrapMode.WORD
        self.glyphs: frozenset[int] = frozenset()
        self.report_family = "Helvetica"
        for face in (plan.main, plan.fallback):
            if face is not None:
                self._register(face)
        if plan.main is not None:
            self.report_family = plan.main.family
        if plan.fallback is not None:
            self.set_fallback_fonts([plan.fallback.family], exact_match=False)
        self.alias_nb_pages()

    def _register(self, face: FontFace) -> None:
        """Add ``face`` in regular and bold; its glyphs join those the report can show."""
        self.add_font(face.family, "", str(face.regular), collection_font_number=face.index)
        self.add_font(face.family, "B", str(face.bold), collection_font_number=face.index)
        self.glyphs |= glyphs(str(face.regular), face.index) & glyphs(str(face.bold), face.index)

    def safe(self, text: str) -> str:
        """Text the fonts can show: missing glyphs (Unicode) or non-latin-1 (core) → '?'."""
        if self.unicode:
            return "".join(ch if ord(ch) in self.glyphs or ch == " " else "?" for ch in text)
        return text.translate(_ASCII).encode("latin-1", "replace").decode("latin-1")

    def use_font(self, *, bold: bool = False, size: float = 10) -> None:
        """Select the report font in regular or bold at ``size`` points."""
        self.set_font(self.report_family, "B" if bold else "", size)

    def paragraph(self, text: str, height: float) -> None:
        """A paragraph across the full width, wrapped."""
        self.multi_cell(0, height, self.safe(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT,
                        wrapmode=self.wrapmode)

    def field_row(self, label: str, value: str) -> None:
        """One ``label  value`` row of the patient/study block; long values wrap."""
        self.use_font(bold=True, size=10)
        self.cell(32, 6, self.safe(label))
        self.use_font(size=10)
        self.multi_cell(0, 6, self.safe(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT,
                        wrapmode=self.wrapmode)

    def footer(self) -> None:
        """Generated date on the left, page n of N on the right."""
        self.set_y(-14)
        self.use_font(size=8)
        self.set_text_color(90, 90, 90)
        self.cell(0, 5, self.safe(_("%(title)s · generated %(when)s", title=self.title_text,
                                    when=self.generated)))
        self.set_x(self.l_margin)
        self.cell(0, 5, self.safe(_("page %(page)s of %(pages)s", page=self.page_no(),
                                    pages="{nb}")), align="R")
        self.set_text_color(0, 0, 0)


def _section(pdf: _Report, heading: str, lines: list[str]) -> None:
    pdf.use_font(bold=True, size=11)
    pdf.paragraph(heading, 6)
    pdf.use_font(size=10)
    for line in lines:
        pdf.paragraph(f"• {line}", 5.5)
    pdf.ln(3)


def _hospital_review(pdf: _Report, content: ReportContent) -> None:
    """The hospital's verdict in a framed box under the box's own, as on the study page:
    the verdict (and "arrived late"), when it was given, the note."""
    pdf.ln(1)
    pdf.set_draw_color(29, 79, 145)
    pdf.set_fill_color(234, 241, 251)
    pdf.use_font(bold=True, size=11)
    pdf.multi_cell(0, 6, pdf.safe(clean_text(content.hospital_verdict)), border="LTR",
                   fill=True, padding=(2, 3, 0, 3), new_x=XPos.LMARGIN, new_y=YPos.NEXT,
                   wrapmode=pdf.wrapmode)
    pdf.use_font(size=10)
    rest = [clean_text(line) for line in (content.hospital_when, content.hospital_note)]
    pdf.multi_cell(0, 5.5, "\n".join(pdf.safe(line) for line in rest if line), border="LBR",
                   fill=True, padding=(0, 3, 2, 3), new_x=XPos.LMARGIN, new_y=YPos.NEXT,
                   wrapmode=pdf.wrapmode)
    pdf.set_draw_color(0, 0, 0)
    pdf.ln(2)


def _key_image(pdf: _Report, png: bytes) -> None:
    """The key image at the page width (aspect kept, height capped), centred."""
    try:
        with Image.open(io.BytesIO(png)) as probe:
            width_px, height_px = probe.size
    except Exception:
        width_px = height_px = 0
    if width_px <= 0 or height_px <= 0:
        pdf.use_font(size=9)
        pdf.paragraph(_("(the key image could not be included)"), 5)
        return
    width = pdf.epw
    height = width * height_px / width_px
    if height > IMAGE_MAX_HEIGHT:
        height = IMAGE_MAX_HEIGHT
        width = height * width_px / height_px
    if pdf.get_y() + height > pdf.page_break_trigger:
        pdf.add_page()
    x = pdf.l_margin + (pdf.epw - width) / 2
    try:
        pdf.image(io.BytesIO(png), x=x, y=pdf.get_y(), w=width, h=height)
    except Exception:
        pdf.use_font(size=9)
        pdf.paragraph(_("(the key image could not be included)"), 5)
        return
    pdf.set_y(pdf.get_y() + height + 4)


def _child() -> None:
    """``python -m web.report_pdf``: (content, language) from the parent, the PDF's bytes
    back (``web.report_content.make_pdf``, ``clinibox_common.child_call``)."""
    from clinibox_common.child_call import answer_parent
    from clinibox_common.i18n import use_locale

    def make(arguments: tuple[ReportContent, str]) -> bytes:
        content, language = arguments
        with use_locale(language):
            return report_pdf(content)

    answer_parent(make)


if __name__ == "__main__":
    _child()
