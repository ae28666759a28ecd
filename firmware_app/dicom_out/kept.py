"""The box's own copy of a study's result documents, for its DICOMweb service
(``[dicomweb] keep``): written durably under ``Config.kept_documents_dir`` and recorded in
``kept_documents`` (``storage/kept_documents.py``), the set before replaced."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path

from firmware_app.dicom_out.document import Document
from firmware_app.dicom_out.outbox import write_documents
from firmware_app.storage import kept_documents
from firmware_app.storage.db import transaction
from firmware_app.storage.kept_documents import KeptDocument

log = logging.getLogger(__name__)


def keep_documents(conn: sqlite3.Connection, folder: Path, documents: Sequence[Document],
                   kinds: Collection[str]) -> int:
    """Keep the documents of ``kinds`` among ``documents`` (one study's completion) as that
    study's set; how many. None of those kinds (documents that could not be made, a study
    without images): the set before stays."""
    chosen = [document for document in documents if document.kind in kinds]
    if not chosen:
        return 0
    study_key = chosen[0].study_key
    files = write_documents(folder, chosen)
    kept = [KeptDocument(document.sop_instance_uid, study_key,
                         str(document.dataset.SeriesInstanceUID), document.sop_class_uid,
                         document.kind, str(document.dataset.get("Modality", "")), file.path)
            for document, file in zip(chosen, files, strict=True)]
    with transaction(conn):
        replaced = kept_documents.replace(conn, study_key, kept)
    for path in replaced:
        path.unlink(missing_ok=True)
    log.info("study %s: %d result document(s) kept for DICOMweb", study_key, len(kept))
    return len(kept)
