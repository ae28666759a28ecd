"""The worklist's order (``storage/studies.worklist``): alerts, findings, a doctor must read,
no finding; within a band the most suspicious first, as the page shows it (a whole percent),
and of studies shown as equally suspicious the newest first: a study just made (a live
session's) is not left below six others the page shows the same."""

from __future__ import annotations

import contextlib

from clinibox_common.i18n import formats
from engine.inference.assessment import BAND_ALERT, BAND_FINDING, BAND_NO_FINDING
from firmware_app.storage import db
from firmware_app.storage import studies as queries


def _study(conn, key: str, band: int, suspicion: float | None, received_at: float) -> None:
    conn.execute("INSERT INTO studies(study_key, modality, instances, max_probability, findings,"
                 " alert, warnings, received_at, updated_at, band, suspicion)"
                 " VALUES (?, 'US', 1, ?, ?, ?, 0, ?, ?, ?, ?)",
                 (key, suspicion or 0.0, int(band <= BAND_FINDING), int(band == BAND_ALERT),
                  received_at, received_at, band, suspicion))


def test_studies_shown_as_equally_suspicious_are_newest_first(tmp_path):
    with contextlib.closing(db.connect(tmp_path / "box.db")) as conn:
        db.initialise(conn)
        # six alerts the page shows as "> 99 %", received over the morning
        for i, suspicion in enumerate((0.9991, 0.9987, 0.9979, 0.9968, 0.9962, 0.9958)):
            _study(conn, f"old-{i}", BAND_ALERT, suspicion, 1000.0 + i)
        _study(conn, "live", BAND_ALERT, 0.9952, 5000.0)  # the session just ended: "> 99 %"
        _study(conn, "surer", BAND_ALERT, 0.93, 6000.0)  # newer, but less suspicious
        _study(conn, "finding", BAND_FINDING, 0.81, 7000.0)
        _study(conn, "clear-old", BAND_NO_FINDING, 0.12, 100.0)
        _study(conn, "clear-new", BAND_NO_FINDING, 0.118, 8000.0)
        _study(conn, "clear-low", BAND_NO_FINDING, 0.02, 9000.0)
        conn.commit()
        rows = queries.worklist(conn).rows
        keys = [conn.execute("SELECT study_key FROM studies WHERE id = ?", (r["id"],))
                .fetchone()[0] for r in rows]
    assert {formats.percent(r["probability"]) for r in rows[:7]} == {"> 99 %"}
    assert keys[0] == "live"  # first of those shown the same, where a nurse looks first
    assert keys[1:7] == [f"old-{i}" for i in (5, 4, 3, 2, 1, 0)]
    # the more suspicious still before the less, whatever their age; the bands as ever
    assert keys[7:] == ["surer", "finding", "clear-new", "clear-old", "clear-low"]
