"""The box's states and kinds (``contracts/statuses.py``): one enumeration each, the words the
database has always stored, a label for every member where it is shown, and the schema's
CHECK constraints allowing exactly the members' words."""

from __future__ import annotations

import json
import re
import sqlite3
from enum import Enum
from pathlib import Path

import pytest

from clinibox_common.contracts import egress, statuses
from clinibox_common.contracts.statuses import (
    FINISHED_STATUSES,
    HELD_STATUSES,
    WAITING_STATUSES,
    AssessmentKind,
    DicomOutboxState,
    ImportOutcome,
    InstanceStatus,
    LiveHint,
    LiveKept,
    LiveState,
    OutboxState,
    PriorLookupState,
    RecordState,
    ReportKind,
    Role,
    Verdict,
)
from clinibox_common.i18n import use_locale
from engine.inference.assessment import JUDGED, UNJUDGED
from firmware_app.storage import db
from firmware_app.storage.queue import JobQueue
from firmware_app.words import labels

ENUMS = (InstanceStatus, AssessmentKind, OutboxState, DicomOutboxState, Verdict, Role,
         ImportOutcome, RecordState, ReportKind, PriorLookupState)
#: the words stored before the enumerations came: they must never change (no migration)
STORED = {
    InstanceStatus: {"queued", "processing", "processed", "quarantined", "failed",
                     "not_analysed"},
    AssessmentKind: {"finding", "no_finding", "not_assessable", "outside_validated_range"},
    OutboxState: {"pending", "sent", "dropped", "superseded", "will"},
    DicomOutboxState: {"pending", "sent", "superseded", "held"},
    RecordState: {"pending", "sent", "superseded", "held"},
    ReportKind: {"result", "verdict"},
    PriorLookupState: {"asking", "fetched", "none", "failed"},
    Verdict: {"agree", "disagree", "unsure"},
    Role: {"clinician", "technician"},
    ImportOutcome: {"accepted", "duplicate", "quarantined", "refused", "dicomdir index",
                    "skipped"},
}
#: the columns the schema restricts with ``CHECK (column IN (...))``, and their enumeration
CHECKED = {("feedback", "verdict"): Verdict, ("accounts", "role"): Role,
           ("outbox", "state"): OutboxState, ("dicom_outbox", "state"): DicomOutboxState,
           ("records_outbox", "state"): RecordState, ("records_outbox", "report_kind"): ReportKind,
           ("prior_lookups", "state"): PriorLookupState}
#: CHECKs of another table of words: the DICOM document kinds (``contracts/dicom_outputs.py``)
NOT_STATES = {("dicom_outbox", "kind")}
_CHECK = re.compile(r"^\s*(\w+)\s+TEXT\b[^\n]*?CHECK\s*\(\s*(\w+)\s+IN\s*\(([^)]*)\)\s*\)",
                    re.MULTILINE)


def _fresh_database(tmp_path: Path) -> sqlite3.Connection:
    return db.open_database(tmp_path / "box" / "box.db")


def _checks(conn: sqlite3.Connection) -> dict[tuple[str, str], set[str]]:
    """Every ``CHECK (column IN ('a', 'b'))`` of the database's tables, read back from
    sqlite_master: (table, column) → the words it allows."""
    found: dict[tuple[str, str], set[str]] = {}
    for table, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"
                                   " AND sql IS NOT NULL"):
        for column, checked, words in _CHECK.findall(sql):
            assert column == checked, (table, column, checked)
            found[(table, column)] = {w.strip().strip("'") for w in words.split(",")}
    return found


@pytest.mark.parametrize("enum", ENUMS, ids=lambda e: e.__name__)
def test_each_enumeration_has_exactly_the_words_stored_before_it(enum: type[Enum]):
    assert {member.value for member in enum} == STORED[enum]
    for member in enum:  # a member goes wherever its word went
        assert member == member.value and str(member) == member.value
        assert f"{member}" == member.value and format(member, "") == member.value
        assert json.dumps({member: [member]}) == json.dumps({member.value: [member.value]})
        assert enum(member.value) is member and hash(member) == hash(member.value)


@pytest.mark.parametrize("enum", ENUMS, ids=lambda e: e.__name__)
def test_each_member_says_what_it_means(enum: type[Enum]):
    source = Path(statuses.__file__).read_text(encoding="utf-8")
    body = source[source.index(f"class {enum.__name__}("):]
    body = body[:body.index("\n\n\n")] if "\n\n\n" in body else body
    for member in enum:
        meaning = re.search(rf'^\s+{member.name} = "[^"]*"\n\s+"""(.+?)"""', body, re.MULTILINE)
        assert meaning and len(meaning.group(1)) > 10, f"{enum.__name__}.{member.name}"


def test_sqlite_stores_a_member_as_its_word(tmp_path):
    conn = _fresh_database(tmp_path)
    queue = JobQueue(conn)
    instance_id = queue.enqueue(local_id="a", spool_path=tmp_path / "a", size_bytes=1,
                                source="test", origin=None, sop_instance_uid=None)
    queue.set_status(instance_id, InstanceStatus.NOT_ANALYSED, None)
    row = conn.execute("SELECT status, typeof(status) FROM instances").fetchone()
    assert tuple(row) == ("not_analysed", "text")
    assert queue.counts() == {**dict.fromkeys(STORED[InstanceStatus], 0), "not_analysed": 1}
    assert all(type(key) is str for key in queue.counts())  # JSON and reports: plain words


def test_the_schema_checks_allow_exactly_the_members_words(tmp_path):
    checks = _checks(_fresh_database(tmp_path))
    assert set(checks) - NOT_STATES == set(CHECKED), "a CHECK with no enumeration here"
    for (table, column), enum in CHECKED.items():
        assert checks[(table, column)] == {member.value for member in enum}, (table, column)


def test_a_word_outside_a_checked_enumeration_is_refused(tmp_path):
    conn = _fresh_database(tmp_path)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO outbox(kind, priority, payload, state, created_at)"
                     " VALUES ('status', 2, '{}', ?, 0)", ("queued",))
    conn.execute("INSERT INTO outbox(kind, priority, payload, state, created_at)"
                 " VALUES ('status', 2, '{}', ?, 0)", (OutboxState.WILL,))
    assert conn.execute("SELECT state FROM outbox").fetchone()[0] == "will"


def test_the_stored_default_assessment_is_a_member(tmp_path):
    conn = _fresh_database(tmp_path)
    default = next(row["dflt_value"] for row in conn.execute("PRAGMA table_info(results)")
                   if row["name"] == "assessment")
    assert AssessmentKind(default.strip("'")) is AssessmentKind.NO_FINDING


def test_storage_statements_take_states_as_parameters():
    """Outside the schema and its migrations, no statement of storage/ spells a state's word:
    each is an SQL parameter (or built from the enumeration)."""
    words = sorted({member.value for enum in ENUMS if enum is not ImportOutcome
                    for member in enum}, key=len, reverse=True)
    literal = re.compile("'(" + "|".join(map(re.escape, words)) + ")'")
    storage = Path(db.__file__).parent
    spelled = [f"{path.name}:{number}: {line.strip()}"
               for path in sorted(storage.glob("*.py")) if path.name not in {"db.py", "schema.py"}
               for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
               if literal.search(line)]
    assert spelled == []


def test_groups_of_instance_statuses_split_them():
    assert set(WAITING_STATUSES) | set(FINISHED_STATUSES) == set(InstanceStatus)
    assert not set(WAITING_STATUSES) & set(FINISHED_STATUSES)
    assert set(HELD_STATUSES) < set(FINISHED_STATUSES)
    assert set(JUDGED) | set(UNJUDGED) == set(AssessmentKind)
    assert not set(JUDGED) & set(UNJUDGED)


def test_the_egress_schema_counts_the_same_words():
    words = tuple(member.value for member in AssessmentKind)
    assert words == egress.ASSESSMENTS
    feedback = egress.SCHEMAS["summary"].fields["feedback"].fields
    assert set(feedback) == {verdict.value for verdict in Verdict}


#: where each enumeration is shown to a person: (table of English labels, label function)
SHOWN = {
    "viewer statuses": (InstanceStatus, labels.STATUSES, labels.status),
    "assessments": (AssessmentKind, labels.ASSESSMENTS, labels.assessment),
    "verdicts": (Verdict, labels.VERDICTS, labels.verdict),
    "roles": (Role, labels.ROLES, labels.role),
    "live states": (LiveState, labels.LIVE_STATE, labels.live_state),
    # a frame's hint: "none" says nothing on the page (the table's word is for the record)
    "live hints": (LiveHint, labels.LIVE_HINT, None),
    "live kept": (LiveKept, labels.LIVE_KEPT, labels.live_kept),
}


@pytest.mark.parametrize("where", sorted(SHOWN))
def test_every_member_has_a_label_where_it_is_shown(where):
    enum, table, label = SHOWN[where]
    assert set(enum) <= set(table), f"{where}: no label for {set(enum) - set(table)}"
    for member in enum:
        assert table[member] == table[member.value]  # found by the stored word too
        if label is None:
            continue
        assert label(member) == label(member.value) == table[member]
        with use_locale("zh-CN"):
            translated = label(member.value)
        assert translated != table[member] and not re.search("[A-Za-z]", translated), (
            where, member, translated)
