"""The Simplified Chinese catalog is complete: every marked sentence has a translation.

Babel extracts the marked sentences from the code and templates exactly as
``make translations`` does (``babel.cfg``) into a temporary ``.pot``; every one
must have a non-empty, non-fuzzy translation in ``zh_CN/LC_MESSAGES/messages.po``
with the same placeholders, the ``.po`` holds nothing else, and the compiled
``.mo`` the box reads says the same. A sentence added in English without its
translation fails here; one left unmarked fails the page tests
(``test_web_i18n.py``).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po, write_po
from babel.support import Translations

from clinibox_common.i18n import TRANSLATIONS_DIR

REPO = Path(__file__).resolve().parents[3]
PO = TRANSLATIONS_DIR / "zh_CN" / "LC_MESSAGES" / "messages.po"
MO = PO.with_suffix(".mo")
_PLACEHOLDER = re.compile(r"%\(([a-z_]+)\)[sd]")


def extracted_pot(target: Path) -> Catalog:
    """The marked sentences of the code, extracted as ``make translations`` does, written to
    ``target`` and read back."""
    with open(REPO / "babel.cfg", encoding="utf-8") as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    tops = {pattern.split("/", 1)[0] for pattern, _method in method_map}
    catalog = Catalog(project="clinibox")

    def only_mapped(dirpath: str) -> bool:  # walk only the folders babel.cfg names
        relative = Path(dirpath).relative_to(REPO).parts
        return not relative or (relative[0] in tops and not relative[-1].startswith((".", "_")))

    for filename, lineno, message, comments, context in extract_from_dir(
            REPO, method_map, options_map, keywords=DEFAULT_KEYWORDS,
            comment_tags=("TRANSLATORS:",), strip_comment_tags=True,
            directory_filter=only_mapped):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments,
                    context=context)
    with open(target, "wb") as handle:
        write_po(handle, catalog)
    with open(target, "rb") as handle:
        return read_po(handle)


@pytest.fixture(scope="module")
def pot(tmp_path_factory) -> Catalog:
    return extracted_pot(tmp_path_factory.mktemp("pot") / "messages.pot")


@pytest.fixture(scope="module")
def po() -> Catalog:
    with open(PO, "rb") as handle:
        return read_po(handle, locale="zh_CN")


def _ids(catalog: Catalog) -> set:
    return {m.id for m in catalog if m.id}


def test_the_extraction_finds_the_sentences_of_every_part(pot):
    files = {location[0].split("/", 1)[0] + "/" + Path(location[0]).name
             for message in pot for location in message.locations}
    for expected in ("web/report_pdf.py", "firmware_app/wording.py", "web/study.html",
                     "clinibox_common/settings_loader.py", "central_console/views_alerts.py",
                     "firmware_app/selftest.py", "firmware_app/users.py",
                     "firmware_app/commands.py", "web/base.html"):
        assert expected in files, expected
    assert len(_ids(pot)) > 400


def test_every_sentence_has_a_chinese_translation(pot, po):
    missing, fuzzy = [], []
    for message in pot:
        if not message.id:
            continue
        translated = po.get(message.id)
        strings = translated.string if translated is not None else ""
        strings = strings if isinstance(strings, tuple) else (strings,)
        if translated is None or not all(s.strip() for s in strings):
            missing.append(message.id)
        elif translated.fuzzy:
            fuzzy.append(message.id)
    assert missing == [], f"untranslated (run make translations, then translate): {missing}"
    assert fuzzy == [], f"fuzzy (check the translation, then remove the mark): {fuzzy}"
    assert not po.fuzzy, "the catalog's header is marked fuzzy"


def test_the_catalog_holds_only_the_codes_sentences(pot, po):
    assert _ids(po) - _ids(pot) == set(), "stale entries: run make translations"


def test_translations_keep_their_placeholders(po):
    assert [(m.id, errors) for m, errors in po.check()] == []
    for message in po:
        if not message.id:
            continue
        sources = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set().union(*(set(_PLACEHOLDER.findall(s)) for s in sources))
        for string in strings:
            assert set(_PLACEHOLDER.findall(string)) <= wanted, message.id
            if message.pluralizable:
                continue
            assert set(_PLACEHOLDER.findall(string)) == wanted, message.id


def test_the_compiled_catalog_is_the_po(po):
    with open(MO, "rb") as handle:
        compiled = Translations(handle)
    for message in po:
        if not message.id:
            continue
        if isinstance(message.id, tuple):
            assert compiled.ngettext(*message.id, 2) == message.string[0], message.id
        else:
            assert compiled.gettext(message.id) == message.string, message.id


def test_the_catalog_says_plural_forms_for_chinese(po):
    assert po.num_plurals == 1 and po.plural_expr == "0"
    header = io.BytesIO()
    write_po(header, po)
    assert "Language: zh_CN" in header.getvalue().decode("utf-8")
