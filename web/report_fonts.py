"""The fonts of the PDF report: DejaVu Sans for Latin text, a Chinese font for Chinese.

* A Chinese report (or any report with characters DejaVu lacks, such as a
  Chinese patient name in an English report) uses the Chinese font found by
  ``clinibox_common.i18n.fonts`` (Noto Sans CJK SC, else WenQuanYi Zen Hei):
  as the main font in Chinese, as DejaVu's fallback otherwise.
* Without DejaVu the Chinese font carries everything; without either, the
  core Helvetica (latin-1 only).
* ``font_dirs`` (tests) replaces every folder searched, both families.

Loading the Chinese font costs about a second per report, so it is loaded
only when the report's text needs it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from clinibox_common.i18n.fonts import CjkFont, find_cjk_font

#: Folders searched (in order) for DejaVuSans.ttf and DejaVuSans-Bold.ttf.
FONT_DIRS: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/dejavu"),
    Path("/usr/share/fonts/TTF"),
    Path("/usr/share/fonts/truetype/ttf-dejavu"),
    Path("/usr/local/share/fonts"),
    Path("/usr/local/share/fonts/dejavu"),
)
REGULAR_FONT, BOLD_FONT = "DejaVuSans.ttf", "DejaVuSans-Bold.ttf"
LATIN, CHINESE = "DejaVu", "NotoCJK"


@dataclass(frozen=True)
class FontFace:
    """One family to register: its name, regular and bold files, face index in a collection."""

    family: str
    regular: Path
    bold: Path
    index: int = 0


@dataclass(frozen=True)
class FontPlan:
    """The main family (None: the core Helvetica) and the fallback that fills its gaps."""

    main: FontFace | None
    fallback: FontFace | None = None


def find_fonts(font_dirs: Sequence[Path] | None = None) -> tuple[Path, Path] | None:
    """(regular, bold) DejaVu Sans from the first folder holding both, or None."""
    for folder in FONT_DIRS if font_dirs is None else font_dirs:
        regular, bold = Path(folder) / REGULAR_FONT, Path(folder) / BOLD_FONT
        if regular.is_file() and bold.is_file():
            return regular, bold
    return None


@functools.lru_cache(maxsize=8)
def glyphs(path: str, index: int = 0) -> frozenset[int]:
    """The code points a font file (face ``index`` of a collection) has glyphs for."""
    from fontTools.ttLib import TTFont  # an fpdf2 dependency

    with TTFont(path, lazy=True, fontNumber=index) as font:
        return frozenset(font.getBestCmap() or {})


def _chinese(font: CjkFont) -> FontFace:
    return FontFace(CHINESE, font.regular, font.bold, font.index)


def _needs_more_than(face: FontFace, texts: Iterable[str]) -> bool:
    """Whether some character of ``texts`` has no glyph in ``face`` (read errors: no)."""
    try:
        known = glyphs(str(face.regular), face.index)
    except Exception:
        return False
    return any(ord(ch) not in known for text in texts for ch in text if not ch.isspace())


def plan_fonts(texts: Iterable[str], *, chinese: bool,
               font_dirs: Sequence[Path] | None = None) -> FontPlan:
    """Which fonts a report of ``texts`` uses (``chinese``: the report is in Chinese)."""
    latin_files = find_fonts(font_dirs)
    latin = FontFace(LATIN, *latin_files) if latin_files else None
    needs_chinese = chinese or latin is None or _needs_more_than(latin, list(texts))
    cjk = find_cjk_font(font_dirs) if needs_chinese else None
    if cjk is None:
        return FontPlan(latin)
    if chinese or latin is None:
        return FontPlan(_chinese(cjk))
    return FontPlan(latin, _chinese(cjk))
