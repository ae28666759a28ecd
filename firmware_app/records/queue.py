"""The records outbox's entrance: a study's report queued for every receiver.

``queue_result`` runs at a study's completion (``service/study_completion.py``) and
``queue_verdict`` when the hospital's verdict on a study is kept (``telemetry/downlink.py``
calls the hook the service gives it), each inside the caller's transaction, so the report
commits with what made it. A study the box no longer holds, or one without any analysed
image, queues nothing.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

from clinibox_common.contracts.statuses import ReportKind
from firmware_app.records.content import NoSuchStudy, study_content
from firmware_app.settings.box import Config
from firmware_app.storage import records_outbox

log = logging.getLogger(__name__)


def report_language(config: Config) -> str:
    """The language of the reports: ``[records] language``, else ``[web] language``, else
    English."""
    return config.records.language or config.web.language or "en"


def _queue(conn: sqlite3.Connection, config: Config, study_key: str, kind: str,
           version: int, is_demo: Callable[[str], bool]) -> list[int]:
    receivers = [r.name for r in config.records.receivers]
    if not receivers:
        return []
    try:
        content = study_content(conn, study_key, language=report_language(config),
                                is_demo=is_demo, kind=kind)
    except NoSuchStudy:
        log.info("records: study %s is not on the box; no report is sent", study_key)
        return []
    return records_outbox.add_report(conn, receivers, study_key, kind, version, content)


def queue_result(conn: sqlite3.Connection, config: Config, study_key: str, version: int,
                 is_demo: Callable[[str], bool]) -> list[int]:
    """Queue the study's result (its ``version``-th completion) for every receiver; the new
    row ids."""
    return _queue(conn, config, study_key, ReportKind.RESULT, version, is_demo)


def queue_verdict(conn: sqlite3.Connection, config: Config, study_key: str, seq: int,
                  is_demo: Callable[[str], bool]) -> list[int]:
    """Queue the study's report again with the hospital's verdict (downlink ``seq``) for
    every receiver; the new row ids."""
    return _queue(conn, config, study_key, ReportKind.VERDICT, seq, is_demo)
