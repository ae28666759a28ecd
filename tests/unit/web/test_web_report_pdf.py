"""web.report_pdf: the printable report, read back with pypdf, with both font paths."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from web import report_pdf as module
from web.report_pdf import FONT_DIRS, ReportContent, clean_text, find_fonts, report_pdf

VERDICT = "Suspicious area found — a doctor should review this study soon"
NOTICE = "This result assists a doctor and does not replace one."


def unicode_font_dirs() -> tuple[Path, ...]:
    """The usual system folders, plus matplotlib's bundled DejaVu when it is installed."""
    dirs = list(FONT_DIRS)
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf")
    assert find_fonts(dirs) is not None, "DejaVu Sans is needed (Debian: fonts-dejavu-core)"
    return tuple(dirs)


def key_png(width: int = 300, height: int = 200) -> bytes:
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)
    rgb[40:80, 50:120] = (255, 64, 64)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def content(**changes) -> ReportContent:
    values = dict(
        patient_name="DOE^JANE", patient_id="PID-4711", study_date="3 February 2026",
        study_description="CT CHEST", modality="CT", received="3 February 2026, 10:02",
        verdict=VERDICT,
        findings=["One suspicious area (87 %) in the upper left of the image."],
        warnings=["The image is smaller than usual; the result may be less reliable."],
        model_id="clinibox-demo-lesion 1.2.0",
        notice=NOTICE, generated="3 February 2026, 10:05", key_image_png=key_png(),
    )
    values.update(changes)
    return ReportContent(**values)


def read(pdf: bytes) -> tuple[PdfReader, str]:
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    reader = PdfReader(io.BytesIO(pdf))
    text = "\n".join(page.extract_text() for page in reader.pages)
    return reader, " ".join(text.split())


def image_count(reader: PdfReader) -> int:
    return sum(len(page.images) for page in reader.pages)


def font_names(reader: PdfReader) -> str:
    fonts = reader.pages[0]["/Resources"]["/Font"].get_object()
    return " ".join(str(font.get_object()["/BaseFont"]) for font in fonts.values())


def test_unicode_report_holds_the_text_and_the_key_image() -> None:
    pdf = report_pdf(content(patient_name="Zoë Müller-Łukasz"), font_dirs=unicode_font_dirs())
    reader, text = read(pdf)
    page = reader.pages[0]
    assert (float(page.mediabox.width), float(page.mediabox.height)) == pytest.approx(
        (595.28, 841.89), abs=0.5)  # A4 portrait
    assert "onnxruntime" not in text  # the runtime is the technician's, on the device page
    for expected in ("clinibox study report", "Zoë Müller-Łukasz", "PID-4711", "CT CHEST",
                     VERDICT, "One suspicious area (87 %)", "Image quality", "smaller than usual",
                     "clinibox-demo-lesion 1.2.0", NOTICE,
                     "3 February 2026, 10:05", "page 1 of 1"):
        assert expected in text, expected
    assert image_count(reader) == 1
    embedded = reader.pages[0].images[0].image
    assert embedded.size == (300, 200)
    assert "DejaVuSans" in font_names(reader) and "Helvetica" not in font_names(reader)


def test_core_font_fallback_survives_non_latin_text() -> None:
    pdf = report_pdf(content(patient_name="Zoë 山田"), font_dirs=())
    reader, text = read(pdf)
    assert "Zoë ??" in text  # latin-1 kept, the rest replaced
    assert "Suspicious area found - a doctor should review this study soon" in text
    assert NOTICE in text and "clinibox-demo-lesion 1.2.0" in text
    assert image_count(reader) == 1
    assert "Helvetica" in font_names(reader) and "DejaVu" not in font_names(reader)


def test_missing_glyphs_become_question_marks_not_gaps() -> None:
    _, text = read(report_pdf(content(patient_name="Zoë 山田"), font_dirs=unicode_font_dirs()))
    assert "Zoë ??" in text


def test_font_lookup_is_injectable(tmp_path: Path) -> None:
    assert find_fonts([tmp_path]) is None
    (tmp_path / "DejaVuSans.ttf").write_bytes(b"")
    assert find_fonts([tmp_path]) is None  # bold missing
    (tmp_path / "DejaVuSans-Bold.ttf").write_bytes(b"")
    assert find_fonts([tmp_path / "nowhere", tmp_path]) == (
        tmp_path / "DejaVuSans.ttf", tmp_path / "DejaVuSans-Bold.ttf")
    assert isinstance(module.FONT_DIRS, tuple) and module.FONT_DIRS
    # broken font files found there: the report still comes out, in the core font
    reader, text = read(report_pdf(content(), font_dirs=[tmp_path]))
    assert "Helvetica" in font_names(reader) and NOTICE in text


@pytest.mark.parametrize("fonts", ["unicode", "core"])
def test_hostile_patient_strings_cannot_break_the_pdf(fonts: str) -> None:
    dirs = unicode_font_dirs() if fonts == "unicode" else ()
    name = "EVIL\n\r\x00\x1b\u202eNAME\ttab " + "A" * 400  # controls, bidi override, no spaces
    hostile = content(patient_name=name, patient_id="(\\) >> /JS <<" * 20,
                      study_description="x " * 2000, findings=["line one\nline two", ""] * 30,
                      warnings=["\x07bell"], key_image_png=b"not a png")
    reader, text = read(report_pdf(hostile, font_dirs=dirs))
    assert "EVIL NAME tab AAAA" in text  # controls gone, blanks folded
    assert "\x00" not in text and "\u202e" not in text and "\x1b" not in text
    assert "(\\) >> /JS <<" in text
    assert "line one line two" in text
    assert "could not be included" in text and image_count(reader) == 0
    assert len(reader.pages) >= 2 and f"page 2 of {len(reader.pages)}" in text


def test_tall_key_images_keep_their_aspect_and_fit_the_page() -> None:
    reader, _ = read(report_pdf(content(key_image_png=key_png(100, 800)), font_dirs=()))
    assert image_count(reader) == 1
    assert reader.pages[0].images[0].image.size == (100, 800)
    assert len(reader.pages) == 1


def test_report_without_key_image_or_warnings() -> None:
    reader, text = read(report_pdf(content(key_image_png=None, warnings=[], findings=[]),
                                   font_dirs=()))
    assert image_count(reader) == 0
    assert "Image quality" not in text and "None recorded." in text


def test_clean_text() -> None:
    assert clean_text("a\nb\r\n\tc\x00d\u200be  f") == "a b cde f"
    assert clean_text(None) == ""
    assert clean_text("x" * 50, limit=10) == "x" * 9 + "…"


@pytest.mark.slow
def test_the_viewer_gets_its_pdf_from_a_child_and_never_holds_the_writer(tmp_path):
    """make_pdf in a fresh interpreter standing in for a viewer worker: the same PDF
    (Chinese labels too), while fpdf and fontTools stay out of the calling process."""
    import pickle
    import subprocess
    import sys

    chinese = content(patient_name="王小明", verdict="发现可疑区域")
    (tmp_path / "content.pickle").write_bytes(pickle.dumps(chinese))
    script = (
        "import pickle, sys\n"
        "from web.report_content import make_pdf\n"
        f"content = pickle.loads(open({str(tmp_path / 'content.pickle')!r}, 'rb').read())\n"
        "pdf = make_pdf(content, 'zh_CN')\n"
        "sys.stdout.buffer.write(pdf)\n"
        "assert not {'fpdf', 'fontTools'} & set(sys.modules), sorted(sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120,
                          cwd=Path(__file__).parents[3])
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    _reader, text = read(done.stdout)
    text = text.replace("\x00", "")  # pypdf reads the CJK font's two-byte codes so
    assert "王小明" in text and "发现可疑区域" in text
    assert "患者" in text  # the labels are in Chinese: the child used the language it was given


def test_a_report_that_cannot_be_made_is_a_plain_error(monkeypatch):
    import subprocess

    from web import report_content

    def crashed(*args, **kwargs):
        return subprocess.CompletedProcess(args, -11, b"", b"Segmentation fault")

    monkeypatch.setattr(report_content.subprocess, "run", crashed)
    with pytest.raises(report_content.ReportError, match="status -11"):
        report_content.make_pdf(content(), "en")


def test_report_children_run_one_at_a_time(monkeypatch):
    """Eight report requests at once in one viewer process never hold two children."""
    import subprocess
    import threading
    import time

    from web import report_content

    running, most = [0], [0]
    lock = threading.Lock()

    def child(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return subprocess.CompletedProcess(args, 0, b"%PDF-1.4 stand-in", b"")

    monkeypatch.setattr(report_content.subprocess, "run", child)
    threads = [threading.Thread(target=report_content.make_pdf, args=(content(), "en"))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most[0] == 1
