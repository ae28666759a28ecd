"""The box's stable words for states and kinds: one enumeration each, used everywhere.

Each member's value is EXACTLY the string the box has always stored in its
database, written in its JSON and sent in its forms, so nothing on disk
changed when these enumerations came: no data migration was needed, and a
member compares equal to its word (``InstanceStatus.QUEUED == "queued"``).
They are ``contracts/words.Word`` enumerations, whose ``str()`` and
``format()`` give the word itself, so a member may go wherever the word went.

The viewer's and the command line's words for them, in the reader's
language, are in ``firmware_app/words/labels.py`` (keyed by these members); where the
database's schema restricts a column with a ``CHECK``, a unit test
(``tests/unit/firmware_app/test_statuses.py``) keeps its set equal to the members' values.
The kinds of DICOM documents are in ``contracts/dicom_outputs.py``; reason
codes are not states and are not here.
"""

from __future__ import annotations

from clinibox_common.contracts.words import Word

__all__ = [
    "FINISHED_STATUSES",
    "HELD_STATUSES",
    "WAITING_STATUSES",
    "AssessmentKind",
    "DicomOutboxState",
    "ImportOutcome",
    "InstanceStatus",
    "LiveHint",
    "LiveKept",
    "LiveRequest",
    "LiveState",
    "OutboxState",
    "Role",
    "Verdict",
    "skipped",
]


class InstanceStatus(Word):
    """Where a received object (a row of ``instances``) stands: ``storage/queue.py``."""

    QUEUED = "queued"
    """Received and stored durably; waiting for the worker."""
    PROCESSING = "processing"
    """Claimed by the worker (back to queued at start-up if a crash interrupted it)."""
    PROCESSED = "processed"
    """Analysed by a model: it has a result."""
    QUARANTINED = "quarantined"
    """Broken or refused input, kept aside with its reason for a technician."""
    FAILED = "failed"
    """Analysis failed too often (errors or crashes); kept for a technician."""
    NOT_ANALYSED = "not_analysed"
    """A good image no model on the box is meant for (not quarantine: nothing is broken)."""


#: received and not yet settled: the worklist's "waiting for analysis"
WAITING_STATUSES = (InstanceStatus.QUEUED, InstanceStatus.PROCESSING)
#: held back for a technician (the quarantine list): never analysed, never sent to a PACS
HELD_STATUSES = (InstanceStatus.QUARANTINED, InstanceStatus.FAILED)
#: settled: the worker will not take the object again by itself
FINISHED_STATUSES = (InstanceStatus.PROCESSED, InstanceStatus.QUARANTINED,
                     InstanceStatus.FAILED, InstanceStatus.NOT_ANALYSED)


class AssessmentKind(Word):
    """What the box may say about an analysed image (``inference/assessment.py``)."""

    FINDING = "finding"
    """The model found something above its operating threshold."""
    NO_FINDING = "no_finding"
    """The model judged the image and found nothing."""
    NOT_ASSESSABLE = "not_assessable"
    """The image cannot be judged (blank, too dark, saturated, too small): rescan suggested."""
    OUTSIDE_VALIDATED_RANGE = "outside_validated_range"
    """The image is unlike what the model was validated on: neither alert nor no finding."""


class OutboxState(Word):
    """A telemetry message's state in the outbox (``storage/outbox.py``)."""

    PENDING = "pending"
    """Sealed and waiting to be published."""
    SENT = "sent"
    """Acknowledged by the broker (kept a while for the privacy audit)."""
    DROPPED = "dropped"
    """Given up: the outbox was over its limit and an older, lower-priority message went."""
    SUPERSEDED = "superseded"
    """A newer status message replaced it before it was sent."""
    WILL = "will"
    """The MQTT last-will registered with the broker (sent by the broker, not the box)."""


class RecordState(Word):
    """A study's report's state for one clinic information system (``storage/records_outbox``)."""

    PENDING = "pending"
    """Committed; waiting for (another) try."""
    SENT = "sent"
    """The receiver accepted it (an HL7 AA or CA, a FHIR transaction answered 2xx)."""
    SUPERSEDED = "superseded"
    """A newer report of the same study replaced it before it was sent."""
    HELD = "held"
    """The receiver refused it too often; waits for a technician (clinibox records retry)."""


class ReportKind(Word):
    """Why a report is sent to the clinic's information system."""

    RESULT = "result"
    """The box's result at a study's completion."""
    VERDICT = "verdict"
    """The hospital's verdict came: the report again with it (an amended report)."""


class PriorLookupState(Word):
    """Where a study's question to the PACS for its earlier studies stands
    (``storage/priors.py``)."""

    ASKING = "asking"
    """Waiting for the prior fetcher, or being asked now."""
    FETCHED = "fetched"
    """Earlier studies were found; those not on the box were fetched."""
    NONE = "none"
    """The PACS holds no earlier study of the patient that fits."""
    FAILED = "failed"
    """The PACS gave no usable answer (the lookup's ``reason`` says why, as a code)."""


class DicomOutboxState(Word):
    """A DICOM result's state for one PACS destination (``storage/dicom_outbox.py``)."""

    PENDING = "pending"
    """Written durably; waiting for (another) C-STORE attempt."""
    SENT = "sent"
    """The destination answered the C-STORE with Success."""
    SUPERSEDED = "superseded"
    """A newer version of the same document replaced it before it was sent."""
    HELD = "held"
    """The destination refused it too often; waits for a technician (dicom-out retry)."""


class Verdict(Word):
    """A clinician's verdict on a finding (``feedback``)."""

    AGREE = "agree"
    """The finding is right."""
    DISAGREE = "disagree"
    """The finding is wrong."""
    UNSURE = "unsure"
    """The clinician cannot tell."""


class Role(Word):
    """A viewer account's role (``storage/accounts.py``)."""

    CLINICIAN = "clinician"
    """Reads studies, gives verdicts, exports."""
    TECHNICIAN = "technician"
    """Looks after the box: quarantine, models, device pages, the audit trail."""


class ImportOutcome(Word):
    """What a USB or import-folder scan did with one file (``storage/imported_files.py``)."""

    ACCEPTED = "accepted"
    """Landed and queued."""
    DUPLICATE = "duplicate"
    """The box already holds this object."""
    QUARANTINED = "quarantined"
    """Landed but kept aside (unreadable, invalid UID, not what its name says)."""
    REFUSED = "refused"
    """Too large: never copied, a small quarantined record says why."""
    DICOMDIR_INDEX = "dicomdir index"
    """A DICOMDIR: an index of the medium's images, not an image."""
    SKIPPED = "skipped"
    """Not taken; stored as ``skipped: <why>`` (:func:`skipped`)."""


def skipped(why: str) -> str:
    """The stored outcome of a file not taken, with why: ``skipped: <why>``."""
    return f"{ImportOutcome.SKIPPED.value}: {why}"


class LiveState(Word):
    """Where a bedside live source stands (``firmware_app/live/``), as its page shows it."""

    STARTING = "starting"
    """The live process is opening the source and loading the model."""
    RUNNING = "running"
    """Frames arrive and are analysed."""
    DISCONNECTED = "disconnected"
    """The source cannot be opened or went away (a capture card unplugged, a stream gone);
    the box tries again."""
    STALLED = "stalled"
    """The source is open but no frame came for ``[live] stall_seconds``."""
    NETWORK_LOST = "network_lost"
    """A network stream (RTSP, UDP, HTTP) cannot be reached or stopped sending: the
    network, or the machine's (or its encoder's) streaming, not a cable to the box; the box
    tries again. A capture card or a file says ``disconnected`` or ``stalled``."""
    NO_SIGNAL = "no_signal"
    """Frames arrive but show nothing (the machine's output off, a card's blank screen)."""
    FROZEN = "frozen"
    """The picture has not changed for ``[live] frozen_seconds`` (the machine's freeze)."""
    NO_CONTACT = "no_contact"
    """The picture is too dark to read: the probe is not on the skin."""
    REFUSED = "refused"
    """The stream was refused: its frames are larger than ``[live] max_megapixels`` or it
    cannot be decoded."""
    DECODER_FAILED = "decoder_failed"
    """The live process ended (a decoder crash, its memory bound reached); restarted."""
    NO_MODEL = "no_model"
    """No model the box runs reads this source's modality."""
    STOPPED = "stopped"
    """Live mode is stopped (the service stopping)."""


class LiveHint(Word):
    """The plain hint a live frame carries for the sonographer."""

    NONE = "none"
    """Nothing to say."""
    HOLD_HERE = "hold_here"
    """A possible lesion, held for ``[live] hold_frames`` analysed frames: hold the probe."""
    OUTSIDE_VALIDATED_RANGE = "outside_validated_range"
    """The picture lies outside what the model was validated on: no finding is shown."""
    NOT_ASSESSABLE = "not_assessable"
    """The picture's quality allows no judgement (too dark, blank, saturated)."""


class LiveRequest(Word):
    """What a sonographer asked of an open live session (``live_requests``)."""

    KEY_FRAME = "key_frame"
    """Keep the frame shown now."""
    CLIP = "clip"
    """Keep the last ``[live] clip_seconds`` as a multi-frame clip."""


class LiveKept(Word):
    """What a live session kept (``live_kept``)."""

    KEY_FRAME = "key_frame"
    """The frame where a lesion was best seen (or the frame asked for)."""
    CLIP = "clip"
    """A short multi-frame clip."""
