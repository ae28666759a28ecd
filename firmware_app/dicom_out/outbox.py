"""The DICOM outbox's entrance: result documents written durably, then queued per destination.

``enqueue_documents`` writes each document to ``<state_dir>/dicom_out/<SOP Instance
UID>.dcm`` (temporary file, fsync, rename, folder fsync) and only then adds its rows
(``storage.dicom_outbox.add_documents``) in the caller's transaction, so a row never
names a file that a power cut could take away. The sender (``sender.py``) does the
rest. A document already written (same SOP Instance UID) is not written again.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from clinibox_common.fs import write_bytes_atomically
from firmware_app.dicom_out.document import Document
from firmware_app.settings.pacs import PacsDestination
from firmware_app.storage.db import private_state_dir, transaction
from firmware_app.storage.dicom_outbox import DocumentFile, add_documents

#: result files are read by the service and its group (as the spool's images)
FILE_MODE = 0o640


def document_path(folder: Path, sop_instance_uid: str) -> Path:
    """Where the document with this SOP Instance UID waits in the outbox folder."""
    if not sop_instance_uid or not set(sop_instance_uid) <= set("0123456789."):
        raise ValueError(f"not a DICOM UID: {sop_instance_uid!r}")
    return Path(folder) / f"{sop_instance_uid}.dcm"


def encode(document: Document) -> bytes:
    """The document as a DICOM file (preamble, file meta information, data set)."""
    if document.encoded is not None:
        return document.encoded
    buffer = io.BytesIO()
    document.dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_documents(folder: Path, documents: Iterable[Document]) -> list[DocumentFile]:
    """Write each document durably (once per SOP Instance UID); describe the files for queuing.

    May run before the caller's transaction opens, so that the fsyncs do not hold
    the database's write lock.
    """
    folder = Path(folder)
    private_state_dir(folder)
    files: list[DocumentFile] = []
    for document in documents:
        path = document_path(folder, document.sop_instance_uid)
        if not path.exists():
            write_bytes_atomically(path, encode(document), FILE_MODE)
        files.append(DocumentFile(document.kind, document.study_key, document.sop_class_uid,
                                  document.sop_instance_uid, path))
    return files


def routes(destinations: Sequence[PacsDestination]) -> dict[str, list[str]]:
    """Each destination's name and the kinds of document it is sent."""
    return {d.name: list(d.send) for d in destinations}


def enqueue_documents(conn: sqlite3.Connection, folder: Path, documents: Iterable[Document],
                      destinations: Sequence[PacsDestination]) -> list[int]:
    """Queue ``documents`` for every destination that wants their kind; return the new row ids.

    Each wanted document is written durably under ``folder`` first, then its rows
    are added in the caller's open transaction (commit it, then wake the sender),
    or in a transaction of their own when none is open. Documents no destination
    wants are not written.
    """
    wanted = {kind for d in destinations for kind in d.send}
    chosen = [doc for doc in documents if doc.kind in wanted]
    if not chosen:
        return []
    files = write_documents(folder, chosen)
    if conn.in_transaction:
        return add_documents(conn, files, routes(destinations))
    with transaction(conn):
        return add_documents(conn, files, routes(destinations))
