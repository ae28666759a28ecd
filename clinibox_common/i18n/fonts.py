"""Where the box finds a font for Chinese text (the PDF report; the self-test reports it).

Debian's ``fonts-noto-cjk`` (Noto Sans CJK SC, an OpenType collection) is
preferred, ``fonts-wqy-zenhei`` (WenQuanYi Zen Hei) is the fallback. A
collection holds several faces; ``CjkFont.index`` names the Simplified Chinese
one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: folders searched for the files of ``CJK_FONT_FILES`` (in order)
CJK_FONT_DIRS: tuple[Path, ...] = (
    Path("/usr/share/fonts/opentype/noto"),
    Path("/usr/share/fonts/noto-cjk"),
    Path("/usr/share/fonts/google-noto-cjk"),
    Path("/usr/share/fonts/truetype/wqy"),
    Path("/usr/share/fonts/wenquanyi/wqy-zenhei"),
    Path("/usr/local/share/fonts"),
)
#: (regular file, bold file or "" when the family has one weight, face index in the collection)
CJK_FONT_FILES: tuple[tuple[str, str, int], ...] = (
    ("NotoSansCJK-Regular.ttc", "NotoSansCJK-Bold.ttc", 2),  # 0 JP, 1 KR, 2 SC, 3 TC, 4 HK
    ("wqy-zenhei.ttc", "", 0),
)
#: what to install when none is found (Debian)
PACKAGE_HINT = "apt-get install fonts-noto-cjk (or fonts-wqy-zenhei)"


@dataclass(frozen=True)
class CjkFont:
    """A Chinese font: its regular and bold files (the same file when it has one weight)."""

    regular: Path
    bold: Path
    index: int


def find_cjk_font(font_dirs: Sequence[Path] | None = None) -> CjkFont | None:
    """The first Chinese font found in ``font_dirs`` (default ``CJK_FONT_DIRS``), or None."""
    for regular_name, bold_name, index in CJK_FONT_FILES:
        for folder in CJK_FONT_DIRS if font_dirs is None else font_dirs:
            regular = Path(folder) / regular_name
            if not regular.is_file():
                continue
            bold = Path(folder) / bold_name if bold_name else regular
            return CjkFont(regular, bold if bold.is_file() else regular, index)
    return None
