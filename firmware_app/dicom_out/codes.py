"""The coded concepts of the box's DICOM results, standard where a standard code exists.

Standard codes (SNOMED CT "SCT", DICOM "DCM", UCUM, UMLS) are taken from
pydicom's concept dictionary, which is generated from PS3.16, so a typo
cannot slip in. Where no standard code says what the box means, the box uses
its private coding scheme ``99CLINIBOX`` (PS3.16 8.2: private schemes begin
with "99"), named in every document's Coding Scheme Identification:

* a class or finding label without a standard code (``lesion`` and the
  classes ``benign``/``malignant`` have one; a package's other labels do not);
* the probability of such a class;
* the box's assessment of an image (``finding``, ``no_finding``,
  ``not_assessable``, ``outside_validated_range``: ``inference/assessment.py``);
* what a 3-D lesion's volume was read off (the masks, or estimated from the boxes);
* the statements a clinician must read (assists a doctor; demonstration model; the
  result of each image and of each series).
"""

from __future__ import annotations

import hashlib

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from clinibox_common.contracts.statuses import AssessmentKind

#: the box's private coding scheme designator
PRIVATE_SCHEME = "99CLINIBOX"
PRIVATE_SCHEME_NAME = "clinibox lesion-model results"

LONG_AXIS = codes.SCT.LongAxis  # SCT 103339001
SHORT_AXIS = codes.SCT.ShortAxis  # SCT 103340004
AREA = codes.SCT.Area  # SCT 42798000
VOLUME = codes.SCT.Volume  # SCT 118565006
#: how a 3-D lesion's volume is measured (CID 7474): each slice's area times the spacing;
#: its meaning in PS3.16 ("... method for volume", 74 characters) is cut to Code
#: Meaning's 64 (LO), the code value is DCM 122503's
VOLUME_FROM_SLICE_AREAS = CodedConcept(
    codes.DCM.IntegrationOfSumOfClosedAreasOnContiguousSlicesMethodForVolume.value, "DCM",
    "Integration of sum of closed areas on contiguous slices")
PROBABILITY = codes.DCM.Probability  # DCM 122157
PROBABILITY_OF_CANCER = codes.DCM.ProbabilityOfCancer  # DCM 111047
#: the class of a lesion: a morphology (SNOMED's "Associated morphology" attribute)
ASSOCIATED_MORPHOLOGY = codes.SCT.AssociatedMorphology  # SCT 116676008
LESION = codes.SCT.Lesion  # SCT 52988006
ABNORMAL_STRUCTURE = codes.SCT.MorphologicallyAbnormalStructure  # SCT 49755003
IMAGING_PROCEDURE = codes.SCT.ImagingProcedure  # SCT 363679005
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
ARTIFICIAL_INTELLIGENCE = codes.DCM.ArtificialIntelligence  # DCM 123110

MILLIMETRE = codes.UCUM.Millimeter
SQUARE_MILLIMETRE = codes.UCUM.SquareMillimeter
CUBIC_MILLIMETRE = codes.UCUM.CubicMillimeter  # "mm3"
#: a length or an area counted in the image's pixels (an uncalibrated image)
PIXELS = CodedConcept("{pixels}", "UCUM", "pixels")
NO_UNITS = codes.UCUM.NoUnits  # "1": a probability 0..1

#: labels with a standard code; the key is the model's label, lower case
_STANDARD_LABELS: dict[str, CodedConcept] = {
    "lesion": CodedConcept(*LESION),
    "benign": CodedConcept("3898006", "SCT", "Neoplasm, benign"),
    "malignant": CodedConcept(*codes.SCT.MalignantNeoplasmPrimary),  # SCT 86049000
}

ASSESSMENT = CodedConcept("ASSESSMENT", PRIVATE_SCHEME, "Assessment of the image by the model")
ASSESSMENTS: dict[str, CodedConcept] = {
    AssessmentKind.FINDING: CodedConcept("FINDING", PRIVATE_SCHEME,
                                         "Finding above the operating threshold"),
    AssessmentKind.NO_FINDING: CodedConcept("NO-FINDING", PRIVATE_SCHEME, "No finding"),
    AssessmentKind.NOT_ASSESSABLE: CodedConcept("NOT-ASSESSABLE", PRIVATE_SCHEME,
                                                "Not assessable; rescan suggested"),
    AssessmentKind.OUTSIDE_VALIDATED_RANGE: CodedConcept(
        "OUTSIDE-RANGE", PRIVATE_SCHEME, "Outside the model's validated range"),
}
#: what a 3-D lesion's volume was read off (``inference/volume.py``'s ``volume_from``)
VOLUME_BASIS = CodedConcept("VOLUME-BASIS", PRIVATE_SCHEME, "Volume measured on")
VOLUME_BASES: dict[str, CodedConcept] = {
    "mask": CodedConcept("MASKS", PRIVATE_SCHEME, "Lesion masks on each slice"),
    "box": CodedConcept("BOXES", PRIVATE_SCHEME,
                        "Estimated from lesion boxes on each slice (inscribed ellipses)"),
}
ASSIST_STATEMENT = CodedConcept("ASSIST", PRIVATE_SCHEME, "Decision support statement")
DEMO_STATEMENT = CodedConcept("DEMO", PRIVATE_SCHEME, "Demonstration model statement")
IMAGE_STATEMENT = CodedConcept("IMAGE-RESULT", PRIVATE_SCHEME, "Result for one image")
SERIES_STATEMENT = CodedConcept("SERIES-RESULT", PRIVATE_SCHEME, "Result for one series")
COMPARISON_STATEMENT = CodedConcept("PRIOR-COMPARISON", PRIVATE_SCHEME,
                                    "Comparison with an earlier study")


def coding_schemes() -> list[CodingSchemeIdentificationItem]:
    """The Coding Scheme Identification of the private scheme, for every result document."""
    return [CodingSchemeIdentificationItem(PRIVATE_SCHEME, name=PRIVATE_SCHEME_NAME,
                                           responsible_organization="clinibox")]


def label_concept(label: str) -> CodedConcept:
    """The coded concept of a finding or class label (standard, else ``99CLINIBOX``)."""
    known = _STANDARD_LABELS.get(label.strip().lower())
    if known is not None:
        return known
    return CodedConcept(_private_value("L", label), PRIVATE_SCHEME, label.strip()[:64] or "?")


def class_probability_concept(label: str) -> CodedConcept:
    """The concept of "probability of class ``label``" (DCM's probability of cancer for
    ``malignant``, else ``99CLINIBOX``)."""
    if label.strip().lower() == "malignant":
        return CodedConcept(*PROBABILITY_OF_CANCER)
    return CodedConcept(_private_value("P", label), PRIVATE_SCHEME,
                        f"Probability of {label.strip()[:48] or '?'}")


def _private_value(prefix: str, label: str) -> str:
    """A private code value for ``label`` within SH's 16 characters, stable across runs."""
    text = "".join(ch for ch in label.upper() if ch.isalnum() or ch == "-")
    if len(text) + 2 <= 16 and text:
        return f"{prefix}-{text}"
    return f"{prefix}-{hashlib.sha256(label.encode()).hexdigest()[:12].upper()}"
