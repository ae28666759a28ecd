"""A study's lesions beside their earlier selves, and where the box's question to the PACS
stands, in the reader's language: the same sentences on the study page, in the printed
report and in the report to the clinic's records (``storage/growth.py``,
``storage/priors.py``)."""

from __future__ import annotations

from clinibox_common.i18n import N_, formats, gettext
from firmware_app.storage.growth import LesionGrowth, StudyGrowth
from firmware_app.storage.priors import PriorLookup, PriorLookupState
from firmware_app.words import labels
from firmware_app.words.wording import dicom_date

_ = gettext

#: why the PACS gave no earlier study, by ``storage.priors.FAILURE_REASONS`` code
FAILURE_WORDS = {
    "unreachable": N_("no connection to the PACS (check [priors] host, port and the network)"),
    "refused": N_("the PACS refused the box (it must know the box's AE title)"),
    "failed": N_("the PACS answered with an error"),
    "timeout": N_("the PACS did not answer in time"),
    "too_large": N_("the earlier studies were larger than [priors] allows"),
    "no_patient_id": N_("the study has no patient ID to ask with"),
}


def growth_line(growth: LesionGrowth, earlier_date: str) -> str:
    """One lesion against its earlier self, numbered as on the page."""
    values = {"n": growth.number, "label": labels.class_label(growth.label),
              "date": dicom_date(earlier_date) or _("the earlier study")}
    if not growth.seen_before:
        return _("Area %(n)d (%(label)s): not seen on the earlier study of %(date)s", **values)
    if growth.size_mm is None or growth.was_mm is None or growth.percent is None:
        return _("Area %(n)d (%(label)s): seen on the earlier study of %(date)s too (no size "
                 "in mm to compare)", **values)
    return _("Area %(n)d (%(label)s): %(size)s mm, was %(was)s mm on %(date)s (%(change)s)",
             size=formats.decimal(growth.size_mm), was=formats.decimal(growth.was_mm),
             change=formats.signed_percent(growth.percent), **values)


def growth_lines(growth: StudyGrowth | None) -> list[str]:
    """Each lesion of the study against its earlier self (none without an earlier study)."""
    if growth is None:
        return []
    return [growth_line(lesion, growth.earlier_date) for lesion in growth.lesions]


def lookup_line(found: PriorLookup | None) -> str:
    """Where the question to the PACS for earlier studies stands ("" when none was asked)."""
    if found is None:
        return ""
    if found.state is PriorLookupState.ASKING:
        return _("Asking the PACS for this patient's earlier studies.")
    if found.state is PriorLookupState.NONE:
        return _("The PACS holds no earlier study of this patient to compare with.")
    if found.state is PriorLookupState.FAILED:
        return _("No earlier study from the PACS: %(why)s.",
                 why=gettext(FAILURE_WORDS.get(found.reason, FAILURE_WORDS["failed"])))
    if found.reason:  # fetched, but not all of it: past a bound, or the PACS stopped
        return _("The PACS's earlier studies were fetched in part: %(why)s.",
                 why=gettext(FAILURE_WORDS.get(found.reason, FAILURE_WORDS["failed"])))
    return ""


def fetched_line(for_study_date: str) -> str:
    """On an earlier study's own page: why it is on the box."""
    return _("An earlier study, fetched from the PACS to compare with the study of %(date)s; "
             "its results are sent nowhere.", date=dicom_date(for_study_date) or "–")
