"""The clinic's Modality Worklist, asked off the request path: a C-FIND client and its poller.

:func:`fetch` asks the worklist (Modality Worklist Information Model - FIND) for today's
scheduled procedure steps on each configured modality (and, with ``match_station``, on this
station), bounded: at most ``max_items`` steps (the association is aborted past them), each
answer within ``timeout`` and the whole question within :data:`DEADLINE_FACTOR` times it.
Every value is cleaned (control and invisible characters gone, DICOM's lengths kept, a birth
date or sex DICOM cannot hold left empty) so an odd answer never reaches a page as it came.

:class:`WorklistPoller` runs in the service (``service/appliance.py``): every
``refresh_seconds`` it asks and writes the answer, or why there was none, into the box's
database (``storage/worklist.py``), where the live page reads it. It never raises: a
worklist that is down is a state, and the service keeps running.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from clinibox_common.errors import CliniboxError
from firmware_app.settings.box import Config
from firmware_app.storage import db, worklist
from firmware_app.storage.worklist import WorklistItem, WorklistState

log = logging.getLogger(__name__)

#: the whole question may take this many times ``[worklist] timeout``
DEADLINE_FACTOR = 3
#: C-FIND statuses: pending (more to come) and success (the last)
_PENDING = (0xFF00, 0xFF01)
_SUCCESS = 0x0000
#: the longest text a field keeps (DICOM's LO and PN: 64 characters) and SH (16)
_LO, _SH = 64, 16
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_DATE = re.compile(r"^(19|20)[0-9]{6}$")
_TIME = re.compile(r"^[0-9]{2,6}")


class WorklistDown(CliniboxError):
    """The worklist gave no usable answer; ``reason`` is a code of ``DOWN_REASONS``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def query(modality: str, day: str, station: str = "") -> Dataset:
    """The C-FIND identifier: the step's keys asked for, matched on ``modality``, ``day``
    (YYYYMMDD) and, when given, the scheduled station's AE title."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "AccessionNumber", "RequestedProcedureID", "RequestedProcedureDescription",
                    "StudyInstanceUID"):
        setattr(ds, keyword, "")
    step = Dataset()
    step.Modality = modality
    step.ScheduledStationAETitle = station
    step.ScheduledProcedureStepStartDate = day
    step.ScheduledProcedureStepStartTime = ""
    step.ScheduledProcedureStepID = ""
    step.ScheduledProcedureStepDescription = ""
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def clean(value: Any, limit: int = _LO) -> str:
    """A value as text a page may show: no control, invisible or backslash characters,
    trimmed, at most ``limit`` characters."""
    if isinstance(value, (MultiValue, list, tuple)):  # a value with a backslash in it
        value = "".join(str(part) for part in value)
    text = "" if value is None else str(value)
    text = _CONTROL.sub("", text)
    text = "".join(c for c in text if unicodedata.category(c) not in _INVISIBLE)
    return text.strip()[:limit]


def _get(ds: Dataset, keyword: str) -> Any:
    try:
        return ds.get(keyword, "")
    except Exception:  # a value pydicom cannot decode: treated as absent
        return ""


def item_of(ds: Dataset) -> WorklistItem:
    """One answer as a WorklistItem, every value cleaned and bounded."""
    steps = _get(ds, "ScheduledProcedureStepSequence") or []
    step = steps[0] if len(steps) else Dataset()
    birth = clean(_get(ds, "PatientBirthDate"), 8)
    sex = clean(_get(ds, "PatientSex"), 1).upper()
    when = _TIME.match(clean(_get(step, "ScheduledProcedureStepStartTime"), _SH))
    day = clean(_get(step, "ScheduledProcedureStepStartDate"), 8)
    description = (clean(_get(step, "ScheduledProcedureStepDescription"))
                   or clean(_get(ds, "RequestedProcedureDescription")))
    return WorklistItem(
        patient_name=clean(_get(ds, "PatientName")),
        patient_id=clean(_get(ds, "PatientID")),
        birth_date=birth if _DATE.match(birth) else "",
        sex=sex if sex in ("M", "F", "O") else "",
        accession_number=clean(_get(ds, "AccessionNumber"), _SH),
        sps_id=clean(_get(step, "ScheduledProcedureStepID"), _SH),
        modality=clean(_get(step, "Modality"), _SH),
        station_ae=clean(_get(step, "ScheduledStationAETitle"), _SH),
        scheduled_date=day if _DATE.match(day) else "",
        scheduled_time=when.group(0) if when else "",
        description=description)


def fetch(config: Config, day: str | None = None) -> list[WorklistItem]:
    """Today's (or ``day``'s) scheduled steps on the configured modalities, at most
    ``max_items``; WorklistDown with its reason when the worklist gives no usable answer."""
    settings = config.worklist
    day = day or dt.date.today().strftime("%Y%m%d")
    station = config.worklist_calling_ae_title if settings.match_station else ""
    ae = AE(ae_title=config.worklist_calling_ae_title)
    ae.add_requested_context(ModalityWorklistInformationFind)
    for name in ("connection_timeout", "acse_timeout", "dimse_timeout", "network_timeout"):
        setattr(ae, name, settings.timeout)
    assoc = ae.associate(settings.host, settings.port, ae_title=settings.ae_title)
    if not assoc.is_established:
        raise WorklistDown("refused" if assoc.is_rejected else "unreachable",
                           f"{settings.host}:{settings.port}")
    items: list[WorklistItem] = []
    deadline = time.monotonic() + settings.timeout * DEADLINE_FACTOR
    try:
        for modality in settings.modalities:
            for ds in find_answers(assoc, query(modality, day, station), deadline):
                items.append(item_of(ds))
                if len(items) >= settings.max_items:
                    log.warning("worklist: more than %d steps; the first %d are kept",
                                settings.max_items, settings.max_items)
                    assoc.abort()
                    return items
    except BaseException:
        assoc.abort()
        raise
    assoc.release()
    return items


def find_answers(assoc: Any, identifier: Dataset, deadline: float, *,
                 model: Any = ModalityWorklistInformationFind,
                 down: Callable[[str, str], Exception] = WorklistDown) -> Iterator[Dataset]:
    """The identifiers of one C-FIND's pending answers on the information ``model``;
    ``down(reason, detail)`` is raised when it fails, times out or takes past ``deadline``
    (reason: refused, timeout or failed)."""
    asked = time.monotonic()
    for status, answer in assoc.send_c_find(identifier, model):
        if time.monotonic() > deadline:
            raise down("timeout", "the answer took too long")
        code = getattr(status, "Status", None)
        if code is None:  # the peer ended the link (it refuses this AE), or went silent
            quick = time.monotonic() - asked < assoc.ae.dimse_timeout
            raise down("refused" if quick else "timeout", "no C-FIND answer")
        if code == _SUCCESS:
            return
        if code not in _PENDING:
            raise down("failed", f"C-FIND status 0x{int(code):04X}")
        if answer is not None:
            yield answer


class WorklistPoller:
    """Asks the worklist every ``refresh_seconds`` and keeps its answer in the database."""

    def __init__(self, config: Config, fetcher: Callable[[Config], list[WorklistItem]] = fetch,
                 ) -> None:
        self.config = config
        self.fetcher = fetcher
        self._said: tuple[str, str] | None = None

    def poll_once(self) -> worklist.Status:
        """Ask once; record the answer (``ok``) or why there was none (``down``, ``off``)."""
        settings = self.config.worklist
        with contextlib.closing(db.connect(self.config.database_path)) as conn:
            if not settings.enabled:
                worklist.set_state(conn, WorklistState.OFF)
            else:
                try:
                    worklist.replace_items(conn, self.fetcher(self.config))
                except WorklistDown as exc:
                    worklist.set_state(conn, WorklistState.DOWN, exc.reason)
                    self._say(WorklistState.DOWN, exc.reason, str(exc))
                except Exception as exc:  # an answer pydicom or the poller cannot read
                    worklist.set_state(conn, WorklistState.DOWN, "bad_answer")
                    self._say(WorklistState.DOWN, "bad_answer", repr(exc))
            found = worklist.status(conn)
        if found.state == WorklistState.OK:
            self._say(WorklistState.OK, "", f"{found.items} scheduled steps")
        return found

    def _say(self, state: WorklistState, reason: str, detail: str) -> None:
        """Log a change of state once (not every refresh)."""
        if self._said != (state.value, reason):
            self._said = (state.value, reason)
            level = logging.INFO if state == WorklistState.OK else logging.WARNING
            log.log(level, "worklist %s:%d is %s (%s)", self.config.worklist.host,
                    self.config.worklist.port, state.value, detail)

    def run(self, stop: threading.Event) -> None:
        """Ask until ``stop`` is set, every ``refresh_seconds``; never raises."""
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception:  # a locked database: said, and tried again next time
                log.exception("worklist: the answer could not be kept")
            stop.wait(self.config.worklist.refresh_seconds)
