"""A report as an HL7 v2.5.1 ORU^R01 message, and what the receiver's ACK says (hl7apy).

The message (UTF-8, ``MSH-18 UNICODE UTF-8``) holds:

* ``PID``: the patient's ID with its issuer (``PID-3``, type ``MR``), their name as the
  clinic's DICOM header wrote it (``PID-5``: the alphabetic group, then the ideographic one,
  each a repetition marked ``A`` or ``I`` in ``XPN-8``), birth date and sex;
* ``OBR``: the study as an order: the accession number as the placer's order number
  (``OBR-2``) and in ``OBR-18``, the Study Instance UID as the filler's (``OBR-3``), LOINC
  18748-4 *Diagnostic imaging study*, the study's date and time (``OBR-7``), when the
  report was made (``OBR-22``), the modality (``OBR-24``, diagnostic service section) and
  the result status (``OBR-25``): ``F`` final, ``C`` a correction of a report the receiver
  already has (a later version, the hospital's verdict);
* ``OBX``: the level (``ST``, a code of ``words.wording.verdict``: alert, finding,
  unassessable, outside, clear), the lesions counted (``NM``) and the largest diameter
  (``NM`` in ``mm``, UCUM) as numbers, then every sentence of the report (``TX``: the
  headline, summary, next step, findings, warnings, the hospital's verdict and note, the
  notice that it assists a doctor and, for a demonstration model, that it was trained on
  phantoms).

Free text is escaped (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``; a line break ends a sentence), so
a name or a note can never add a field or a segment.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from hl7apy.core import Message
from hl7apy.parser import parse_message

from clinibox_common.errors import CliniboxError
from firmware_app.records.content import sentences

#: the HL7 version the box writes
VERSION = "2.5.1"
#: the coding system of the box's own observation codes (OBX-3)
LOCAL_CODES = "CLINIBOX"
#: the study as an order (OBR-4): LOINC 18748-4 Diagnostic imaging study
STUDY_CODE = "18748-4^Diagnostic imaging study^LN"
#: each observation's code (OBX-3)
LEVEL_CODE = f"level^Result level^{LOCAL_CODES}"
LESIONS_CODE = f"lesions^Lesions counted^{LOCAL_CODES}"
SIZE_CODE = "21889-1^Size Tumor^LN"
TEXT_CODE = "59776-5^Procedure findings^LN"
REVIEW_CODE = f"review^Hospital review^{LOCAL_CODES}"

#: the most of one segment of an answer that is read
SEGMENT_AT_MOST = 1024
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def escape(text: object) -> str:
    """Free text as an HL7 value: the delimiters escaped, control characters (a line break
    too) made one space."""
    value = _CONTROL.sub(" ", str(text or "")).strip()
    for char, escaped in _ESCAPES:
        value = value.replace(char, escaped)
    return value


def hl7_time(epoch: float) -> str:
    """An epoch time as an HL7 DTM with its UTC offset (``YYYYMMDDHHMMSS+ZZZZ``)."""
    return dt.datetime.fromtimestamp(epoch).astimezone().strftime("%Y%m%d%H%M%S%z")


def person_name(value: str) -> list[str]:
    """A DICOM PN as HL7 XPN repetitions: family ^ given ^ middle ^ suffix ^ prefix, legal
    (``L``), the alphabetic group marked ``A`` and the ideographic ``I``."""
    reps = []
    for group, code in zip((value or "").split("="), ("A", "I", "P"), strict=False):
        family, given, middle, prefix, suffix = (group.split("^") + [""] * 5)[:5]
        if not any(part.strip() for part in (family, given, middle, prefix, suffix)):
            continue
        parts = [escape(p) for p in (family, given, middle, suffix, prefix)]
        reps.append("^".join([*parts, "", "L", code]))
    return reps


@dataclass(frozen=True)
class Sender:
    """Who sends and who receives (MSH-3 to MSH-6)."""

    application: str
    facility: str
    receiving_application: str = ""
    receiving_facility: str = ""


def oru_r01(content: dict[str, Any], *, control_id: str, sender: Sender, corrected: bool,
            patient_id_system: str = "", now: float | None = None) -> bytes:
    """The report ``content`` (``records/content.py``) as one ORU^R01 message, UTF-8 bytes
    with ``\\r`` between segments. ``corrected``: the receiver already has an earlier
    report of the study."""
    status = "C" if corrected else "F"
    study, patient, result = content["study"], content["patient"], content["result"]
    message = Message("ORU_R01", version=VERSION)
    msh = message.msh
    msh.msh_3 = escape(sender.application)
    msh.msh_4 = escape(sender.facility)
    msh.msh_5 = escape(sender.receiving_application)
    msh.msh_6 = escape(sender.receiving_facility)
    msh.msh_7 = hl7_time(content["made_at"] if now is None else now)
    msh.msh_9 = "ORU^R01^ORU_R01"
    msh.msh_10 = escape(control_id)
    msh.msh_11 = "P"
    msh.msh_12 = VERSION
    msh.msh_15 = "AL"
    msh.msh_16 = "NE"
    msh.msh_18 = "UNICODE UTF-8"
    group = message.add_group("ORU_R01_PATIENT_RESULT")
    pid = group.add_group("ORU_R01_PATIENT").pid
    pid.pid_1 = "1"
    issuer = escape(patient_id_system or patient["issuer"])
    pid.pid_3 = f"{escape(patient['id'])}^^^{issuer}^MR"
    for number, name in enumerate(person_name(patient["name"])):
        if number == 0:
            pid.pid_5 = name
        else:
            pid.add_field("PID_5").value = name
    pid.pid_7 = escape(patient["birth_date"])
    pid.pid_8 = escape(patient["sex"])
    order = group.add_group("ORU_R01_ORDER_OBSERVATION")
    obr = order.obr
    obr.obr_1 = "1"
    obr.obr_2 = escape(study["accession"])
    obr.obr_3 = f"{escape(study['uid'] or study['key'])}^{escape(sender.application)}"
    obr.obr_4 = STUDY_CODE
    obr.obr_7 = escape(study["date"] + study["time"].split(".")[0])
    obr.obr_18 = escape(study["accession"])
    obr.obr_22 = hl7_time(content["made_at"])
    obr.obr_24 = escape(study["modality"])
    obr.obr_25 = status
    observations = [("ST", LEVEL_CODE, "", escape(result["level"]), ""),
                    ("NM", LESIONS_CODE, "", str(int(result["lesions"])), "")]
    if result["largest_diameter"] is not None and result["units"] == "mm":
        observations.append(("NM", SIZE_CODE, "", f"{float(result['largest_diameter']):.1f}",
                             "mm^millimeter^UCUM"))
    review = content.get("review")
    if review:
        observations.append(("ST", REVIEW_CODE, "", escape(review["verdict"]), ""))
    counted: dict[str, int] = {}
    for part, sentence in sentences(content):  # each its own sub-ID: findings.1, findings.2 …
        counted[part] = counted.get(part, 0) + 1
        observations.append(("TX", TEXT_CODE, f"{part}.{counted[part]}", escape(sentence), ""))
    for number, (kind, code, sub_id, value, units) in enumerate(observations, start=1):
        obx = order.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1 = str(number)
        obx.obx_2 = kind
        obx.obx_3 = code
        if sub_id:
            obx.obx_4 = sub_id
        obx.obx_5 = value
        if units:
            obx.obx_6 = units
        obx.obx_11 = status
    return message.to_er7().encode("utf-8")


@dataclass(frozen=True)
class Acknowledgement:
    """What the receiver's ACK said about one message."""

    code: str  # MSA-1: AA/CA accepted, AE/CE an error, AR/CR rejected
    control_id: str  # MSA-2: the message it answers
    text: str  # MSA-3 and ERR's user message, if any

    @property
    def accepted(self) -> bool:
        """The receiver took the message."""
        return self.code in ("AA", "CA")


class NotAnAcknowledgement(CliniboxError, ValueError):
    """The answer is not an HL7 ACK the box can read."""


def read_acknowledgement(answer: bytes) -> Acknowledgement:
    """The MSA of the receiver's answer; NotAnAcknowledgement for anything else."""
    try:
        text = answer.decode("utf-8")
    except UnicodeDecodeError:
        text = answer.decode("latin-1")
    segments = [s for s in re.split(r"[\r\n]+", text.strip()) if s]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 8:
        raise NotAnAcknowledgement("the answer does not start with an MSH segment")
    # what is read of it: the header, the acknowledgement and a few errors, each cut short
    # (hl7apy's parsing costs seconds on a long segment of repetitions)
    acknowledgement = [s for s in segments[1:] if s[:3] == "MSA"][:1]
    errors = [s for s in segments[1:] if s[:3] == "ERR"][:3]
    kept = [segments[0], *acknowledgement, *errors]
    try:
        parsed = parse_message("\r".join(seg[:SEGMENT_AT_MOST] for seg in kept),
                               find_groups=False)
    except Exception as exc:  # hl7apy raises many kinds on a malformed message
        raise NotAnAcknowledgement(f"the answer is not HL7 ({type(exc).__name__})") from None
    found = [child for child in parsed.children if child.name == "MSA"]
    if not found:
        raise NotAnAcknowledgement("the answer has no MSA segment")
    msa = found[0]
    code = msa.msa_1.value.strip().upper()
    if code not in ("AA", "AE", "AR", "CA", "CE", "CR"):
        raise NotAnAcknowledgement(f"the answer's MSA-1 is not an acknowledgement code: "
                                   f"{code[:8]!r}")
    notes = [_field(msa, "msa_3")]
    notes += [_field(child, "err_8") for child in parsed.children if child.name == "ERR"]
    said = " ".join(n.strip() for n in notes if n and n.strip())
    printable = "".join(c if c.isprintable() else " " for c in said)  # no terminal escapes
    return Acknowledgement(code, _field(msa, "msa_2").strip(), printable[:200])


def _field(segment: Any, name: str) -> str:
    """A field's value as text ('' when the segment does not have it)."""
    try:
        return str(getattr(segment, name).value or "")
    except Exception:  # hl7apy raises its own errors for a field it cannot make
        return ""
