"""The Basic Application Level Confidentiality Profile beyond what dicognito does.

dicognito (``deidentify.py``) replaces every UID but class and transfer syntax
UIDs, every person name, the usual identifiers (patient id, accession number,
study id, station name, order and procedure-step numbers), the patient's
address and the institution, and shifts every date, date-time and paired time
by one offset. PS3.15 Annex E (Table E.1-1) asks for more; these rules apply it
after dicognito, at every level of the data set (sequences included):

* private attributes, curves (groups 50xx) and overlays (groups 60xx) removed;
* free text removed: every LO, SH, ST, LT, UT and UC value (descriptions,
  comments, institution and department, device serial number, protocol,
  patient history …) except coded-entry fields, the content of a structured
  report (Clean Structured Content Option: the box's SR holds findings, never
  free text about the patient) and the identifiers dicognito replaced with
  consistent dummies; the few text fields other objects require get a dummy;
* application entity titles, URLs, ages and values of unknown type removed;
* Other Patient IDs, Referenced Patient, Request Attributes, the physicians',
  operators' and institution's identification sequences and the like removed;
* patient characteristics: sex emptied; size, weight and the like removed;
  birth date emptied, birth time removed;
* names: the patient's and the referring physician's emptied, every other
  name at the top level removed (names inside a report's content keep
  dicognito's dummies, as the report requires a value);
* times whose date is absent (so dicognito left them) emptied.
"""

from __future__ import annotations

from pydicom import DataElement, Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.sequence import Sequence

#: value representations of free text: removed unless listed in :data:`KEEP_TEXT`
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
#: value representations removed wherever they appear
REMOVED_VRS = frozenset({"AE", "UR", "AS", "UN"})
#: text that is kept: coded entries, report content, and dicognito's consistent dummy ids
KEEP_TEXT = frozenset({
    # coded entries (anatomy, units, the report's concepts)
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",
    "LongCodeValue", "CodingSchemeName", "CodingSchemeResponsibleOrganization",
    # the report's own content items (Clean Structured Content Option)
    "TextValue",
    # segmentation: what each segment is, and the algorithm that made it
    "SegmentLabel", "AlgorithmName", "AlgorithmVersion",
    # replaced by dicognito with dummies, consistent across one export
    "PatientID", "AccessionNumber", "StudyID",
    # equipment make and software, not a person or a place
    "Manufacturer", "ManufacturerModelName", "SoftwareVersions",
    # how to display the pixels
    "WindowCenterWidthExplanation", "RescaleType", "LUTExplanation",
})
#: text some objects require (Type 1): a dummy instead of the value
DUMMY_TEXT = {"DeviceSerialNumber": "0", "VerifyingOrganization": "DEIDENTIFIED"}
#: sequences removed wherever they appear
REMOVED_SEQUENCES = frozenset({
    "OtherPatientIDsSequence", "ReferencedPatientSequence", "RequestAttributesSequence",
    "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence",
    "ReferencedPatientAliasSequence", "ReferencedPatientPhotoSequence",
    "ReferringPhysicianIdentificationSequence", "ConsultingPhysicianIdentificationSequence",
    "PerformingPhysicianIdentificationSequence", "OperatorIdentificationSequence",
    "PhysiciansOfRecordIdentificationSequence", "PhysiciansReadingStudyIdentificationSequence",
    "RequestingPhysicianIdentificationSequence", "InstitutionCodeSequence",
    "InstitutionalDepartmentTypeCodeSequence", "PatientInsurancePlanCodeSequence",
    "IssuerOfPatientIDQualifiersSequence", "IssuerOfAccessionNumberSequence",
    "AdmittingDiagnosesCodeSequence", "PatientPrimaryLanguageCodeSequence",
    "ProcedureCodeSequence", "RequestedProcedureCodeSequence",
    "ScheduledProcedureStepSequence", "PerformedProcedureStepDiscontinuationReasonCodeSequence",
    "PersonIdentificationCodeSequence", "PatientTelecomInformation",
})
#: patient characteristics and other non-text attributes removed (X)
REMOVED_ATTRIBUTES = frozenset({
    "PatientBirthTime", "PatientSize", "PatientWeight", "PregnancyStatus", "SmokingStatus",
    "PatientSexNeutered", "LastMenstrualDate", "TimezoneOffsetFromUTC", "PatientAge",
    "InstanceCreatorUID", "ResponsiblePersonRole",
})
#: attributes kept present with no value (Z)
EMPTIED_ATTRIBUTES = frozenset({
    "PatientName", "ReferringPhysicianName", "PatientBirthDate", "PatientSex",
    "ContentCreatorName",
})


def apply_basic_profile(ds: Dataset) -> None:
    """Apply the rules of the module to ``ds`` in place (after dicognito)."""
    ds.remove_private_tags()
    for tag in [e.tag for e in ds if 0x5000 <= e.tag.group <= 0x50FF or
                0x6000 <= e.tag.group <= 0x60FF]:
        del ds[tag]
    _clean(ds, top_level=True)


def _clean(ds: Dataset, *, top_level: bool) -> None:
    """One level of the data set, then every item of its sequences."""
    for tag in list(ds.keys()):
        element = ds[tag]
        action = _action(ds, element, top_level)
        if action == "remove":
            del ds[tag]
        elif action == "empty":
            element.value = None
        elif action == "dummy":
            element.value = DUMMY_TEXT[element.keyword]
        elif element.VR == "SQ" and isinstance(element.value, Sequence):
            for item in element.value:
                _clean(item, top_level=False)


def _action(ds: Dataset, element: DataElement, top_level: bool) -> str:
    """What happens to one element: "remove", "empty", "dummy" or "keep"."""
    keyword = element.keyword or keyword_for_tag(element.tag)
    if element.tag.is_private or keyword in REMOVED_ATTRIBUTES or keyword in REMOVED_SEQUENCES:
        return "remove"
    if element.VR in REMOVED_VRS:
        return "remove"
    if keyword in EMPTIED_ATTRIBUTES:
        return "empty"
    if keyword in DUMMY_TEXT:
        return "dummy"
    if element.VR in TEXT_VRS and keyword not in KEEP_TEXT:
        return "remove"
    if element.VR == "PN" and top_level:
        return "remove"
    if element.VR == "TM" and element.value and not _has_date(ds, keyword):
        return "empty"
    return "keep"


def _has_date(ds: Dataset, time_keyword: str) -> bool:
    """Whether the time's own date has a value (dicognito then shifted the time with it)."""
    if not time_keyword or "Time" not in time_keyword:
        return False
    return bool(ds.get(time_keyword.replace("Time", "Date")))
