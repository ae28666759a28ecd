"""The records outbox's failures in the reader's words: what ``clinibox status``, ``clinibox
records`` and the device page say of a clinic information system (``records <name>``'s
events, ``storage/event_codes.RECORDS_…``)."""

from __future__ import annotations

from clinibox_common.i18n import ENGLISH, N_, current, gettext
from firmware_app.storage import event_codes as codes

#: how a clinic information system failed (``records_failed:<failure>[:<answer>]``)
FAILURES = {
    codes.RECORDS_UNREACHABLE: N_("cannot reach the clinic's records system (check that it is "
                                  "on, and host and port)"),
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
WITH_ANSWER = N_("%(failure)s (answer %(answer)s)")
#: a held report (``records_held:<refusals>:<answer>``)
HELD = N_("the clinic's records system refused a report %(n)s times (answer %(answer)s): it "
          "is held and no longer sent")
NOT_MADE_HELD = N_("the box could not write a report as a message: it is held and no longer "
                   "sent")
NOT_QUEUED = N_("a study's report for the clinic's records could not be queued (see the log)")
REQUEUED = N_("%(n)s held report(s) for the clinic's records queued again")


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
