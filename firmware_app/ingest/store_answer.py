"""What a C-STORE is answered: check the received data set, land it, then say how it went.

One rule for both DICOM receivers (pynetdicom in ``dicom_scp``, the native front in
``native_receiver``): a data set that fails ``store_checks`` (no or invalid UIDs, UIDs
other than the command's, no study or series, cut short) is refused with the status
Orthanc answers and is not stored (its file is removed; the log names the reason code,
and the event log keeps it for the technician, throttled: ``Lander.note_refused``), and
the association goes on; an accepted one is stored under
its own SOP Instance UID (the command's, by the checks). Success only once the object
and its queue row are durable; anything that stopped it from being stored answers a
failure status, so the modality keeps the object and sends it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from firmware_app.ingest.landing import Lander, Outcome
from firmware_app.ingest.store_checks import (
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    check_received,
)
from firmware_app.storage.spool import SpoolFull

log = logging.getLogger(__name__)

# DICOM status codes (PS3.4 Annex B, PS3.7 Annex C)
SUCCESS = 0x0000
__all__ = ["CANNOT_UNDERSTAND", "OUT_OF_RESOURCES", "SUCCESS", "answer_store"]


def answer_store(lander: Lander, received: Path, *, sop_instance_uid: str | None,
                 sop_class_uid: str | None, calling: str | None,
                 on_stored: Callable[[], None] | None = None) -> int:
    """Check, then land a data set already written to ``received`` (in the spool's ``tmp``
    folder) and return the status for its C-STORE response. ``sop_instance_uid`` and
    ``sop_class_uid`` are the command's Affected ones; ``on_stored`` is called for a new
    object."""
    try:
        verdict = check_received(received, command_instance_uid=sop_instance_uid,
                                 command_class_uid=sop_class_uid)
        if verdict.refusal is not None:
            received.unlink(missing_ok=True)
            log.warning("C-STORE refused: reason=%s calling=%r", verdict.refusal.value,
                        calling)
            lander.note_refused(verdict.refusal.value, calling)
            return verdict.refusal.status
        landed = lander.land_file(received, sop_instance_uid=verdict.sop_instance_uid,
                                  source="dicom", origin=calling)
    except SpoolFull as exc:
        log.error("C-STORE refused, out of resources: %s", exc)
        return OUT_OF_RESOURCES
    except OSError as exc:
        log.error("C-STORE refused, could not store: %s", exc)
        return OUT_OF_RESOURCES
    except Exception as exc:
        log.exception("C-STORE refused: %s", exc)
        return CANNOT_UNDERSTAND
    if landed.outcome is Outcome.ACCEPTED and on_stored:
        on_stored()
    return SUCCESS
