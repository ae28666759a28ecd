"""The codes of the box's events (``events.code``): what a program reads back.

An event keeps its English line for the technician's log and ``journalctl``, and a code
that the device page and ``clinibox status`` say in the reader's language
(``firmware_app/words/event_words.py``). A code is a kind and its variable parts (ids, counts,
a name),
joined by ``:`` (``conflict:12:8f3a…``); the last part may hold ``:`` itself (an account
or AE title, a path). :func:`db.record_event_capped` counts a code by its kind.

The model's events (``lifecycle``) and what happened to one object (``object:…``) have codes
of their own (``telemetry.messages.lifecycle_code``, ``db.object_code``); the hospital's
downlink its ``downlink_…`` codes (``telemetry/downlink.py``).
"""

from __future__ import annotations

#: the link to the hospital's broker went down
LINK_DOWN = "link_down"
#: the telemetry outbox was full and dropped a message: ``outbox_dropped:<seq>:<max waiting>``
OUTBOX_DROPPED = "outbox_dropped"
#: a PACS destination failed: ``pacs_failed:<failure>[:<C-STORE status>]``
PACS_FAILED = "pacs_failed"
#: a PACS destination kept refusing a document, now held:
#: ``pacs_held:<refusals>:<failure>[:<C-STORE status>]``
PACS_HELD = "pacs_held"
#: a clinic information system failed: ``records_failed:<failure>[:<its answer>]``
RECORDS_FAILED = "records_failed"
#: a clinic information system kept refusing a report, now held:
#: ``records_held:<refusals>:<its answer>``
RECORDS_HELD = "records_held"
#: a study's report could not be queued for the clinic's records:
#: ``records_not_queued:<study id or verdict seq>``
RECORDS_NOT_QUEUED = "records_not_queued"
#: held reports queued again by a technician: ``records_requeued:<count>[:<receiver>]``
RECORDS_REQUEUED = "records_requeued"
#: a technician put a quarantined object back in the queue: ``requeued:<id>:<account>``
REQUEUED = "requeued"
#: a technician deleted a quarantined object: ``deleted:<id>:<account>``
DELETED = "deleted"
#: objects failed after repeated interrupted processing: ``interrupted:<count>``
INTERRUPTED = "interrupted"
#: a retention pass: ``retention:<images>:<bytes>:<disk still full 0/1>:<dry run 0/1>``
RETENTION = "retention"
#: audit rows not pruned because their chain is broken: ``audit_kept:<days>``
AUDIT_KEPT = "audit_kept"
#: held DICOM results queued again by a technician: ``dicom_requeued:<count>[:<destination>]``
DICOM_REQUEUED = "dicom_requeued"
#: a USB import did not finish in time: ``usb_unfinished:<device>``
USB_UNFINISHED = "usb_unfinished"
#: a USB import finished with a problem: ``usb_problem:<device>``
USB_PROBLEM = "usb_problem"
#: a DICOMDIR names a file missing on the medium: ``dicomdir_missing:<path>``
DICOMDIR_MISSING = "dicomdir_missing"
#: the same SOP Instance UID with other content, kept aside: ``conflict:<instance>:<local id>``
CONFLICT = "conflict"
#: a C-STORE refused: ``cstore_refused:<refusal>:<calling AE>``
CSTORE_REFUSED = "cstore_refused"
#: images left out of a study's DICOM results: ``study_left_out:<study>:<version>``
STUDY_LEFT_OUT = "study_left_out"
#: outlined images left out of a study's SEG alone (in its SR and key image; the rest of
#: the series still segmented): ``study_seg_left_out:<study>:<version>``
STUDY_SEG_LEFT_OUT = "study_seg_left_out"
#: headers changed to make a study's DICOM results: ``study_header_fixes:<study>:<version>``
STUDY_HEADER_FIXES = "study_header_fixes"
#: a study's DICOM results could not be made, tried again later:
#: ``study_results_not_made:<study>:<version>:<tries>``
STUDY_RESULTS_NOT_MADE = "study_results_not_made"
#: a study's DICOM results could not be made, not tried again:
#: ``study_results_held:<study>:<version>:<tries>``
STUDY_RESULTS_HELD = "study_results_held"
#: a model the routing rules name is not running: ``routed_model_down:<name>``
ROUTED_MODEL_DOWN = "routed_model_down"

#: the clock moved forward to the hospital's signed time: ``clock_moved:<minutes behind>``
CLOCK_MOVED = "clock_moved"
#: a time left for the clock's helper did not open as the hospital's: ``clock_refused:<reason>``
CLOCK_REFUSED = "clock_refused"

#: how a PACS destination failed (``pacs_failed``/``pacs_held``'s ``<failure>``)
PACS_UNREACHABLE = "unreachable"  # no connection (refused, no route, no answer)
PACS_TLS = "tls"  # the TLS set-up or handshake failed
PACS_REJECTED = "rejected"  # the PACS rejected the association
PACS_ABORTED = "aborted"  # the PACS aborted or ended the association request
PACS_NO_ANSWER = "no_answer"  # no answer in time
PACS_REFUSED = "refused"  # a C-STORE answered with a failure status
PACS_LOST = "lost"  # the association ended while sending
PACS_UNREADABLE = "unreadable"  # the box cannot read its own document file
PACS_CANNOT_SEND = "cannot_send"  # no accepted presentation context for the document
PACS_AUTH = "auth"  # STOW-RS: the service refused the box's user name or password (401, 403)
PACS_NO_SERVICE = "no_service"  # STOW-RS: no DICOMweb store at the url (404, 405, redirect)
PACS_SERVER_ERROR = "server_error"  # STOW-RS: the service failed or is busy (5xx, 408, 429)
PACS_PASSWORD_FILE = "password_file"  # STOW-RS: the box cannot use its password_file
PACS_UNCONFIRMED = "unconfirmed"  # STOW-RS: a 200/202 that does not name the document stored
#: why a PACS rejected the association (``pacs_failed:rejected:<why>``; none: another reason)
PACS_REJECTIONS = {(1, 3): "calling_ae", (1, 7): "called_ae", (3, 1): "busy", (3, 2): "busy"}
PACS_FAILURES = (PACS_UNREACHABLE, PACS_TLS, PACS_REJECTED, PACS_ABORTED, PACS_NO_ANSWER,
                 PACS_REFUSED, PACS_LOST, PACS_UNREADABLE, PACS_CANNOT_SEND, PACS_AUTH,
                 PACS_NO_SERVICE, PACS_SERVER_ERROR, PACS_PASSWORD_FILE, PACS_UNCONFIRMED)


#: PACS failures that do not end by themselves: a person must fix the set-up
PACS_SET_UP_FAILURES = frozenset({PACS_AUTH, PACS_NO_SERVICE, PACS_PASSWORD_FILE, PACS_TLS,
                                  PACS_UNCONFIRMED, PACS_CANNOT_SEND})


#: how a clinic information system failed (``records_failed``'s ``<failure>``)
RECORDS_UNREACHABLE = "unreachable"  # no connection (refused, no route)
RECORDS_NO_ANSWER = "no_answer"  # no answer in time
RECORDS_LOST = "lost"  # the connection ended while sending
RECORDS_NOT_ACK = "not_ack"  # HL7: the answer is not an ACK of the message sent
RECORDS_REFUSED = "refused"  # an HL7 AE or AR, a FHIR 4xx
RECORDS_TLS = "tls"  # the TLS handshake failed
RECORDS_AUTH = "auth"  # FHIR: the server refused the box's user or password (401, 403)
RECORDS_NO_SERVICE = "no_service"  # FHIR: no FHIR server at the url (404, 405, a redirect)
RECORDS_SERVER_ERROR = "server_error"  # FHIR: the server failed or is busy (5xx, 408, 429)
RECORDS_PASSWORD_FILE = "password_file"  # FHIR: the box cannot use its password_file
RECORDS_UNCONFIRMED = "unconfirmed"  # FHIR: a 2xx that does not confirm every entry
RECORDS_NOT_MADE = "not_made"  # the box could not write the message from the report
RECORDS_FAILURES = (RECORDS_UNREACHABLE, RECORDS_NO_ANSWER, RECORDS_LOST, RECORDS_NOT_ACK,
                    RECORDS_REFUSED, RECORDS_TLS, RECORDS_AUTH, RECORDS_NO_SERVICE,
                    RECORDS_SERVER_ERROR, RECORDS_PASSWORD_FILE, RECORDS_UNCONFIRMED,
                    RECORDS_NOT_MADE)
#: records failures a technician must mend (the address, the password, TLS, a wrong peer)
RECORDS_SET_UP_FAILURES = frozenset({RECORDS_AUTH, RECORDS_NO_SERVICE, RECORDS_PASSWORD_FILE,
                                     RECORDS_TLS, RECORDS_NOT_ACK, RECORDS_UNCONFIRMED})


def records_need_a_person(value: str | None) -> bool:
    """Whether a ``records_failed`` code is a set-up fault that retrying will not mend."""
    kind_, found = parts(value, 2)
    return kind_ == RECORDS_FAILED and bool(found) and found[0] in RECORDS_SET_UP_FAILURES


def pacs_needs_a_person(value: str | None) -> bool:
    """Whether a ``pacs_failed`` code is a set-up fault that retrying will not mend (the
    credentials, the address, the AE titles, TLS), not an outage that ends by itself."""
    kind_, found = parts(value, 2)
    if kind_ != PACS_FAILED or not found:
        return False
    why = found[1] if len(found) > 1 else ""
    if found[0] == PACS_REJECTED:
        return why in ("called_ae", "calling_ae")
    return found[0] in PACS_SET_UP_FAILURES


def code(kind: str, *parts: object) -> str:
    """An event code: ``kind`` and its parts, joined by ``:``."""
    return ":".join([kind, *(str(part) for part in parts)])


def parts(value: str | None, count: int) -> tuple[str, list[str]]:
    """A code's kind and at most ``count`` parts (the last one keeps any ``:``)."""
    kind, _, rest = (value or "").partition(":")
    return kind, (rest.split(":", count - 1) if rest and count else [])


def kind(value: str | None) -> str:
    """A code's kind (what ``record_event_capped`` counts)."""
    return (value or "").partition(":")[0]


def pacs_failure(failure: str, status: int | None = None) -> str:
    """``<failure>[:<status as 0xNNNN>]`` of a PACS failure's code."""
    return failure if status is None else f"{failure}:0x{status:04X}"


def pacs_rejection(source: object, diagnostic: object) -> str:
    """``rejected[:<why>]`` of an A-ASSOCIATE-RJ's result source and diagnostic."""
    why = PACS_REJECTIONS.get((source, diagnostic))
    return f"{PACS_REJECTED}:{why}" if why else PACS_REJECTED
