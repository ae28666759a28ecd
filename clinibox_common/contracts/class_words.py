"""The words of the classes the box's models name (manifest labels), one table for the box's
viewer (``firmware_app/words/labels.py``) and the hospital's console (``central/labels.py``).

A class is stored and sent as the model's own word (``lesion``, ``nodule`` …, never
translated); the pages show it in the reader's language. A class not in the table is
shown as named.
"""

from __future__ import annotations

from clinibox_common.i18n import N_, gettext

#: classes the box's models name (English, for the catalog)
CLASS_WORDS: dict[str, str] = {
    "lesion": N_("lesion"), "finding": N_("finding"), "benign": N_("benign"),
    "malignant": N_("malignant"), "nodule": N_("nodule"), "mass": N_("mass"),
    "normal": N_("normal"), "suspicious": N_("suspicious"), "cyst": N_("cyst"),
    "background": N_("background")}


def class_words(word: str | None) -> str:
    """A model's class in the reader's language (the word itself, ``_`` as spaces, when
    unknown; empty for none)."""
    if not word:
        return ""
    english = CLASS_WORDS.get(word)
    return gettext(english) if english else word.replace("_", " ")
