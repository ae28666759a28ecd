"""The records outbox's failures in the reader's words: what ``clinibox status``, ``clinibox
records`` and the device page say of a clinic information system (``records <name>``'s
events, ``storage/event_codes.RECORDS_…``)."""

from __future__ import annotations

from clinibox_common.i18n import ENGLISH, N_, current, gettext
from firmware_app.storage import event_codes as codes

#: how a clinic information system failed (``records_failed:<failure>[:<answer>]``)
FAILURES = {
    codes.RECORDS_UNREACHABLE: N_("cannot reach the clinic's records system (check that it is "
                                  "on, the network, and host and port in the configuration); "
                                  "the box tries again"),
    codes.RECORDS_NO_ANSWER: N_("the clinic's records system did not answer in time; the box "
                                "tries again"),
    codes.RECORDS_LOST: N_("the connection to the clinic's records system was lost while "
                           "sending"),
    codes.RECORDS_NOT_ACK: N_("the clinic's records system answered something other than an "
                              "HL7 acknowledgement of the report (check host and port)"),
    codes.RECORDS_REFUSED: N_("the clinic's records system refused a report"),
    codes.RECORDS_TLS: N_("the secure connection (TLS) to the clinic's records system failed"),
    codes.RECORDS_AUTH: N_("the clinic's records system refused the box's user name or "
                           "password"),
    codes.RECORDS_NO_SERVICE: N_("there is no FHIR server at the configured address (check "
                                 "url)"),
    codes.RECORDS_SERVER_ERROR: N_("the clinic's records system failed or is busy; the box "
                                   "tries again"),
    codes.RECORDS_PASSWORD_FILE: N_("the box cannot use the password file it signs in to the "
                                    "clinic's records system with"),
    codes.RECORDS_UNCONFIRMED: N_("the clinic's records system answered without confirming "
                                  "the whole report; the box tries again"),
    codes.RECORDS_NOT_MADE: N_("the box could not write the report as a message"),
}
#: a failure with the receiver's answer (an HL7 AE or AR, an HTTP status)
WITH_ANSWER = N_("%(failure)s (its answer code: %(answer)s)")
#: a held report (``records_held:<refusals>:<answer>``)
HELD = N_("the clinic's records system refused a report %(n)s times (its answer code: "
          "%(answer)s): it is held (no longer sent again by itself)")
NOT_MADE_HELD = N_("the box could not write a report as a message: it is held (no longer sent "
                   "again by itself)")
NOT_QUEUED = N_("a study's report for the clinic's records could not be queued (see the log)")
REQUEUED = N_("%(n)s held report(s) for the clinic's records queued again")
#: how each receiver is sent its reports (``[[records.receivers]] protocol``)
PROTOCOLS = {"hl7-mllp": N_("HL7 v2 (MLLP)"), "fhir": N_("FHIR")}
#: why a report was sent (``ReportKind``)
REPORT_KINDS = {"result": N_("study result"), "verdict": N_("hospital's verdict (correction)")}


def words(code: str | None) -> str:
    """A ``records_…`` event code in the reader's words ("" when it is not one)."""
    kind = codes.kind(code)
    if kind == codes.RECORDS_FAILED:
        found = codes.parts(code, 2)[1]
        said = FAILURES.get(found[0]) if found else None
        if said is None:
            return ""
        answer = found[1] if len(found) > 1 else ""
        if answer and found[0] in (codes.RECORDS_REFUSED, codes.RECORDS_SERVER_ERROR):
            return gettext(WITH_ANSWER, failure=gettext(said), answer=answer)
        return gettext(said)
    if kind == codes.RECORDS_HELD:
        found = codes.parts(code, 2)[1]
        if len(found) < 2:
            return ""
        if found[1] == codes.RECORDS_NOT_MADE:
            return gettext(NOT_MADE_HELD)
        return gettext(HELD, n=found[0], answer=found[1])
    if kind == codes.RECORDS_NOT_QUEUED:
        return gettext(NOT_QUEUED)
    if kind == codes.RECORDS_REQUEUED:
        found = codes.parts(code, 2)[1]
        return gettext(REQUEUED, n=found[0]) if found else ""
    return ""


def error(code: str | None, recorded: str) -> str:
    """A receiver's last error: the recorded English line in English (it says more), the
    code's words in another language."""
    if current() == ENGLISH:
        return recorded
    return words(code) or gettext("sending to the clinic's records system failed")


def protocol(word: str) -> str:
    """A receiver's protocol as a name ("HL7 v2 (MLLP)", "FHIR"); the word itself when
    unknown."""
    name = PROTOCOLS.get(word)
    return gettext(name) if name else word


def report_kind(word: str) -> str:
    """Why a report was sent, in words; the word itself when unknown."""
    name = REPORT_KINDS.get(word)
    return gettext(name) if name else word


def receiver_said(recorded: str) -> str:
    """A refusal as the receiver worded it (its own words, in its language), introduced in
    the reader's."""
    return gettext("the receiver's own words: %(words)s", words=recorded) if recorded else ""
