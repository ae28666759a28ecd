"""reference/statuses.md, reasons.md and dicom-outputs.md: the words a program reads back."""

from __future__ import annotations

import enum
import inspect
from collections.abc import Iterable
from typing import Any

from docs_pages.code_docs import attribute_docs, bullet_meanings, group_comments
from docs_pages.markdown import (
    GENERATED_NOTE,
    code,
    first_line,
    plain,
    rst_to_md,
    sentence,
    table,
)


def in_languages(english: str) -> tuple[str, str]:
    """A catalog message in English and in Chinese (the zh_CN catalog; the English where
    it has no translation yet)."""
    from clinibox_common.i18n import CHINESE, gettext, use_locale

    with use_locale(CHINESE):
        return english, gettext(english)


def label_table(enum_cls: type[enum.Enum]) -> tuple[str, dict[Any, str]] | None:
    """The table of ``words/labels.py`` keyed by ``enum_cls``'s members (its name and the
    table), or None where the viewer shows no label for them."""
    from firmware_app.words import labels

    for name, value in vars(labels).items():
        if isinstance(value, dict) and any(isinstance(key, enum_cls) for key in value):
            return name, value
    return None


def enum_section(enum_cls: type[enum.Enum], heading: str) -> list[str]:
    """One enumeration: each member's value, name, meaning (its docstring) and, where the
    viewer shows it, its label in English and Chinese."""
    docs = attribute_docs(enum_cls)
    labelled = label_table(enum_cls)
    parts = [heading, "", first_line(enum_cls.__doc__), ""]
    if labelled is None:
        rows = [[code(m.value), code(m.name), docs.get(m.name, "")] for m in enum_cls]
        return [*parts, table(("value", "name", "meaning"), rows), ""]
    name, labels = labelled
    rows = [[code(m.value), code(m.name), docs.get(m.name, ""),
             *(in_languages(labels[m]) if m in labels else ("", ""))] for m in enum_cls]
    parts += [table(("value", "name", "meaning", "label (English)", "label (中文)"), rows), "",
              f"Labels: `firmware_app/words/labels.py` {code(name)}."]
    others = [key for key in labels if not isinstance(key, enum_cls)]
    if others:
        parts[-1] += " The same table labels words that are not members: " + "; ".join(
            f"{code(key)} ({' / '.join(in_languages(labels[key]))})" for key in others) + "."
    return [*parts, ""]


def words_section(heading: str, intro: str, words: Iterable[str],
                  meanings: dict[str, str], header: tuple[str, str] = ("word", "meaning")
                  ) -> list[str]:
    """A section listing fixed words (from the code) with their meanings."""
    return [heading, "", intro, "",
            table(header, [[code(word), meanings.get(word, "")] for word in words]), ""]


def statuses_page() -> str:
    """reference/statuses.md: every status enum and its values, what each means and how a
    person sees it; the worklist's levels; the hospital's health words and audit verdicts."""
    from central import audit_witness, report
    from clinibox_common.contracts import statuses
    from firmware_app.storage import studies
    from firmware_app.words import labels

    parts = ["# Statuses", "", GENERATED_NOTE, "", rst_to_md(statuses.__doc__), ""]
    for name, value in vars(statuses).items():
        if (inspect.isclass(value) and issubclass(value, enum.Enum) and len(value)
                and value.__module__ == statuses.__name__):
            parts += enum_section(value, f"## `{name}`")
    label_docs = attribute_docs(labels)
    parts += ["## Worklist levels", "",
              sentence(label_docs.get("LEVELS", "")
                       + " (`firmware_app/words/labels.py` `LEVELS`)") + " "
              + sentence(first_line(studies.study_level.__doc__)), "",
              table(("level", "label (English)", "label (中文)"),
                    [[code(word), *in_languages(english)]
                     for word, english in labels.LEVELS.items()]), ""]
    health = bullet_meanings(report.__doc__)
    parts += words_section(
        "## The hospital's health words", "`clinibox central report` gives each device one "
        "health word, from worst to best (`central/report.py` `HEALTH_ORDER`).",
        report.HEALTH_ORDER, health, ("health", "meaning"))
    verdicts = bullet_meanings(audit_witness.__doc__)
    alarm_docs = attribute_docs(audit_witness)
    parts += words_section(
        "## Audit-head verdicts", first_line(audit_witness.__doc__) + " Each head a box's "
        "heartbeat reports gets one verdict against the head witnessed before it "
        "(`central/audit_witness.py` `VERDICTS`); "
        + alarm_docs.get("ALARMS", "").rstrip(".").lower() + ": "
        + ", ".join(code(word) for word in audit_witness.ALARMS) + ".",
        audit_witness.VERDICTS, verdicts, ("verdict", "meaning"))
    return "\n".join(parts)


def reasons_page() -> str:
    """reference/reasons.md: every reason code, its group and its wording in English and
    Chinese; the C-STORE refusal codes and the event log's codes, each with its meaning."""
    from clinibox_common.contracts import reasons

    templates = dict(reasons.reason_table())
    groups = group_comments(reasons.ReasonCode)
    verbatim = {str(c.value) for c in reasons.VERBATIM}
    rows = []
    for member in reasons.ReasonCode:
        english = templates[member.value]
        chinese = english if member.value in verbatim else in_languages(english)[1]
        rows.append([code(member.value), groups.get(member.name, ""), english, chinese])
    docs = attribute_docs(reasons)
    parts = ["# Reason codes", "", GENERATED_NOTE, "", rst_to_md(reasons.__doc__), "",
             sentence(docs.get("TEMPLATES", "")) + " The Chinese wording is the zh_CN "
             "catalog's.", "",
             table(("code", "group", "English wording", "Chinese wording (中文)"), rows), ""]
    if verbatim:
        parts += [sentence(docs.get("VERBATIM", "")) + " These are "
                  + ", ".join(code(c) for c in sorted(verbatim)) + ".", ""]
    return "\n".join([*parts, *refusals_section(), *event_codes_section()])


def refusals_section() -> list[str]:
    """The C-STORE refusal codes (``firmware_app/ingest/store_checks.py`` ``Refusal``): code,
    the DICOM status answered, meaning."""
    from firmware_app.ingest import store_checks

    docs = attribute_docs(store_checks.Refusal)
    constants = attribute_docs(store_checks)
    status_names = {value: name for name, value in vars(store_checks).items()
                    if name.isupper() and isinstance(value, int) and name in constants
                    and value >= 0xA000}
    rows = []
    for member in store_checks.Refusal:
        status = status_names.get(member.status, "").lower().replace("_", " ")
        rows.append([code(member.value), f"0x{member.status:04X} ({status})",
                     docs.get(member.name, "")])
    return ["## C-STORE refusals", "",
            sentence(first_line(store_checks.Refusal.__doc__)) + " "
            + first_line(store_checks.__doc__), "",
            table(("code", "C-STORE status", "meaning"), rows), ""]


def event_codes_section() -> list[str]:
    """The codes of the box's event log (``events.code``), from the modules that count them
    (``firmware_app/ingest/landing.py``: every ``*_EVENT`` word)."""
    from firmware_app.ingest import landing
    from firmware_app.storage import db

    docs = attribute_docs(landing)
    rows = [[code(value), sentence(docs.get(name, ""))]
            for name, value in vars(landing).items()
            if name.endswith("_EVENT") and isinstance(value, str)]
    writes = first_line(db.record_event.__doc__)
    return ["## Event codes", "",
            "The box's event log, as `record_event` (`firmware_app/storage/db.py`) writes "
            "it: " + writes[:1].lower() + writes[1:], "", table(("code", "meaning"), rows), ""]


def dicom_outputs_page() -> str:
    """reference/dicom-outputs.md: the one table of DICOM outputs the box sends."""
    from clinibox_common.contracts import dicom_outputs as outputs

    rows = outputs.output_table()
    columns = ("key", "label", "iod", "sop_class_uids", "writer", "needs_text", "default",
               "order")
    return "\n".join(["# DICOM outputs", "", GENERATED_NOTE, "", rst_to_md(outputs.__doc__), "",
                      table([c.replace("needs_text", "needs") for c in columns],
                            [["; ".join(row[c]) if c == "needs_text" else plain(row[c])
                              for c in columns] for row in rows]), ""])
