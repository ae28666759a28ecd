"""The documentation's screenshots (``docs/images/screens/``, ``make docs-screenshots``): every
one a page shows exists and is made by ``scripts/docs_screenshots.py``, so a page cannot point
to a missing picture nor to one nobody makes again; every one the script makes is shown; an
English page shows the English picture and a Chinese page (``X.zh.md``, ``clinic/zh.md``) the
Chinese one; each is a 1024×768 PNG of a few hundred KB at most, with a caption."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SCREENS = DOCS / "images" / "screens"
#: an image in Markdown whose target is a screenshot, and the line after it (its caption)
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]*images/screens/([^)\s]+))\)\n(.*)")
MAX_BYTES = 300 * 1024


def _script():
    spec = importlib.util.spec_from_file_location("docs_screenshots",
                                                  REPO / "scripts" / "docs_screenshots.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _is_chinese_page(page: Path) -> bool:
    return page.name.endswith(".zh.md") or page.relative_to(DOCS).as_posix() == "clinic/zh.md"


def _shown() -> list[tuple[Path, str, str, str, str]]:
    """Every screenshot a page shows: (page, alt text, target, file name, caption line)."""
    return [(page, *found.groups())
            for page in sorted(DOCS.rglob("*.md"))
            for found in IMAGE.finditer(page.read_text(encoding="utf-8"))]


def test_every_screenshot_shown_exists_and_is_made_by_the_script():
    made = set(_script().files())
    shown = _shown()
    assert len(shown) >= len(made)
    for page, _alt, target, name, _caption in shown:
        assert (page.parent / target).resolve() == SCREENS / name, (page, target)
        assert (SCREENS / name).is_file(), (page, name)
        assert name in made, f"{page}: {name} is not made by scripts/docs_screenshots.py"


def test_every_screenshot_the_script_makes_is_shown_and_committed():
    made = set(_script().files())
    assert made == {name for *_rest, name, _caption in _shown()}
    assert made == {path.name for path in SCREENS.glob("*.png")}


def test_each_page_shows_the_pictures_in_its_language_with_a_caption():
    for page, alt, _target, name, caption in _shown():
        language = "zh" if _is_chinese_page(page) else "en"
        assert name.endswith(f"-{language}.png"), (page, name)
        assert alt.strip(), (page, name)
        assert caption.startswith("*截图：" if language == "zh" else "*Screenshot: "), (page,
                                                                                       caption)
        assert ("体模" if language == "zh" else "phantom") in caption or "console" in name, (
            page, caption)


def test_each_screenshot_is_a_small_1024_by_768_png():
    for path in sorted(SCREENS.glob("*.png")):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (1024, 768), path
        assert path.stat().st_size <= MAX_BYTES, (path, path.stat().st_size)
