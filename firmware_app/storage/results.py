"""The result store: findings, boxes, scores, heatmap, warnings and timings per instance.

Results live in the same SQLite database as the queue, so storing a result
and marking its job processed is one transaction (exactly once, even across
a crash). The web viewer and the telemetry read from here.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from typing import Any

import numpy as np

from clinibox_common.contracts.reasons import Reason, decode, encode, records
from clinibox_common.contracts.statuses import InstanceStatus
from engine.inference.aggregate import InstanceFindings
from engine.inference.assessment import is_judged, shown_probability
from firmware_app.storage.db import transaction
from firmware_app.storage.queue import JobQueue
from firmware_app.storage.study_rollup import update_study


def _encode_heatmap(heatmap: np.ndarray | None) -> tuple[bytes | None, str | None]:
    if heatmap is None:
        return None, None
    buffer = io.BytesIO()
    np.save(buffer, heatmap.astype(np.float16), allow_pickle=False)
    return buffer.getvalue(), "x".join(str(d) for d in heatmap.shape)


def decode_heatmap(blob: bytes | None) -> np.ndarray | None:
    """The stored heatmap as float32, or None."""
    if blob is None:
        return None
    return np.load(io.BytesIO(blob), allow_pickle=False).astype(np.float32)


class ResultStore:
    """Write and read results on one SQLite connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.queue = JobQueue(conn)

    def complete(
        self,
        *,
        instance_id: int,
        identity: dict[str, str],
        findings: InstanceFindings,
        warnings: list[Reason],
        model_id: str,
        backend: str,
        frames_inferred: int,
        timings: dict[str, float],
        intensity: tuple[float, float] = (0.0, 0.0),
        geometry: dict[str, Any] | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> None:
        """Store the result and mark the instance processed, in one transaction.

        ``identity`` holds study/series UIDs, modality and the patient and
        study strings the viewer shows (``DISPLAY_FIELDS``); they stay on the box.
        ``geometry`` is where the image lies in the patient (``DecodedImage.geometry()``;
        ``storage/volumes.py`` reads a series as a volume from it); ``image_size`` its rows
        and columns (the findings are placed and compared with them, ``storage/growth.py``).
        """
        heatmap, shape = _encode_heatmap(findings.heatmap)
        boxes = [b.to_dict() for b in findings.boxes]
        study_key = identity.get("study_instance_uid") or f"local:{instance_id}"
        with transaction(self.conn):
            # stamped under the write lock: a summary that ends before this time was built
            # in a transaction that ran before this one, so no result falls between summaries
            now = time.time()
            self.conn.execute(
                "UPDATE instances SET study_instance_uid=?, series_instance_uid=?, modality=?,"
                " geometry_json=?, image_rows=coalesce(?, image_rows),"
                " image_columns=coalesce(?, image_columns) WHERE id=?",
                (study_key, identity.get("series_instance_uid"), identity.get("modality"),
                 None if geometry is None else json.dumps(geometry),
                 *(image_size or (None, None)), instance_id),
            )
            self.conn.execute(
                "INSERT OR REPLACE INTO results(instance_id, model_id, backend, probability,"
                " finding, alert, findings_json, warnings_json, key_frame, frames_inferred,"
                " heatmap, heatmap_shape, timings_json, created_at, input_mean, input_std,"
                " assessment, assessment_reason, lesions_json, classes_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (instance_id, model_id, backend, findings.probability, int(findings.finding),
                 int(findings.alert), json.dumps(boxes), encode(warnings) or "[]",
                 findings.key_frame, frames_inferred, heatmap, shape,
                 json.dumps({k: round(v, 3) for k, v in timings.items()}), now,
                 intensity[0], intensity[1], findings.assessment,
                 encode(findings.assessment_reason),
                 json.dumps([lesion.to_dict() for lesion in findings.lesions]),
                 json.dumps({k: round(float(v), 4) for k, v in findings.classes.items()})),
            )
            self.queue.set_status(instance_id, InstanceStatus.PROCESSED)
            update_study(self.conn, study_key, identity.get("modality"), identity, now)

    def instances(self, study_key: str | None = None) -> list[dict[str, Any]]:
        """Every received instance with its status and result (newest last); with
        ``study_key``, only that study's analysed instances."""
        sql = (
            "SELECT i.id, i.local_id, i.sop_instance_uid, i.study_instance_uid, i.modality,"
            " i.source, i.status, i.reason, i.attempts, i.duplicates, i.received_at,"
            " r.model_id, r.backend, r.probability, r.finding, r.alert, r.findings_json,"
            " r.warnings_json, r.key_frame, r.frames_inferred, r.timings_json, r.assessment,"
            " r.assessment_reason, r.lesions_json, r.classes_json"
            " FROM instances i LEFT JOIN results r ON r.instance_id = i.id"
        )
        params: tuple[Any, ...] = ()
        if study_key is not None:
            sql += " WHERE i.study_instance_uid = ? AND r.instance_id IS NOT NULL"
            params = (study_key,)
        out = []
        for row in self.conn.execute(sql + " ORDER BY i.id", params):
            has_result = row["model_id"] is not None
            out.append({
                "id": row["id"],
                "local_id": row["local_id"],
                "sop_instance_uid": row["sop_instance_uid"],
                "study_instance_uid": row["study_instance_uid"],
                "modality": row["modality"],
                "source": row["source"],
                "status": row["status"],
                # reasons as codes with their parameters (``contracts/reasons.py``)
                "reason": records(decode(row["reason"])),
                "attempts": row["attempts"],
                "duplicates": row["duplicates"],
                "received_at": row["received_at"],
                "model_id": row["model_id"],
                "backend": row["backend"],
                # None where the model gives no result; its answer is kept for the record
                "probability": shown_probability(row["assessment"], row["probability"]),
                "probability_not_shown": None if is_judged(row["assessment"])
                else row["probability"],
                "assessment": row["assessment"],
                "assessment_reason": records(decode(row["assessment_reason"]))
                if has_result else [],
                "lesions": json.loads(row["lesions_json"]) if has_result else [],
                "class_probabilities": json.loads(row["classes_json"]) if has_result else {},
                "finding": bool(row["finding"]) if has_result else None,
                "alert": bool(row["alert"]) if has_result else None,
                "findings": json.loads(row["findings_json"]) if has_result else [],
                "warnings": records(decode(row["warnings_json"])) if has_result else [],
                "key_frame": row["key_frame"],
                "frames_inferred": row["frames_inferred"],
                "timings_ms": json.loads(row["timings_json"]) if has_result else {},
            })
        return out

    def last_errors(self, limit: int = 10) -> list[dict[str, Any]]:
        """The most recent warnings and errors recorded by any component (with the code a
        program reads an event by, '' for none)."""
        rows = self.conn.execute(
            "SELECT at, level, component, message, code FROM events"
            " WHERE level IN ('WARNING', 'ERROR') ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [dict(r) for r in rows]

    def study_count(self) -> int:
        """Number of studies with at least one processed instance."""
        return int(self.conn.execute("SELECT COUNT(*) FROM studies").fetchone()[0])
