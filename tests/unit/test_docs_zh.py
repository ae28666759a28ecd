"""The documentation's Chinese pages (``X.zh.md`` beside ``X.md``, built by mkdocs-static-i18n)
give the English page's commands exactly, and no English sentence around them.

Their fenced ``sh`` blocks and their directives (``<!-- skip: next -->``,
``<!-- docs-run: ... -->``, which ``tests/docs_run.py`` acts on) are the English page's, byte
for byte and in the same order, read by Sybil as the page runner reads them; so the Chinese
page runs as written wherever the English one does (``tests/integration/test_docs_run.py``
runs both). Outside code (blocks, spans, comments, link targets) the prose is Chinese:
``tests/i18n_text.py``'s check finds no run of English words but the names listed here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sybil import Document, Region
from sybil.parsers.markdown import CodeBlockParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer

from tests.i18n_text import english_sentences, is_chinese

DOCS = Path(__file__).resolve().parents[2] / "docs"
CHINESE = sorted(DOCS.rglob("*.zh.md"))
#: names of products, programs and protocols a Chinese page writes as they are
NAMES = frozenset({
    "mosquitto", "openssl", "debian", "systemd", "gunicorn", "postgresql", "sqlite", "scrypt",
    "https", "json", "qr", "noto", "sans", "cjk", "sc", "pip", "python", "pynetdicom", "udev",
    "util-linux", "jetson", "intel", "npu", "gpu", "svg", "puback", "hkdf", "aes-gcm", "ec",
    "rsa", "usb", "fat", "exfat", "ntfs", "iso", "udf", "ext", "lan", "csrf", "secure",
    "httponly", "samesite", "strict", "content-security-policy", "psi", "ca", "cn", "acl",
    "sha-256", "ed25519", "english", "orin", "jetpack", "tensorrt", "cuda",
    "flower", "superlink", "serverapp", "supernode",
})


def _sh_and_directives(path: Path) -> list[str]:
    """The page's ``sh`` blocks and docs-run/skip directives, in order, each as its source."""
    lexer = DirectiveInHTMLCommentLexer(directive="docs-run|skip", arguments=".+?")

    def directives(document: Document):
        for lexed in lexer(document):
            yield Region(lexed.start, lexed.end, lexed.lexemes["arguments"])

    document = Document.parse(str(path), CodeBlockParser(language="sh"), directives)
    return [document.text[example.region.start:example.region.end] for example in document]


def _prose(text: str) -> str:
    """What a reader reads as sentences: code blocks, code spans, HTML comments, link targets
    and headings' ids (``{ #the-acl }``: the English page's, so its links hold) left out."""
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"\{ *#[\w-]+ *\}", " ", text)
    text = re.sub(r"^( *)(```|~~~).*?^\1\2", " ", text, flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", " ", text)
    text = re.sub(r"\]\([^)\s]*\)", "] ", text)
    return text


def _english(text: str) -> list[str]:
    """Runs of English words in the prose, names (:data:`NAMES`) aside."""
    words = re.sub(r"[A-Za-z][A-Za-z0-9'’-]*",
                   lambda m: " " if m.group(0).lower() in NAMES else m.group(0), text)
    return english_sentences(words)


def test_there_are_chinese_pages_and_each_has_its_english_page():
    assert len(CHINESE) >= 4, CHINESE
    for page in CHINESE:
        assert page.with_name(page.name.replace(".zh.md", ".md")).exists(), page


@pytest.mark.parametrize("page", CHINESE, ids=lambda p: str(p.relative_to(DOCS)))
def test_the_chinese_page_gives_the_english_pages_commands_byte_for_byte(page):
    english = page.with_name(page.name.replace(".zh.md", ".md"))
    theirs, ours = _sh_and_directives(english), _sh_and_directives(page)
    assert any(block.lstrip().startswith("```sh") for block in theirs), english
    assert ours == theirs


@pytest.mark.parametrize("page", CHINESE, ids=lambda p: str(p.relative_to(DOCS)))
def test_the_chinese_page_has_no_english_sentence_outside_code(page):
    prose = _prose(page.read_text(encoding="utf-8"))
    assert is_chinese(prose)
    assert _english(prose) == []


def test_the_checks_would_catch_a_changed_command_and_an_english_sentence(tmp_path):
    english = (DOCS / "hospital" / "broker.md").read_text(encoding="utf-8")
    changed = tmp_path / "broker.zh.md"
    changed.write_text(english.replace("systemctl restart mosquitto",
                                       "systemctl start mosquitto"), encoding="utf-8")
    assert _sh_and_directives(changed) != _sh_and_directives(DOCS / "hospital" / "broker.md")
    dropped = tmp_path / "enrolment.zh.md"
    dropped.write_text((DOCS / "hospital" / "enrolment.md").read_text(encoding="utf-8")
                       .replace("<!-- skip: next -->\n", "", 1), encoding="utf-8")
    assert (_sh_and_directives(dropped)
            != _sh_and_directives(DOCS / "hospital" / "enrolment.md"))
    assert _english(_prose("证书由 `openssl` 生成。Keep persistence true.")) == [
        "Keep persistence true"]
    assert _english(_prose("用 Debian 的 Mosquitto 软件包，见 [代理](broker.md)。")) == []
