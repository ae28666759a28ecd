"""What a C-STORE is answered: land the received data set, then say how it went.

One rule for both DICOM receivers (pynetdicom in ``dicom_scp``, the native front in
``native_receiver``): Success only once the object and its queue row are durable;
anything that stopped it from being stored answers a failure status, so the modality
keeps the object and sends it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from firmware_app.ingest.landing import Lander, Outcome
from firmware_app.storage.spool import SpoolFull

log = logging.getLogger(__name__)

# DICOM status codes (PS3.4 Annex B, PS3.7 Annex C)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


def answer_store(lander: Lander, received: Path, *, sop_instance_uid: str | None,
                 calling: str | None, on_stored: Callable[[], None] | None = None) -> int:
    """Land a data set already written to ``received`` (in the spool's ``tmp`` folder) and
    return the status for its C-STORE response; ``on_stored`` is called for a new object."""
    try:
        landed = lander.land_file(received, sop_instance_uid=sop_instance_uid or None,
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
