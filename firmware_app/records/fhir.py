"""A report as a FHIR R4 transaction Bundle: the patient, a DiagnosticReport and its
Observations, checked against the FHIR models (fhir.resources, its R4B models: the R4
line; Patient, DiagnosticReport, Observation and Bundle are as in R4 4.0.1).

* ``Patient``: created only if the server has none with the clinic's patient ID
  (``ifNoneExist``), never changed by the box: the clinic's record of the person is the
  clinic's. Its identifier's system is ``[records] patient_id_system``, else the image's
  Issuer of Patient ID (``urn:clinibox:issuer:<issuer>``), else ``urn:clinibox:patient-id``.
* ``DiagnosticReport``: one per study, put by its identifier (the Study Instance UID as
  ``urn:dicom:uid``), so a later version or the hospital's verdict replaces it: status
  ``final``, then ``corrected`` (a later version) or ``amended`` (with the hospital's
  verdict); LOINC 18748-4 *Diagnostic imaging study*, category RAD, the accession number
  as an ``ACSN`` identifier, the conclusion in the report's sentences, the whole text as a
  ``text/plain`` attachment in the report's language.
* ``Observation``: the level (a code of ``words.wording.verdict``), the lesions counted,
  the largest diameter in mm (LOINC 21889-1, UCUM), and the hospital's verdict; each put by
  an identifier made of the study and what it is, so it is replaced, never repeated.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any
from urllib.parse import quote

from fhir.resources.R4B.bundle import Bundle

from firmware_app.records.content import sentences

#: where the box's own codes and identifiers live
LOCAL_SYSTEM = "urn:clinibox"
DICOM_UID_SYSTEM = "urn:dicom:uid"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
#: the namespace of the box's urn:uuid fullUrls (a Bundle's entries refer to each other)
_NAMESPACE = uuid.UUID("6f1d2c1e-6a55-4b0e-9a53-3c1b0f2d7a11")
_GENDERS = {"F": "female", "M": "male", "O": "other"}


def patient_system(content: dict[str, Any], configured: str) -> str:
    """The system of the patient's identifier."""
    if configured:
        return configured
    issuer = content["patient"]["issuer"]
    return f"{LOCAL_SYSTEM}:issuer:{issuer}" if issuer else f"{LOCAL_SYSTEM}:patient-id"


def report_identifier(content: dict[str, Any]) -> tuple[str, str]:
    """The DiagnosticReport's identifier: the Study Instance UID, or the box's study key."""
    study = content["study"]
    if study["uid"]:
        return DICOM_UID_SYSTEM, f"urn:oid:{study['uid']}"
    return f"{LOCAL_SYSTEM}:study", study["key"]


def _fhir_date(value: str) -> str | None:
    """A DICOM DA (YYYYMMDD) as a FHIR date, None when it is no date (``00000000``, a 30th
    of February: a header's placeholder is left out, never the report)."""
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:8])).isoformat() \
            if len(value) == 8 and value.isdigit() else None
    except ValueError:
        return None


def _fhir_instant(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def _effective(study: dict[str, Any]) -> str | None:
    """The study's date (and time, with the box's UTC offset) as a FHIR dateTime; the date
    alone when the time is no time (``2400``, a leap second)."""
    day = _fhir_date(study["date"])
    if day is None:
        return None
    clock = study["time"].split(".")[0]
    if len(clock) >= 4 and clock.isdigit():
        try:
            moment = dt.datetime.fromisoformat(day).replace(
                hour=int(clock[:2]), minute=int(clock[2:4]),
                second=int(clock[4:6]) if len(clock) >= 6 else 0)
        except ValueError:
            return day
        return moment.astimezone().isoformat(timespec="seconds")
    return day


def search_value(system: str, value: str) -> str:
    """A token search parameter's value ``system|value`` for a conditional URL: FHIR's
    escapes (``\\ \\| \\, \\$``) in the value, then both percent-encoded, so an ID like
    ``12,34`` or ``A&x=1`` stays one value of one parameter."""
    for char in ("\\", "|", ",", "$"):
        value = value.replace(char, "\\" + char)
    return f"{quote(system, safe=':/')}|{quote(value, safe='')}"


def _names(value: str) -> list[dict[str, Any]]:
    """A DICOM PN as FHIR HumanNames: the alphabetic group, then the ideographic one."""
    names = []
    for group in (value or "").split("=")[:2]:
        family, given, middle, prefix, suffix = (group.split("^") + [""] * 5)[:5]
        if not (family.strip() or given.strip()):
            continue
        name: dict[str, Any] = {"use": "official", "family": family.strip()}
        given_names = [n.strip() for n in (given, middle) if n.strip()]
        if given_names:
            name["given"] = given_names
        if prefix.strip():
            name["prefix"] = [prefix.strip()]
        if suffix.strip():
            name["suffix"] = [suffix.strip()]
        names.append({k: v for k, v in name.items() if v})
    return names


def _url(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, chr(0).join(parts))}"


def bundle(content: dict[str, Any], *, corrected: bool, performer: str = "",
           patient_id_system: str = "") -> dict[str, Any]:
    """The report ``content`` (``records/content.py``) as a FHIR transaction Bundle (a
    dict that the FHIR models accept: ValueError when they do not)."""
    study, patient, result = content["study"], content["patient"], content["result"]
    system, value = report_identifier(content)
    review = content.get("review")
    status = "final" if not corrected else "amended" if review else "corrected"
    language = "zh-CN" if content["language"].startswith("zh") else "en"
    patient_url = _url("patient", study["key"])
    entries: list[dict[str, Any]] = []
    person: dict[str, Any] = {"resourceType": "Patient"}
    id_system = patient_system(content, patient_id_system)
    if patient["id"]:
        person["identifier"] = [{"use": "usual", "type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": id_system, "value": patient["id"]}]
    if _names(patient["name"]):
        person["name"] = _names(patient["name"])
    if _fhir_date(patient["birth_date"]):
        person["birthDate"] = _fhir_date(patient["birth_date"])
    person["gender"] = _GENDERS.get(patient["sex"], "unknown")
    if patient["id"]:  # created only if the server has no one with the clinic's ID
        entries.append({"fullUrl": patient_url, "resource": person, "request": {
            "method": "POST", "url": "Patient",
            "ifNoneExist": f"identifier={search_value(id_system, patient['id'])}"}})
        subject = {"reference": patient_url}
    else:  # no ID to find them by: described inside the report, never a new record
        person["id"] = "patient"
        subject = {"reference": "#patient"}

    observations: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("level", {"coding": [{"system": f"{LOCAL_SYSTEM}:observation", "code": "level",
                               "display": "Result level"}]},
         {"valueCodeableConcept": {"coding": [{"system": f"{LOCAL_SYSTEM}:level",
                                               "code": result["level"]}],
                                   "text": result["headline"]}}),
        ("lesions", {"coding": [{"system": f"{LOCAL_SYSTEM}:observation", "code": "lesions",
                                 "display": "Lesions counted"}]},
         {"valueInteger": int(result["lesions"])}),
    ]
    if result["largest_diameter"] is not None and result["units"] == "mm":
        observations.append((
            "largest-diameter", {"coding": [{"system": LOINC, "code": "21889-1",
                                             "display": "Size Tumor"}]},
            {"valueQuantity": {"value": round(float(result["largest_diameter"]), 1),
                               "unit": "mm", "system": UCUM, "code": "mm"}}))
    if review:
        observations.append((
            "hospital-review", {"coding": [{"system": f"{LOCAL_SYSTEM}:observation",
                                            "code": "hospital-review",
                                            "display": "Hospital review"}]},
            {"valueCodeableConcept": {"coding": [{"system": f"{LOCAL_SYSTEM}:verdict",
                                                  "code": review["verdict"]}],
                                      "text": review["headline"]}}))
    results = []
    for name, code, observed in observations:
        url = _url("observation", study["key"], name)
        identifier = f"{value}/{name}"
        entries.append({"fullUrl": url, "resource": {
            "resourceType": "Observation",
            "identifier": [{"system": f"{LOCAL_SYSTEM}:observation", "value": identifier}],
            "status": "amended" if corrected else "final",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "imaging"}]}],
            "code": code, **({"subject": subject} if patient["id"] else {}), **observed},
            "request": {"method": "PUT", "url": "Observation?identifier=" + search_value(
                f"{LOCAL_SYSTEM}:observation", identifier)}})
        results.append({"reference": url})

    text = "\n".join(line for _, line in sentences(content))
    conclusion = " ".join(line for part, line in sentences(content)
                          if part in ("headline", "summary", "next_step", "review"))
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "language": language,
        "identifier": [{"system": system, "value": value}],
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                  "code": "RAD", "display": "Radiology"}]}],
        "code": {"coding": [{"system": LOINC, "code": "18748-4",
                             "display": "Diagnostic imaging study"}]},
        "subject": subject,
        "issued": _fhir_instant(content["made_at"]),
        "result": results, "conclusion": conclusion,
        "presentedForm": [{"contentType": "text/plain; charset=utf-8", "language": language,
                           "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
                           "title": "clinibox"}],
    }
    if study["accession"]:
        report["identifier"].append({"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
            "value": study["accession"]})
    effective = _effective(study)
    if effective:
        report["effectiveDateTime"] = effective
    if performer:
        report["performer"] = [{"display": performer}]
    if not patient["id"]:
        report["contained"] = [person]
    entries.append({"fullUrl": _url("report", study["key"]), "resource": report,
                    "request": {"method": "PUT", "url": "DiagnosticReport?identifier="
                                                        + search_value(system, value)}})
    made = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    try:
        Bundle.model_validate(made)
    except Exception as exc:  # pydantic's ValidationError, or the models' own
        raise ValueError(f"the FHIR models refuse the report: {str(exc)[:300]}") from None
    return made


def encode(made: dict[str, Any]) -> bytes:
    """A Bundle as the request's body (JSON, UTF-8)."""
    return json.dumps(made, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
