"""The records outbox's entrance: a study's report queued for every receiver.

At a study's completion (``service/study_completion.py``) the report is made first
(``report``: it reads the study's results and an image's header) and queued (``queue``) in
the completion's transaction, so it commits with what made it without holding the
database's write lock while it is made. ``queue_verdict`` does both in the transaction that
keeps the hospital's verdict (``telemetry/downlink.py`` calls the hook the service gives
it): verdicts are rare. A study the box no longer holds, or one without any analysed
image, queues nothing.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from clinibox_common.contracts.statuses import ReportKind
from firmware_app.records.content import NoSuchStudy, study_content
from firmware_app.settings.box import Config
from firmware_app.storage import records_outbox

log = logging.getLogger(__name__)


def report_language(config: Config) -> str:
    """The language of the reports: ``[records] language``, else ``[web] language``, else
    English."""
    return config.records.language or config.web.language or "en"


def report(conn: sqlite3.Connection, config: Config, study_key: str, kind: str,
           is_demo: Callable[[str], bool]) -> dict[str, Any] | None:
    """The study's report as it stands now, in the reports' language; None without a
    receiver or without the study. It reads the study's results and one image's header:
    make it before the transaction that queues it where that transaction can wait."""
    if not config.records.receivers:
        return None
    try:
        return study_content(conn, study_key, language=report_language(config),
                             is_demo=is_demo, kind=kind)
    except NoSuchStudy:
        log.info("records: study %s is not on the box; no report is sent", study_key)
        return None


def queue(conn: sqlite3.Connection, config: Config, study_key: str, kind: str, version: int,
          content: dict[str, Any]) -> list[int]:
    """Queue a report (``report``) for every receiver, in the caller's transaction; the new
    row ids."""
    return records_outbox.add_report(conn, [r.name for r in config.records.receivers],
                                     study_key, kind, version, content)


def queue_verdict(conn: sqlite3.Connection, config: Config, study_key: str, seq: int,
                  is_demo: Callable[[str], bool]) -> list[int]:
    """Queue the study's report again with the hospital's verdict (downlink ``seq``) for
    every receiver, in the transaction that keeps the verdict; the new row ids."""
    content = report(conn, config, study_key, ReportKind.VERDICT, is_demo)
    if content is None:
        return []
    return queue(conn, config, study_key, ReportKind.VERDICT, seq, content)
