"""Study completion: when a study is stable, its DICOM results are made and queued.

A study is complete ``[studies] stable_seconds`` after its last instance
arrived, once everything received meanwhile is analysed
(``storage.study_completion``). Then, in this order:

1. its SR, SEG and key image are made (``dicom_out.study_documents``, in the
   document maker's child process, ``dicom_out.maker``: warmed while a study
   arrives, stopped after a minute without one) for the kinds the configured
   PACS destinations want, and written durably, as files;
2. they are queued in the DICOM outbox (``dicom_out.outbox``: files first,
   then their rows), then the completion is recorded: a crash in between
   makes the same documents again (their UIDs are deterministic), which the
   outbox finds already queued;
3. the study's report for the clinic's information systems (``[[records.receivers]]``) is
   made, then queued in the records outbox (``records/queue.py``) in the completion's
   transaction;
4. the telemetry producer, which sends a study's alerts only once it is
   complete (once per study and model, ``storage.study_alerts``), and the
   DICOM sender are woken.

Making the documents (highdicom's SR above all: about a second for a 10-slice
CT study on an AVX2 EPYC) is not left to the end of the stable period: once
every object of a study is analysed, its documents are made while the study
settles, kept in memory with a digest of what they were made from
(``_made_from``), and at completion used as they are if nothing about the study
changed meanwhile (a late instance, a result stored again, an image deleted):
else they are made again. The durable steps and their order stay as above.

With several models (routing rules), each model's images of the study get
their own SR (SEG, key image), and each alerting model its own alert. An
instance arriving after the completion updates the study; its next
completion makes version 2 (3, …) of the results, whose SR names the one
before it, and alerts only a model that has not alerted the study yet. A
study whose documents cannot be made (an image highdicom refuses) is still
completed, with the reason recorded as an event: its alerts and its results
in the viewer do not wait on a document.

Imperfect headers sink nothing: an image whose header the documents cannot
refer to (a missing or invalid Study, Series, SOP Instance or SOP Class UID)
is left out of them and the others still go; what was left out (instance id
and reason code) and what was changed in the others' headers
(``dicom_out.source_header``) is recorded as events of ``EVENT_COMPONENT``, in
codes: ``study <id> v<version> left-out <instance>=<keyword>:<code> …`` and
``… header-fixes …``. Documents that could not be made at all are tried again
``MAKE_RETRIES`` times, ``RETRY_SECONDS`` apart (more each time), while the
service runs; then, or at once when no image of the study can be described
(trying again would change nothing), they are held, recorded as an ERROR
event ``study <id> v<version> dicom-results-held <reason>`` that ``clinibox
status`` shows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from clinibox_common.contracts.statuses import ReportKind
from firmware_app.dicom_out.document import Document
from firmware_app.dicom_out.kept import keep_documents
from firmware_app.dicom_out.maker import DocumentMaker, DocumentsNotMade
from firmware_app.dicom_out.outbox import enqueue_documents
from firmware_app.dicom_out.source import AnalysedInstance, ModelIdentity
from firmware_app.dicom_out.source_header import ABSENT_TYPE2, HeaderReport
from firmware_app.records import queue as records
from firmware_app.settings.box import Config
from firmware_app.storage import db, event_codes, growth, priors
from firmware_app.storage.study_completion import (
    DueStudy,
    analysed_instances,
    any_study_pending,
    mark_completed,
    studies_completing,
    studies_due,
)

log = logging.getLogger(__name__)

#: the longest wait between two looks for complete studies
TICK_SECONDS = 0.5
#: the events component of a study's DICOM results
EVENT_COMPONENT = "study-completion"
#: how many more times documents that could not be made are tried (while the service runs)
MAKE_RETRIES = 3
#: the wait before the first of them (doubling)
RETRY_SECONDS = 60.0


class StudyCompleter:
    """Completes stable studies: DICOM results into the outbox, then the alert may go."""

    def __init__(self, config: Config, models: ModelIdentity | Mapping[str, ModelIdentity],
                 device_id: str, on_completed: Callable[[], None] = lambda: None,
                 on_priors_asked: Callable[[], None] = lambda: None) -> None:
        """``models``: the identity of every running model, by model id (one: that one);
        ``on_priors_asked`` wakes the prior fetcher."""
        self.config = config
        self.models = ({models.model_id: models} if isinstance(models, ModelIdentity)
                       else dict(models))
        self.device_id = device_id
        self.on_completed = on_completed
        self.on_priors_asked = on_priors_asked
        #: the kinds kept for the box's DICOMweb service (none when it is off)
        self.kept_kinds = set(config.dicomweb.keep) if config.dicomweb.enabled else set()
        self.kinds = sorted({kind for d in config.pacs.destinations for kind in d.send}
                            | self.kept_kinds)
        self.conn = db.connect(config.database_path)
        #: makes the documents in a child process (``dicom_out/maker.py``); none without a PACS
        self.maker = DocumentMaker(config.limits) if self.kinds else None
        #: documents made while a study settles, by study id: (the study's ``updated_at``
        #: then, what they were made from, the documents, what their headers needed)
        self.prepared: dict[int, tuple[float, str, list[Document], HeaderReport]] = {}
        #: completed studies whose documents could not be made, by study id: (the study
        #: as completed, the tries so far, when the next is due)
        self.unmade: dict[int, tuple[DueStudy, int, float]] = {}

    def documents(self, study: DueStudy, report: HeaderReport | None = None
                  ) -> list[Document]:
        """The study's result documents for this completion (none without destinations),
        made in the document maker's child process: highdicom never loads into the
        service. Those made while it settled (``prepare``) are taken as they are when
        they were made from what the study holds now. ``report`` receives the images
        left out and the changes made to the headers."""
        report = report if report is not None else HeaderReport()
        if self.maker is None:
            return []
        instances = self._instances(study)
        made_from = _made_from(study, instances)
        prepared = self.prepared.pop(study.id, None)
        if prepared is not None and prepared[1] == made_from:
            report.left_out.update(prepared[3].left_out)
            report.fixes.update(prepared[3].fixes)
            report.seg_left_out.update(prepared[3].seg_left_out)
            return prepared[2]
        return self._make(study, instances, report)

    def prepare(self, study: DueStudy) -> bool:
        """Make a settling study's documents ahead of its completion (kept in memory, not
        queued); False when those kept already match it or there is nothing to make."""
        if self.maker is None:
            return False
        kept = self.prepared.get(study.id)
        if kept is not None and kept[0] == study.updated_at:
            return False  # no result stored since: not even read again
        instances = self._instances(study)
        made_from = _made_from(study, instances)
        if kept is not None and kept[1] == made_from:
            return False
        self.prepared.pop(study.id, None)
        report = HeaderReport()
        documents = self._make(study, instances, report)
        self.prepared[study.id] = (study.updated_at, made_from, documents, report)
        return bool(documents)

    def _instances(self, study: DueStudy) -> list[AnalysedInstance]:
        """The study's analysed instances whose images are still on the box; the one whose
        lesions were compared with the patient's earlier study carries the comparison
        (``comparison``: ``storage/growth.py``), which its SR states."""
        try:
            compared = growth.study_growth(self.conn, study.id)
        except Exception:  # a comparison never holds the study's documents back
            log.exception("study %d: its lesions not compared for the SR", study.id)
            compared = None
        instances = []
        for path, result, heatmap in analysed_instances(self.conn, study.study_key):
            if not path.exists():
                continue
            if compared is not None and result.get("id") == compared.instance_id:
                result = {**result, "comparison": compared.to_dict()}
            instances.append(AnalysedInstance(path, result, heatmap))
        return instances

    def _make(self, study: DueStudy, instances: list[AnalysedInstance],
              report: HeaderReport) -> list[Document]:
        """The documents of ``instances`` for this version of the study, made in the child."""
        assert self.maker is not None
        if not instances or study.study_key.startswith("local:"):
            return []  # every image deleted by retention, or no Study Instance UID to refer to
        by_model: dict[str, list[AnalysedInstance]] = {}
        for instance in instances:
            by_model.setdefault(str(instance.result["model_id"]), []).append(instance)
        documents: list[Document] = []
        for model_id, analysed in by_model.items():  # one SR (SEG, key image) per model
            documents += self.maker.make(analysed, self.identity(model_id),
                                         device_id=self.device_id, version=study.version,
                                         kinds=self.kinds, report=report)
        return documents

    def identity(self, model_id: str) -> ModelIdentity:
        """The identity of the model that made a result: a running one's, or for a result of
        an earlier version no longer running, its name and version (a demonstration if its
        package name is a running demonstration's)."""
        if model_id in self.models:
            return self.models[model_id]
        name, _, version = model_id.partition("@")
        demo = any(m.demo for m in self.models.values() if m.name == name)
        return ModelIdentity(model_id=model_id, name=name, version=version,
                             finding_threshold=0.5, demo=demo)

    def complete(self, study: DueStudy) -> int:
        """Complete one study; return how many documents were queued.

        The completion is stamped with the time its results were read: a result
        stored after that makes the study due again (its next version).
        """
        started = time.time()
        if priors.fetched_for(self.conn, study.study_key) is not None:
            with db.transaction(self.conn):  # an earlier study, here to be compared with
                mark_completed(self.conn, study.id, started)
                priors.mark_alerts_done(self.conn, study.id, started)
            log.info("study %d complete (an earlier study: nothing sent)", study.id)
            return 0
        documents = self._documents_or_record(study, tries=0)
        rows = self._deliver(documents)
        report = self._report(study)  # made before the write lock is taken
        with db.transaction(self.conn):
            if report is not None:
                records.queue(self.conn, self.config, study.study_key, ReportKind.RESULT,
                              study.version, report)
            mark_completed(self.conn, study.id, started)
        log.info("study %d complete (version %d): %d DICOM result(s) queued", study.id,
                 study.version, len(rows))
        return len(rows)

    def _deliver(self, documents: list[Document]) -> list[int]:
        """Queue ``documents`` for the PACS destinations that want them and keep those of
        ``[dicomweb] keep``; the outbox's new row ids."""
        rows = enqueue_documents(self.conn, self.config.dicom_out_dir, documents,
                                 self.config.pacs.destinations)
        keep_documents(self.conn, self.config.kept_documents_dir, documents, self.kept_kinds)
        return rows

    def _report(self, study: DueStudy) -> dict[str, Any] | None:
        """The study's report for the clinic's information systems (None without a receiver);
        one that cannot be made is recorded, and the study completes all the same."""
        try:
            return records.report(self.conn, self.config, study.study_key, ReportKind.RESULT,
                                  lambda model_id: self.identity(model_id).demo)
        except Exception as exc:  # the report never holds the study's completion back
            log.exception("study %d: its report for the clinic's records was not made",
                          study.id)
            with db.transaction(self.conn):
                db.record_event(self.conn, "ERROR", "records",
                                f"study {study.id} v{study.version} report-not-queued "
                                f"{type(exc).__name__}",
                                event_codes.code(event_codes.RECORDS_NOT_QUEUED, study.id))
            return None

    def _documents_or_record(self, study: DueStudy, tries: int) -> list[Document]:
        """The study's documents, what their headers needed recorded as events; none when
        they could not be made (recorded, and kept in ``unmade`` to be tried again unless
        no image can be described or ``tries`` reached MAKE_RETRIES)."""
        report = HeaderReport()
        try:
            documents = self.documents(study, report)
        except Exception as exc:  # a document must never hold the study's alert back
            log.exception("study %d: DICOM results could not be made", study.id)
            self._record_report(study, report)
            hopeless = isinstance(exc, DocumentsNotMade) and "no-describable-instance" in str(exc)
            reason = "no-describable-instance" if hopeless else type(exc).__name__
            if hopeless or tries >= MAKE_RETRIES:
                self.unmade.pop(study.id, None)
                self._event("ERROR", study, event_codes.STUDY_RESULTS_HELD,
                            f"dicom-results-held {reason} tries={tries + 1} ({exc})", tries + 1)
            else:
                self.unmade[study.id] = (study, tries + 1,
                                         time.time() + RETRY_SECONDS * 2 ** tries)
                self._event("WARNING", study, event_codes.STUDY_RESULTS_NOT_MADE,
                            f"dicom-results-not-made {reason} tries={tries + 1} ({exc})",
                            tries + 1)
            return []
        self.unmade.pop(study.id, None)
        self._record_report(study, report)
        return documents

    def _record_report(self, study: DueStudy, report: HeaderReport) -> None:
        """The images left out of the study's documents (or of its SEG alone) and the changes
        made to the others' headers, as events (codes; a Type 2 attribute added empty is not
        worth one)."""
        if report.left_out:
            log.warning("study %d: images left out of the DICOM results: %s", study.id,
                        report.left_out)
            self._event("WARNING", study, event_codes.STUDY_LEFT_OUT, "left-out " + " ".join(
                f"{name}={code}" for name, code in sorted(report.left_out.items())))
        if report.seg_left_out:  # "not-in-seg": the line is not the study_left_out one
            log.warning("study %d: images left out of the DICOM SEG: %s", study.id,
                        report.seg_left_out)
            self._event("WARNING", study, event_codes.STUDY_SEG_LEFT_OUT, "not-in-seg " + " ".join(
                f"{name}={code}" for name, code in sorted(report.seg_left_out.items())))
        fixes = {name: [fix for fix in changed if not fix.endswith(ABSENT_TYPE2)]
                 for name, changed in report.fixes.items()}
        fixes = {name: changed for name, changed in fixes.items() if changed}
        if fixes:
            log.info("study %d: headers made fit for the DICOM results: %s", study.id, fixes)
            self._event("INFO", study, event_codes.STUDY_HEADER_FIXES,
                        "header-fixes " + " ".join(
                f"{name}={','.join(changed)}" for name, changed in sorted(fixes.items())))

    def _event(self, level: str, study: DueStudy, kind: str, what: str,
               *parts: object) -> None:
        """An event about ``study``: its English line and its code (``kind``, the study, its
        version and ``parts``)."""
        with db.transaction(self.conn):
            db.record_event(self.conn, level, EVENT_COMPONENT,
                            f"study {study.id} v{study.version} {what}",
                            event_codes.code(kind, study.id, study.version, *parts))

    def retry_unmade(self, now: float | None = None) -> int:
        """Try again to make the documents of completed studies whose documents could not be
        made, when due; queue what is made. How many studies were tried."""
        now = time.time() if now is None else now
        due = [(study, tries) for study, tries, at in self.unmade.values() if at <= now]
        for study, tries in due:
            documents = self._documents_or_record(study, tries)
            if documents:
                self._deliver(documents)
                self.on_completed()
        return len(due)

    def tick(self, now: float | None = None) -> int:
        """Complete every study due at ``now``, then make the documents of one study that
        is settling (one a tick: a study falling due waits behind at most one), then
        complete what fell due meanwhile; return how many were completed."""
        clock = time.time if now is None else (lambda: now)
        completed = self._complete_due(clock())
        self.retry_unmade(clock())
        self._keep_maker_ready()
        if self._prepare_one(clock()):
            completed += self._complete_due(clock())
        return completed

    def _complete_due(self, now: float) -> int:
        """Complete the studies due at ``now``; how many."""
        due = [study for study in studies_due(self.conn, now, self.config.studies.stable_seconds)
               if not self.waits_for_priors(study, now)]
        for study in due:
            self.complete(study)
        if due:
            self.on_completed()
        return len(due)

    def _prepare_one(self, now: float) -> bool:
        """Make the documents of the oldest settling study whose kept ones no longer match it
        (``prepare``); forget those of studies no longer settling. Whether one was made."""
        if self.maker is None:
            return False
        due, settling = studies_completing(self.conn, now, self.config.studies.stable_seconds)
        wanted = {s.id for s in settling} | {s.id for s in due}
        for gone in set(self.prepared) - wanted:
            del self.prepared[gone]  # completed, or holding an object again
        for study in settling:
            try:
                if self.prepare(study):
                    return True
            except Exception as exc:  # its completion makes them, or records why not
                log.warning("study %d: documents not made ahead (%s: %s)", study.id,
                            type(exc).__name__, exc)
                return True
        return False

    def waits_for_priors(self, study: DueStudy, now: float) -> bool:
        """Whether a due study waits for its earlier studies: with ``[priors]`` enabled, a
        study with a finding, at its first completion, opens its lookup and waits until the
        earlier studies are fetched and analysed (or none or no answer came), at most
        ``[priors] wait_seconds`` from the lookup's start."""
        settings = self.config.priors
        if (not settings.enabled or study.version > 1 or study.study_key.startswith("local:")
                or priors.fetched_for(self.conn, study.study_key) is not None
                or not priors.has_finding(self.conn, study.study_key)):
            return False
        found = priors.lookup(self.conn, study.study_key)
        if found is None:
            with db.transaction(self.conn):
                priors.ask(self.conn, study.study_key, now)
            self.on_priors_asked()
            return settings.wait_seconds > 0
        if abs(now - found.asked_at) >= settings.wait_seconds:  # a clock set back too
            return False
        return not found.ended or priors.still_waiting(self.conn, found.instance_ids) > 0

    def _keep_maker_ready(self) -> None:
        """Warm the document maker as soon as an object waits to be analysed or a study is
        pending (its first study then costs no start-up); stop it after a minute without
        either."""
        if self.maker is None:
            return
        if any_study_pending(self.conn):
            try:
                self.maker.warm()
            except Exception:  # a child that does not start is retried at completion
                log.exception("the DICOM document maker did not start")
        else:
            self.maker.stop_if_idle()

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop``; an error is logged and the next tick tries again."""
        interval = min(TICK_SECONDS, self.config.studies.stable_seconds / 4)
        try:
            while not stop.wait(interval):
                try:
                    self.tick()
                except Exception:  # keep the box running; the next tick retries
                    log.exception("study completion failed")
        finally:
            self.conn.close()
            if self.maker is not None:
                self.maker.close()


def _made_from(study: DueStudy, instances: list[AnalysedInstance]) -> str:
    """A digest of what a study's documents are made from: its version, and each analysed
    instance's file and stored result (a result stored again, a late instance or an image
    deleted changes it)."""
    digest = hashlib.sha256(f"{study.study_key}\0{study.version}".encode())
    for instance in instances:
        digest.update(str(instance.path).encode() + b"\0")
        digest.update(json.dumps(dict(instance.result), sort_keys=True, default=str).encode())
        if instance.heatmap is not None:
            digest.update(instance.heatmap.tobytes())
    return digest.hexdigest()
