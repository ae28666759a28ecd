"""What a report to the clinic's information system says: one study's result, with the
patient as the clinic knows them, and the hospital's verdict once one came.

The sentences are the study page's and the printed report's (``words.wording``,
``words.review_words``) in the report's language, so the records, the page and the PDF
cannot disagree; the numbers beside them (the level, the lesions and their largest size,
the verdict's code) are what a program reads back. The patient's birth date, sex, the
issuer of their ID and the study's accession number come from the header of the study's
most suspicious image (the worklist's accession number where the modality copied it there),
read while the image is still on the box.

The content is stored as JSON in the records outbox (``storage/records_outbox.py``); the
HL7 v2 message (``records/hl7.py``) and the FHIR Bundle (``records/fhir.py``) are made from
it and from nothing else.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from clinibox_common import i18n
from clinibox_common.contracts.statuses import ReportKind
from clinibox_common.errors import CliniboxError
from firmware_app.storage import growth, hospital_reviews
from firmware_app.storage import studies as queries
from firmware_app.words import growth_words, wording
from firmware_app.words.review_words import words_of

log = logging.getLogger(__name__)

#: the header attributes a report takes from the study's most suspicious image
HEADER_KEYWORDS = ("PatientBirthDate", "PatientSex", "IssuerOfPatientID", "AccessionNumber",
                   "StudyTime", "StudyDate")
#: the content's format: a report made by another version is read by what it says it is
CONTENT_VERSION = 1


#: what each kind of sentence is (HL7 OBX-4, the sub-ID)
TEXT_PARTS = ("headline", "summary", "next_step", "findings", "warnings", "review",
              "notice")


class NoSuchStudy(CliniboxError, LookupError):
    """The study is not (or no longer) on the box."""


def header_facts(path: str | Path) -> dict[str, str]:
    """The patient's birth date, sex and ID issuer and the study's accession number, date and
    time from an image's header ('' where absent, unreadable or the file is gone)."""
    facts = dict.fromkeys(HEADER_KEYWORDS, "")
    try:
        dataset = dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_KEYWORDS))
    except (OSError, InvalidDicomError, ValueError) as exc:
        log.info("report: the header of %s is not readable (%s); its facts are left empty",
                 path, type(exc).__name__)
        return facts
    for keyword in HEADER_KEYWORDS:
        try:
            value = dataset.get(keyword, "")
        except (ValueError, TypeError):  # a value pydicom cannot decode: left out
            value = ""
        facts[keyword] = str(value or "").strip()
    return facts


def study_content(conn: sqlite3.Connection, study_key: str, *, language: str,
                  is_demo: Callable[[str], bool], kind: str = ReportKind.RESULT,
                  made_at: float | None = None) -> dict[str, Any]:
    """The report of ``study_key`` as it stands now, its sentences in ``language``;
    NoSuchStudy when the box has no such study. ``is_demo`` says whether a model id is a
    demonstration model's (trained on phantoms: the report says so)."""
    found_id = queries.study_id(conn, study_key)
    found = None if found_id is None else queries.study(conn, found_id)
    if found is None or not found["instances"]:
        raise NoSuchStudy(study_key)
    instances = found["instances"]
    top = instances[0]
    header = header_facts(top.spool_path)
    models = sorted({i.model_id for i in instances})
    demo = any(is_demo(model) for model in models)
    review = hospital_reviews.latest(conn, study_key)
    summary = found["summary"]
    with i18n.use_locale(language):
        unjudged = next((i for i in instances if not i.judged), None)
        level, headline = wording.verdict(
            found["alert"], bool(found["findings"]),
            unjudged.assessment if unjudged else "",
            unjudged.assessment_reason if unjudged else "")
        volumes = found["volumes"]
        findings = wording.volume_lines(volumes)
        if not volumes.in_volume(top.id) and top.image_rows and top.image_columns:
            findings += (wording.finding_lines(top.boxes, top.image_rows, top.image_columns,
                                               top.lesions)
                         + wording.other_frame_lines(top.boxes, top.lesions))
        compared = growth.study_growth(conn, found_id)
        findings += growth_words.growth_lines(compared)
        notice = wording.assist_notice()
        if demo:
            notice = i18n.gettext("%(notice)s Model: %(use)s", notice=notice,
                                  use=wording.intended_use(wording.KNOWN_INTENDED_USES[0]))
        said = words_of(review) if review is not None else None
        content: dict[str, Any] = {
            "format": CONTENT_VERSION, "kind": str(kind), "language": language,
            "made_at": time.time() if made_at is None else made_at,
            "study": {
                "key": study_key, "uid": "" if study_key.startswith("local:") else study_key,
                "date": found["study_date"] or header["StudyDate"],
                "time": header["StudyTime"], "modality": found["modality"] or "",
                "description": found["study_description"] or "",
                "accession": header["AccessionNumber"], "images": len(instances)},
            "patient": {
                "name": found["patient_name"] or "", "id": found["patient_id"] or "",
                "issuer": header["IssuerOfPatientID"], "birth_date": header["PatientBirthDate"],
                "sex": header["PatientSex"].upper()[:1]},
            "result": {
                "level": level, "headline": headline,
                "summary": wording.study_summary(summary),
                "next_step": wording.next_step(level, summary["lesions"] > 0),
                "findings": findings or [wording.no_marks(top.judged)],
                "warnings": sorted({wording.warning_text(w) for i in instances
                                    for w in i.warnings}),
                "lesions": int(summary["lesions"]),
                "largest_diameter": summary.get("largest_diameter"),
                "units": summary.get("units") or "",
                "suspicion": found["suspicion"],
                "growth": None if compared is None else compared.to_dict()},
            "models": models, "demo": demo, "notice": notice,
            "review": None if review is None or said is None else {
                "verdict": review.verdict, "follow_up_months": review.follow_up_months,
                "reviewed_at": review.reviewed_at, "late": review.late, "seq": review.seq,
                "headline": said.headline, "when": said.when, "note": said.note},
        }
    return content


def sentences(content: dict[str, Any]) -> list[tuple[str, str]]:
    """Every sentence of the report in order, each with what it is (``TEXT_PARTS``)."""
    result = content["result"]
    said: list[tuple[str, str]] = [("headline", result["headline"])]
    for part in ("summary", "next_step"):
        if result.get(part):
            said.append((part, result[part]))
    said += [("findings", line) for line in result["findings"]]
    said += [("warnings", line) for line in result["warnings"]]
    review = content.get("review")
    if review:
        said += [("review", line) for line in (review["headline"], review["when"],
                                               review["note"]) if line]
    said.append(("notice", content["notice"]))
    return [(part, line) for part, line in said if str(line).strip()]
