"""The labels people gave the box's images: a clinician's review and the hospital's verdict,
with who and when; the latest labels an image; the hospital's contradictions of the box are
listed for the clinic's doctor."""

from __future__ import annotations

import sqlite3

from firmware_app.storage import db, hospital_reviews
from firmware_app.storage.case_labels import (
    LabelSource,
    all_labels,
    hospital_disagrees,
    image_labels,
    to_confirm,
)
from firmware_app.storage.study_rollup import update_study

MODEL = "clinibox-demo-lesion@1.0.0"


def _image(conn: sqlite3.Connection, i: int, study: str, probability: float,
           received_at: float = 0.0) -> None:
    conn.execute("INSERT INTO instances(id, local_id, study_instance_uid, source, spool_path,"
                 " size_bytes, status, received_at, updated_at) VALUES (?, ?, ?, 'dicom', '', 1,"
                 " 'processed', ?, 0)", (i, f"l{i}", study, received_at))
    conn.execute("INSERT INTO results(instance_id, model_id, backend, probability, finding,"
                 " alert, findings_json, warnings_json, key_frame, frames_inferred,"
                 " timings_json, created_at) VALUES (?, ?, 'onnxruntime', ?, ?, 0, '[]', '[]',"
                 " 0, 1, '{}', 0)", (i, MODEL, probability, int(probability >= 0.5)))
    update_study(conn, study, "US", {}, 0.0)


def _review(conn, i: int, verdict: str, at: float, account: int | None = None) -> None:
    conn.execute("INSERT INTO feedback(instance_id, finding, verdict, account_id, at)"
                 " VALUES (?, -1, ?, ?, ?)", (i, verdict, account, at))


def _verdict(conn, seq: int, study: str, verdict: str, at: float,
             alert_seq: int | None = None) -> None:
    """The hospital's verdict ``seq`` on the study's alert ``alert_seq`` (by default one
    numbered apart from the verdicts: 1000 + the study's letter)."""
    alert = 1000 + ord(study[-1]) if alert_seq is None else alert_seq
    hospital_reviews.add(conn, seq=seq, study_key=study, study_ref=f"ref-{seq}",
                         alert_seq=alert, verdict=verdict, follow_up_months=None, note="",
                         reviewed_at=at)


def test_labels_come_from_both_sources_with_who_and_when(conn):
    conn.execute("INSERT INTO accounts(id, name, role, password_hash, created_at, changed_at)"
                 " VALUES (7, 'dr-li', 'clinician', 'x', 0, 0)")
    with db.transaction(conn):
        _image(conn, 1, "study-a", 0.9)   # the box said: lesion
        _image(conn, 2, "study-a", 0.6)   # a less suspicious image of the same study
        _image(conn, 3, "study-b", 0.2)   # the box said: none
        _image(conn, 4, "study-c", 0.3)
        _review(conn, 3, "disagree", 100.0, account=7)   # dr-li: there is one
        _review(conn, 4, "unsure", 100.0, account=7)     # labels nothing
        _verdict(conn, 1, "study-a", "no_action", 200.0)  # hospital: nothing there
        _verdict(conn, 2, "study-c", "follow_up", 200.0)  # says nothing of a lesion yet
    labels = all_labels(conn)
    assert [(x.instance_id, x.lesion, x.source, x.given_by, x.given_at) for x in labels] == [
        (3, True, LabelSource.CLINICIAN, "dr-li", 100.0),
        (1, False, LabelSource.HOSPITAL, "hospital", 200.0)]  # the study's top image only
    assert labels[1].box_said is True and labels[1].model_id == MODEL


def test_the_latest_label_wins_and_the_doctors_list_holds_what_no_one_rechecked(conn):
    with db.transaction(conn):
        _image(conn, 1, "study-a", 0.9)
        _image(conn, 2, "study-b", 0.8)
        _verdict(conn, 1, "study-a", "no_action", 200.0)
        _verdict(conn, 2, "study-b", "no_action", 200.0)
        _review(conn, 2, "agree", 300.0)  # the clinic's doctor looked again: it is a lesion
    labels = image_labels(conn)
    assert labels[1].source == LabelSource.HOSPITAL and labels[1].lesion is False
    assert labels[2].source == LabelSource.CLINICIAN and labels[2].lesion is True
    assert [x.instance_id for x in hospital_disagrees(conn)] == [1]
    [row] = to_confirm(conn)
    assert (row.box_said, row.hospital_verdict, row.reviewed_at) == (True, "no_action", 200.0)
    assert row.study_id == conn.execute("SELECT id FROM studies WHERE study_key = 'study-a'"
                                        ).fetchone()[0]


def test_an_amended_verdict_replaces_the_first(conn):
    with db.transaction(conn):
        _image(conn, 1, "study-a", 0.9)
        _verdict(conn, 1, "study-a", "no_action", 200.0)
        _verdict(conn, 2, "study-a", "refer", 250.0)
    assert [(x.lesion, x.given_at) for x in all_labels(conn)] == [(True, 250.0)]
    assert hospital_disagrees(conn) == []


def test_a_verdict_never_labels_an_image_received_after_it(conn):
    """A later image that becomes the study's most suspicious was not the one the hospital
    judged: the verdict labels no image then (rather than the wrong one)."""
    import time

    with db.transaction(conn):
        _image(conn, 1, "study-a", 0.9)
        _verdict(conn, 1, "study-a", "no_action", 200.0)
    assert [x.instance_id for x in all_labels(conn)] == [1]
    with db.transaction(conn):
        _image(conn, 5, "study-a", 0.95, received_at=time.time() + 60)
    assert all_labels(conn) == [] and hospital_disagrees(conn) == []


def test_a_verdict_labels_the_very_image_its_alert_was_about(conn):
    """The box keeps the image each alert was about: the hospital's verdict on that alert
    labels it, even where another image received before the verdict (or after) has become
    the study's most suspicious since; that other image stays unlabelled."""
    from firmware_app.storage import study_alerts

    with db.transaction(conn):
        _image(conn, 1, "study-a", 0.9)
        study_alerts.mark_alerted(conn, "study-a", "clinibox-demo-lesion", 11, instance_id=1)
        _image(conn, 5, "study-a", 0.95)  # received before the verdict, now the study's top
        _verdict(conn, 3, "study-a", "no_action", 200.0, alert_seq=11)
    top = conn.execute("SELECT top_instance_id FROM studies WHERE study_key = 'study-a'"
                       ).fetchone()[0]
    assert top == 5
    assert [(x.instance_id, x.lesion) for x in all_labels(conn)] == [(1, False)]
    [row] = to_confirm(conn)  # the box said lesion on image 1, the hospital no: to confirm
    assert (row.probability, row.box_said, row.hospital_verdict) == (0.9, True, "no_action")
    assert row.study_id == conn.execute("SELECT id FROM studies WHERE study_key = 'study-a'"
                                        ).fetchone()[0]


def test_each_alert_of_a_study_has_its_own_verdict_and_image(conn):
    """A study two models alerted on has two alerts, each about its own image: the verdict on
    each labels that alert's image, the latest verdict on an alert standing (an amendment)."""
    from firmware_app.storage import study_alerts

    with db.transaction(conn):
        _image(conn, 1, "study-a", 0.9)
        _image(conn, 2, "study-a", 0.7)
        study_alerts.mark_alerted(conn, "study-a", "ct-lesion", 21, instance_id=1)
        study_alerts.mark_alerted(conn, "study-a", "us-lesion", 22, instance_id=2)
        _verdict(conn, 5, "study-a", "no_action", 200.0, alert_seq=21)
        _verdict(conn, 6, "study-a", "no_action", 210.0, alert_seq=22)
        _verdict(conn, 7, "study-a", "refer", 220.0, alert_seq=21)  # alert 21's, amended
    assert sorted((x.instance_id, x.lesion, x.given_at) for x in all_labels(conn)) == [
        (1, True, 220.0), (2, False, 210.0)]
    [row] = to_confirm(conn)  # image 2: the box said lesion, the hospital no
    assert (row.probability, row.hospital_verdict, row.reviewed_at) == (0.7, "no_action",
                                                                        210.0)
