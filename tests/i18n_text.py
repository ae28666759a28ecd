"""What the Chinese pages of the viewer must not show: the catalog's English, or any English
sentence at all outside the data a box shows as recorded.

``visible_text`` keeps what a person reads on a page (text and the labels of controls),
leaving out what the page marks as data shown as recorded: elements with
``translate="no"`` (patient names, ids, model ids, addresses) or ``lang="en"`` (a
decoder's or a PACS's own words). ``english_sentences`` finds runs of English words in
what is left; ``catalog_sentences`` the catalog's English sentences that appear.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from babel.messages.pofile import read_po

from clinibox_common.i18n import TRANSLATIONS_DIR

CATALOG = TRANSLATIONS_DIR / "zh_CN" / "LC_MESSAGES" / "messages.po"
#: words that are names, units or protocols in either language (never a sentence)
ALLOWED_WORDS = frozenset({
    "clinibox", "dicom", "pacs", "ae", "mqtt", "tls", "pdf", "mm", "mb", "kb", "ms", "auc",
    "fp32", "ct", "us", "nm", "mr", "id", "csrf", "english", "x25519", "sha256", "onnxruntime",
    "cpu", "c-echo", "connack", "png", "jpeg", "zip", "onnx", "openvino", "tflite",
})
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "source", "track", "wbr"})
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")
_PLACEHOLDER = re.compile(r"%\([a-z_]+\)[sd]|%%")


class _Visible(HTMLParser):
    """Collects the text a person reads, skipping data marked as shown-as-recorded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.stack: list[bool] = []  # per open element: does it hide its text?

    def _hidden(self) -> bool:
        return any(self.stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        hides = (values.get("translate") == "no" or values.get("lang") == "en"
                 or tag in ("script", "style", "code", "datalist", "svg"))
        if tag in _VOID:
            if not hides and not self._hidden():
                for name in ("alt", "placeholder", "title", "aria-label", "value"):
                    if values.get(name) and (tag != "input" or name != "value"
                                             or values.get("type") in ("submit", "button")):
                        self.parts.append(str(values[name]))
            return
        if not hides and not self._hidden():
            for name in ("title", "aria-label", "alt", "data-confirm"):
                if values.get(name):
                    self.parts.append(str(values[name]))
        self.stack.append(hides)

    def handle_endtag(self, tag: str) -> None:
        if tag not in _VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if not self._hidden():
            self.parts.append(data)


def visible_text(html: str) -> str:
    """The page's readable text (and control labels), data shown as recorded left out."""
    parser = _Visible()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


def _allowed(token: str) -> bool:
    """A name, unit or code: listed, or a DICOM code such as a modality (CT, NM, OT)."""
    return token.lower() in ALLOWED_WORDS or (token.isupper() and len(token) <= 3)


def english_sentences(text: str, longest: int = 1) -> list[str]:
    """Runs of more than ``longest`` English words in a row (names and units allowed)."""
    found, run = [], []
    for token in re.split(r"[\s,.;:()（）、，。；：—–\-/·×%]+", text):
        if _WORD.fullmatch(token) and not _allowed(token):
            run.append(token)
            continue
        if len(run) > longest:
            found.append(" ".join(run))
        run = []
    if len(run) > longest:
        found.append(" ".join(run))
    return found


def catalog_english() -> list[str]:
    """The catalog's English sentences (their fixed parts, three words or more)."""
    with open(CATALOG, "rb") as handle:
        catalog = read_po(handle)
    pieces = set()
    for message in catalog:
        if not message.id:
            continue
        for source in message.id if isinstance(message.id, tuple) else (message.id,):
            for piece in _PLACEHOLDER.split(source):
                piece = " ".join(piece.split())
                if len(_WORD.findall(piece)) >= 3:
                    pieces.add(piece)
    return sorted(pieces, key=len, reverse=True)


def catalog_sentences(text: str) -> list[str]:
    """The catalog's English sentences (fixed parts) that appear in ``text``."""
    return [piece for piece in catalog_english() if piece in text]


def is_chinese(text: str) -> bool:
    """Whether ``text`` holds Chinese characters."""
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


__all__ = ["ALLOWED_WORDS", "CATALOG", "catalog_english", "catalog_sentences",
           "english_sentences", "is_chinese", "visible_text"]
