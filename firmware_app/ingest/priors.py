"""The patient's earlier studies from the clinic's PACS: asked (C-FIND) and fetched (C-GET)
for a study with a finding, off the analysis path.

:class:`PriorsFetcher` runs in the service (``service/appliance.py``). For each study whose
lookup is open (``storage/priors.py``; opened by the study's completion), it asks the PACS
(Study Root Query/Retrieve) for the same patient's studies dated before it, keeps the
latest ``max_studies`` whose series include the study's modality (and body part, where both
name one), and fetches those series with C-GET on the same association, bounded: at most
``max_images`` images and ``max_megabytes`` in all (the PACS's series sizes are checked
before, each image's size as it arrives). The images land through the box's ordinary intake
(``ingest/landing.py``): they are analysed like any arrival, and the study is noted as an
earlier study first, so nothing of it is ever sent anywhere.

A PACS cannot slip in what was not asked for: an image whose Study Instance UID is not one
asked for, or whose Patient ID is not the patient's, is refused and removed, and so is any
image past the bounds. A PACS that is down, refuses the box or answers too slowly ends the
lookup as ``failed`` with a reason code; the study's results then go without the comparison
(``service/study_completion.py`` waits at most ``[priors] wait_seconds``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from clinibox_common.errors import CliniboxError
from firmware_app.ingest.bounded_server import BoundedSocket
from firmware_app.ingest.dicom_scp import (
    ACCEPTED_TRANSFER_SYNTAXES,
    receive_data_sets_into,
    remove_partial_data_set,
)
from firmware_app.ingest.landing import Lander, Outcome
from firmware_app.ingest.store_checks import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, check_received
from firmware_app.ingest.worklist import DEADLINE_FACTOR, clean, find_answers
from firmware_app.settings.box import Config
from firmware_app.storage import db, priors
from firmware_app.storage import studies as queries
from firmware_app.storage.priors import PriorLookupState

log = logging.getLogger(__name__)

#: a C-STORE sub-operation refused as not what was asked for ("cannot understand")
NOT_ASKED_FOR = CANNOT_UNDERSTAND
#: the whole lookup (questions and fetch) may take this many times ``[priors] timeout``
LOOKUP_DEADLINE_FACTOR = 10
#: what the box offers for the images it fetches: what its receiver accepts, without
#: Deflated (pydicom inflates a deflated file whole before any header is read)
FETCH_TRANSFER_SYNTAXES = [uid for uid in ACCEPTED_TRANSFER_SYNTAXES
                           if uid != DeflatedExplicitVRLittleEndian]
#: characters a C-FIND reads as wildcards or value separators: never in the ID asked for
_WILDCARDS = frozenset("*?\\")
_DATE_LENGTH = 8


class PriorsUnavailable(CliniboxError):
    """The PACS gave no usable answer; ``reason`` is a code of ``priors.FAILURE_REASONS``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class CurrentStudy:
    """What the box knows of the study the earlier ones are asked for."""

    study_key: str
    patient_id: str
    study_date: str
    modality: str
    body_part: str
    patient_name: str = ""


@dataclass
class EarlierStudy:
    """One earlier study the PACS holds, and the series of it to fetch."""

    study_key: str
    study_date: str
    series: list[str] = field(default_factory=list)
    images: int = 0


def study_query(current: CurrentStudy) -> Dataset:
    """The C-FIND identifier at STUDY level: the patient's studies dated before this one."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = current.patient_id
    ds.StudyDate = f"-{current.study_date}" if len(current.study_date) == _DATE_LENGTH else ""
    for keyword in ("StudyInstanceUID", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"):
        setattr(ds, keyword, "")
    return ds


def series_query(study_key: str) -> Dataset:
    """The C-FIND identifier at SERIES level: one study's series with their sizes."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = study_key
    for keyword in ("SeriesInstanceUID", "Modality", "BodyPartExamined",
                    "NumberOfSeriesRelatedInstances"):
        setattr(ds, keyword, "")
    return ds


def _count(value: Any) -> int:
    try:
        return max(0, int(str(value or "0").strip()))
    except ValueError:
        return 0


def earlier_studies(answers: list[Dataset], current: CurrentStudy) -> list[EarlierStudy]:
    """The PACS's studies that may be earlier ones of this study, latest first: another
    Study Instance UID, of the same patient, dated before it (where both are dated), with
    the study's modality among its modalities (where the PACS names them)."""
    found: dict[str, EarlierStudy] = {}
    for answer in answers:
        key = clean(answer.get("StudyInstanceUID", ""))
        date = clean(answer.get("StudyDate", ""), _DATE_LENGTH)
        modalities = answer.get("ModalitiesInStudy", "") or ""
        modalities = ([str(m) for m in modalities] if not isinstance(modalities, str)
                      else [m for m in modalities.split("\\") if m])
        if (not key or key == current.study_key
                or clean(answer.get("PatientID", current.patient_id)) != current.patient_id
                or (date and current.study_date and date >= current.study_date)
                or (modalities and current.modality and current.modality not in modalities)):
            continue
        found.setdefault(key, EarlierStudy(key, date))
    return sorted(found.values(), key=lambda s: s.study_date, reverse=True)


def pick_series(answers: list[Dataset], current: CurrentStudy, earlier: EarlierStudy,
                room: int) -> None:
    """Fill ``earlier.series`` with its series of the study's modality and body part (where
    both name one) that fit in ``room`` images."""
    for answer in answers:
        uid = clean(answer.get("SeriesInstanceUID", ""))
        modality = clean(answer.get("Modality", ""), 16)
        body_part = clean(answer.get("BodyPartExamined", ""), 16).upper()
        images = max(1, _count(answer.get("NumberOfSeriesRelatedInstances")))
        if (not uid or (current.modality and modality and modality != current.modality)
                or (current.body_part and body_part and body_part != current.body_part)):
            continue
        if earlier.images + images > room:
            continue
        earlier.series.append(uid)
        earlier.images += images


def same_name(a: str, b: str) -> bool:
    """Whether two Patient Names name one person as the box compares them (trailing
    component separators and spaces ignored); an empty name matches any."""
    a, b = a.rstrip("^ ").upper(), b.rstrip("^ ").upper()
    return not a or not b or a == b


class _Retrieval:
    """The C-STORE sub-operations of one lookup's C-GETs: each image checked, bounded and
    landed; the queue ids of those landed. Past the bounds or the lookup's deadline the
    association is aborted: a PACS that keeps sending never holds the fetcher."""

    def __init__(self, lander: Lander, current: CurrentStudy, max_images: int,
                 max_bytes: int, origin: str, deadline: float) -> None:
        self.lander, self.current = lander, current
        self.max_images, self.max_bytes, self.origin = max_images, max_bytes, origin
        self.deadline = deadline
        self.studies: set[str] = set()
        self.instance_ids: list[int] = []
        self.bytes = 0
        self.refused: dict[str, int] = {}
        self.stopped = ""

    def _refuse(self, path: Path, reason: str, status: int) -> int:
        path.unlink(missing_ok=True)
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return status

    def _stop(self, event: evt.Event, path: Path, reason: str) -> int:
        """Past a bound: this image refused and the association aborted."""
        self.stopped = self.stopped or reason
        with contextlib.suppress(Exception):
            event.assoc.abort()
        return self._refuse(path, reason, OUT_OF_RESOURCES)

    def handle_store(self, event: evt.Event) -> int:
        """One image the PACS sends: refused unless asked for and within the bounds."""
        path = Path(event.dataset_path)
        size = path.stat().st_size
        if time.monotonic() > self.deadline:
            return self._stop(event, path, "timeout")
        if len(self.instance_ids) >= self.max_images or self.bytes + size > self.max_bytes:
            return self._stop(event, path, "too_large")
        request = event.request
        verdict = check_received(path, command_instance_uid=str(
            request.AffectedSOPInstanceUID or "") or None, command_class_uid=str(
            request.AffectedSOPClassUID or "") or None)
        if verdict.refusal is not None:
            return self._refuse(path, verdict.refusal.value, verdict.refusal.status)
        try:  # a checked, whole data set in a syntax the box offered (never deflated)
            header = dcmread(path, stop_before_pixels=True,
                             specific_tags=["StudyInstanceUID", "PatientID", "PatientName"])
            study_key = str(header.get("StudyInstanceUID", ""))
            patient_id = clean(header.get("PatientID", ""))
            name = clean(header.get("PatientName", ""))
        except Exception:  # a header pydicom cannot read: not what was asked for
            study_key, patient_id, name = "", "", ""
        if (study_key not in self.studies or patient_id != self.current.patient_id
                or not same_name(name, self.current.patient_name)):
            return self._refuse(path, "not_asked_for", NOT_ASKED_FOR)
        try:
            landed = self.lander.land_file(path, sop_instance_uid=verdict.sop_instance_uid,
                                           source="dicom", origin=self.origin)
        except (OSError, ValueError) as exc:
            log.error("priors: an earlier image could not be stored: %s", exc)
            return self._refuse(path, "not_stored", OUT_OF_RESOURCES)
        self.bytes += size
        if landed.outcome is Outcome.ACCEPTED:
            self.instance_ids.append(landed.instance_id)
        return 0x0000


class PriorsFetcher:
    """Asks the PACS for the earlier studies of each open lookup and fetches them."""

    def __init__(self, config: Config, lander: Lander,
                 on_stored: Callable[[], None] = lambda: None,
                 read_current: Callable[[Any, str], CurrentStudy | None] | None = None) -> None:
        self.config = config
        self.lander = lander
        self.on_stored = on_stored
        self.read_current = read_current or current_study
        self.wake = threading.Event()
        receive_data_sets_into(lander.spool.tmp)

    @property
    def calling_ae_title(self) -> str:
        """The AE title the box asks as."""
        return self.config.priors.calling_ae_title or self.config.pacs_calling_ae_title

    def _ae(self) -> AE:
        settings = self.config.priors
        ae = AE(ae_title=self.calling_ae_title)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        for context in StoragePresentationContexts[:120]:  # 128 contexts at most in all
            ae.add_requested_context(context.abstract_syntax, FETCH_TRANSFER_SYNTAXES)
        ae.maximum_pdu_size = self.config.dicom.max_pdu_kb * 1024
        for name in ("connection_timeout", "acse_timeout", "dimse_timeout", "network_timeout"):
            setattr(ae, name, settings.timeout)
        return ae

    def fetch_once(self) -> int:
        """Serve every open lookup, oldest first; how many were served."""
        with contextlib.closing(db.connect(self.config.database_path)) as conn:
            keys = priors.asking(conn)
            for study_key in keys:
                self.serve(conn, study_key)
        return len(keys)

    def serve(self, conn: Any, study_key: str) -> PriorLookupState:
        """Ask for, fetch and record one study's earlier studies; never raises."""
        current = self.read_current(conn, study_key)
        if current is None or not current.patient_id or _WILDCARDS & set(current.patient_id):
            with db.transaction(conn):
                priors.end(conn, study_key, PriorLookupState.FAILED, time.time(),
                           reason="no_patient_id")
            return PriorLookupState.FAILED
        try:
            state, found, retrieval = self._ask_and_fetch(conn, current)
        except PriorsUnavailable as exc:
            log.warning("priors: the PACS %s:%d gave no earlier studies for study %s (%s)",
                        self.config.priors.host, self.config.priors.port, study_key, exc)
            with db.transaction(conn):
                priors.end(conn, study_key, PriorLookupState.FAILED, time.time(),
                           reason=exc.reason)
            return PriorLookupState.FAILED
        except Exception as exc:  # an answer the fetcher cannot read
            log.exception("priors: earlier studies of study %s not fetched", study_key)
            with db.transaction(conn):
                priors.end(conn, study_key, PriorLookupState.FAILED, time.time(),
                           reason="failed" if not isinstance(exc, OSError) else "unreachable")
            return PriorLookupState.FAILED
        ids = tuple(retrieval.instance_ids) if retrieval else ()
        with db.transaction(conn):
            priors.end(conn, study_key, state, time.time(), studies=found, instance_ids=ids,
                       reason=retrieval.stopped if retrieval else "")
        if retrieval and retrieval.refused:
            log.warning("priors: images refused while fetching for study %s: %s", study_key,
                        retrieval.refused)
        if ids:
            self.on_stored()
        log.info("priors: study %s: %d earlier study(ies), %d image(s) fetched", study_key,
                 found, len(ids))
        return state

    def _ask_and_fetch(self, conn: Any, current: CurrentStudy
                       ) -> tuple[PriorLookupState, int, _Retrieval | None]:
        settings = self.config.priors
        retrieval = _Retrieval(
            self.lander, current, settings.max_images, settings.max_megabytes * 2**20,
            priors.FETCHED_ORIGIN_PREFIX + settings.ae_title,
            time.monotonic() + settings.timeout * LOOKUP_DEADLINE_FACTOR)
        ae = self._ae()
        roles = [build_role(c.abstract_syntax, scp_role=True)
                 for c in StoragePresentationContexts[:120]]
        assoc = ae.associate(settings.host, settings.port, ae_title=settings.ae_title,
                             ext_neg=roles, evt_handlers=[
                                 (evt.EVT_C_STORE, retrieval.handle_store),
                                 (evt.EVT_CONN_CLOSE, remove_partial_data_set)])
        if not assoc.is_established:
            raise PriorsUnavailable("refused" if assoc.is_rejected else "unreachable",
                                    f"{settings.host}:{settings.port}")
        # the box's receiver's bounds: no PDU or image larger than it would take
        BoundedSocket.bound(assoc.dul.socket, ae.maximum_pdu_size,
                            self.config.storage.max_object_mb * 2**20)
        try:
            wanted, found = self._ask(conn, assoc, current)
            if not found:
                assoc.release()
                return PriorLookupState.NONE, 0, None
            with db.transaction(conn):  # noted before an image lands: never sent anywhere
                for earlier in wanted:
                    priors.note_prior(conn, earlier.study_key, current.study_key,
                                      earlier.study_date, time.time())
            retrieval.studies = {w.study_key for w in wanted}
            for earlier in wanted:
                for series_uid in earlier.series:
                    if not self._get(assoc, earlier.study_key, series_uid, retrieval):
                        break
                if retrieval.stopped:
                    break
        except PriorsUnavailable:
            assoc.abort()
            if not retrieval.instance_ids:
                raise
            retrieval.stopped = retrieval.stopped or "failed"  # what arrived is kept
            return PriorLookupState.FETCHED, len(retrieval.studies), retrieval
        except BaseException:
            assoc.abort()
            raise
        if assoc.is_established:
            assoc.release()
        return PriorLookupState.FETCHED, found, retrieval

    def _ask(self, conn: Any, assoc: Any, current: CurrentStudy
             ) -> tuple[list[EarlierStudy], int]:
        """The earlier studies to fetch (their series picked), at most ``max_studies``,
        and how many the PACS holds (those already on the box included)."""
        settings = self.config.priors
        answers = list(find_answers(assoc, study_query(current),
                                    time.monotonic() + settings.timeout * DEADLINE_FACTOR,
                                    model=StudyRootQueryRetrieveInformationModelFind,
                                    down=PriorsUnavailable))
        candidates = earlier_studies(answers, current)
        wanted: list[EarlierStudy] = []
        for earlier in candidates:
            if len(wanted) >= settings.max_studies:
                break
            if priors.study_on_box(conn, earlier.study_key):
                continue  # already here: compared with as it is
            series = list(find_answers(assoc, series_query(earlier.study_key),
                                       time.monotonic() + settings.timeout * DEADLINE_FACTOR,
                                       model=StudyRootQueryRetrieveInformationModelFind,
                                       down=PriorsUnavailable))
            pick_series(series, current, earlier,
                        settings.max_images - sum(w.images for w in wanted))
            if earlier.series:
                wanted.append(earlier)
        return wanted, len(candidates)

    @staticmethod
    def _get(assoc: Any, study_key: str, series_uid: str, retrieval: _Retrieval) -> bool:
        """One series by C-GET; False when the link ended (aborted past a bound, or by the
        PACS). A series the PACS fails is logged and the next one asked for."""
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = study_key
        ds.SeriesInstanceUID = series_uid
        for status, _identifier in assoc.send_c_get(ds, StudyRootQueryRetrieveInformationModelGet):
            code = getattr(status, "Status", None)
            if code is None:
                if retrieval.stopped:
                    return False
                raise PriorsUnavailable("timeout", "no C-GET answer")
            if code not in (0xFF00, 0x0000, 0xB000):  # pending, success, some refused
                log.warning("priors: the PACS ended a series' C-GET with status 0x%04X",
                            int(code))
                retrieval.stopped = retrieval.stopped or "failed"
        return not retrieval.stopped or retrieval.stopped == "failed"

    def run(self, stop: threading.Event) -> None:
        """Serve open lookups until ``stop``: when woken, and every few seconds."""
        while not stop.is_set():
            try:
                self.fetch_once()
            except Exception:  # a locked database: said, and tried again next time
                log.exception("priors: the lookups could not be served")
            self.wake.wait(2.0)
            self.wake.clear()


def current_study(conn: Any, study_key: str) -> CurrentStudy | None:
    """The study's patient ID, date and modality, and the body part its most suspicious
    image names; None when the box has no such study."""
    found_id = queries.study_id(conn, study_key)
    found = None if found_id is None else queries.study(conn, found_id)
    if found is None or not found["instances"]:
        return None
    body_part = ""
    with contextlib.suppress(Exception):  # unreadable or deleted: no body part to match
        header = dcmread(found["instances"][0].spool_path, stop_before_pixels=True,
                         specific_tags=["BodyPartExamined"])
        body_part = clean(header.get("BodyPartExamined", ""), 16).upper()
    return CurrentStudy(study_key, clean(found["patient_id"] or ""),
                        clean(found["study_date"] or "", _DATE_LENGTH),
                        clean(found["modality"] or "", 16), body_part,
                        clean(found["patient_name"] or ""))
