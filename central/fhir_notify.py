"""The webhook's FHIR bodies (``[notify] format = "fhir"``): an alert as a FHIR R4
Communication, a verdict as a DiagnosticReport.

Each names the study by its keyed reference alone (``study_ref``, the box's keyed hash of
the Study Instance UID: ``urn:clinibox:study-ref``), never a patient: the hospital holds no
identifier, and the clinic's own systems join the reference to their patient. The alert's
console number is the resources' identifier (``urn:clinibox:alert``), so the verdict's
report names the alert it answers. Every body is checked against fhir.resources' R4B models
(its R4 line; decision 0053) before it is queued: a body the models refuse is never sent.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from clinibox_common.errors import CliniboxError

#: the systems of the identifiers and codes the bodies carry
STUDY_REF_SYSTEM = "urn:clinibox:study-ref"
ALERT_SYSTEM = "urn:clinibox:alert"
VERDICT_SYSTEM = "urn:clinibox:verdict"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/communication-category"
#: what the verdict's report is (LOINC: "Radiology Study observation (narrative)")
REPORT_CODE = {"system": "http://loinc.org", "code": "18782-3",
               "display": "Radiology Study observation (narrative)"}


class FhirBodyRefused(CliniboxError, ValueError):
    """A webhook body the FHIR models refuse (it is not queued)."""

    kind = "FHIR body refused"


def _instant(epoch: float) -> str:
    """An epoch time as a FHIR instant (UTC, seconds)."""
    return dt.datetime.fromtimestamp(float(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _study(study_ref: str) -> dict[str, Any]:
    """A reference to the study by its keyed reference alone."""
    return {"identifier": {"system": STUDY_REF_SYSTEM, "value": study_ref},
            "display": "clinibox study reference (no patient data)"}


def alert_communication(alert: dict[str, Any], console_url: str = "") -> dict[str, Any]:
    """A new alert as a Communication: what the box found, its clinic and box, the study's
    keyed reference and (when the console has a public address) the alert's page."""
    text = (f"clinibox alert {alert['id']}: {alert['finding']} at score "
            f"{float(alert['score']):.2f} (alert threshold {float(alert['threshold']):.2f}), "
            f"{alert['modality']}, model {alert['model']}, {int(alert['instances'])} image(s); "
            f"clinic {alert['clinic']}, box {alert['device']}")
    payload = [{"contentString": text}]
    if console_url:
        payload.append({"contentString": f"Review it at {console_url}"})
    return checked("Communication", {
        "resourceType": "Communication",
        "identifier": [{"system": ALERT_SYSTEM, "value": str(alert["id"])}],
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "alert"}]}],
        "priority": "urgent",
        "about": [_study(str(alert["study_ref"]))],
        "sent": _instant(alert["received_at"]),
        "payload": payload,
    })


def verdict_report(alert: dict[str, Any], verdict: str, follow_up_months: int | None,
                   reviewed_at: float, console_url: str = "") -> dict[str, Any]:
    """The hospital's verdict on an alert as a final DiagnosticReport about the study (by its
    keyed reference): the verdict as a code and a sentence, and when to follow up. The
    radiologist's note stays on the console (free text may name what must not leave it)."""
    conclusion = f"Hospital verdict: {verdict}"
    if follow_up_months is not None:
        conclusion += f", follow up in {int(follow_up_months)} month(s)"
    if console_url:
        conclusion += f" ({console_url})"
    return checked("DiagnosticReport", {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": ALERT_SYSTEM, "value": str(alert["id"])}],
        "status": "final",
        "code": {"coding": [REPORT_CODE], "text": "clinibox hospital review"},
        "imagingStudy": [_study(str(alert["study_ref"]))],
        "issued": _instant(reviewed_at),
        "conclusion": conclusion,
        "conclusionCode": [{"coding": [{"system": VERDICT_SYSTEM, "code": verdict}]}],
    })


def checked(kind: str, resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` once fhir.resources' R4B model of ``kind`` takes it; FhirBodyRefused
    otherwise (fhir.resources is the ``records`` extra, imported only here)."""
    if kind == "Communication":
        from fhir.resources.R4B.communication import Communication as Model
    else:
        from fhir.resources.R4B.diagnosticreport import DiagnosticReport as Model
    try:
        Model.model_validate(resource)
    except ValueError as exc:
        raise FhirBodyRefused(f"{kind}: {exc}") from exc
    return resource
