"""A study's DICOM results made in a limited child process, not in the service.

highdicom keeps the DICOM standard's module tables (a 22.6 MB JSON file,
about 60 MB of Python objects) for the life of the process that makes a
document, and the thread that made it keeps its malloc arena: made in the
service, the first study's SR, SEG and key image left it about 110 MB larger
for good (docs/decisions/0008-pacs-documents-in-a-child-made-ahead.md). The maker runs
``study_documents`` in a child of its own instead: the box's limited child
process (``imaging/sandbox.py``: an address-space and a time limit, no
network, a fresh interpreter). The child also reads the received objects'
headers, which come from whoever is on the clinic LAN.

The child is started (``warm``) while a study is still arriving, so that it
has imported highdicom and read its tables by the time the study is stable;
it is stopped after a minute without studies (``stop_if_idle``). Documents
come back encoded, are read here for their UIDs, and the outbox writes the
files as the child made them; with them comes what the headers needed (the
images left out and the changes made: ``source_header.HeaderReport``).
"""

from __future__ import annotations

import io
from collections.abc import Collection
from typing import Any

import numpy as np
import pydicom

from clinibox_common.errors import CliniboxError
from engine.imaging.sandbox import IDLE_SECONDS, DecodeSandbox
from engine.settings import LimitsConfig
from firmware_app.dicom_out.document import Document
from firmware_app.dicom_out.source import AnalysedInstance, ModelIdentity
from firmware_app.dicom_out.source_header import HeaderReport

_NOTHING = np.empty(0, np.uint8)


class DocumentsNotMade(CliniboxError):
    """The child could not make a study's documents; the reason says why."""

    kind = "DICOM results not made"

    def __init__(self, message: str, left_out: dict[str, str] | None = None) -> None:
        super().__init__(message)
        #: the images left out, by name, with their reason codes (all of them: none left)
        self.left_out = dict(left_out or {})


class DocumentMaker:
    """Makes study documents in a child process kept warm while studies arrive."""

    def __init__(self, limits: LimitsConfig) -> None:
        """The child's limits are the decoder's (``[limits]``)."""
        self.sandbox = DecodeSandbox(limits, role="DICOM document maker",
                                     activity="making the documents")

    def warm(self) -> None:
        """Start the child and have it load highdicom and its tables (once per child)."""
        if not self.sandbox.running:
            self.sandbox.call("firmware_app.dicom_out.maker:warm_up")

    def make(self, instances: list[AnalysedInstance], model: ModelIdentity, *,
             device_id: str, version: int, kinds: Collection[str],
             report: HeaderReport | None = None) -> list[Document]:
        """``study_documents`` for these arguments, made in the child (``report`` receives
        the images left out and the changes made to the headers)."""
        _, answer = self.sandbox.call("firmware_app.dicom_out.maker:make_encoded", instances,
                                      model, device_id, version, sorted(kinds))
        if report is not None:
            report.left_out.update(answer.get("left_out") or {})
            report.fixes.update(answer.get("fixes") or {})
            report.seg_left_out.update(answer.get("seg_left_out") or {})
        if answer["error"]:
            raise DocumentsNotMade(answer["error"], answer.get("left_out"))
        return [Document(kind, key, pydicom.dcmread(io.BytesIO(data)), data)
                for kind, key, data in answer["documents"]]

    def stop_if_idle(self, seconds: float = IDLE_SECONDS) -> bool:
        """Stop the child when it made nothing for ``seconds``; whether it was stopped."""
        return self.sandbox.stop_if_idle(seconds)

    def close(self) -> None:
        """End the child."""
        self.sandbox.close()


# -- in the child ------------------------------------------------------------------------


def warm_up() -> tuple[np.ndarray, dict[str, Any]]:
    """Import the document makers (every output's writer) and read highdicom's standard
    tables now."""
    import firmware_app.dicom_out.study_documents  # noqa: F401 (imported to be ready)
    from clinibox_common.contracts.dicom_outputs import output_keys
    from firmware_app.dicom_out.writers import writer

    for key in output_keys():
        writer(key)

    try:  # private to highdicom: only to have the tables read before the first study
        from highdicom._standard_utils import (
            get_iod_module_map,
            get_module_attribute_map,
            get_sop_class_iod_map,
        )
        get_sop_class_iod_map(), get_iod_module_map(), get_module_attribute_map()
    except (ImportError, AttributeError):  # a highdicom without them reads them when needed
        pass
    return _NOTHING, {}


def make_encoded(instances: list[AnalysedInstance], model: ModelIdentity, device_id: str,
                 version: int, kinds: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """The study's documents as DICOM files (kind, study key, bytes), or the reason they
    could not be made (returned, not raised: the child stays up)."""
    from firmware_app.dicom_out.outbox import encode
    from firmware_app.dicom_out.study_documents import study_documents

    report = HeaderReport()
    try:
        documents = study_documents(instances, model, device_id=device_id, version=version,
                                    kinds=kinds, report=report)
        return _NOTHING, {"error": "", "documents": [
            (d.kind, d.study_key, encode(d)) for d in documents],
            "left_out": report.left_out, "fixes": report.fixes,
            "seg_left_out": report.seg_left_out}
    except Exception as exc:  # the service records it; the study's alert still goes
        return _NOTHING, {"error": f"{type(exc).__name__}: {exc}"[:300], "documents": [],
                          "left_out": report.left_out, "fixes": report.fixes}
