"""Output keys → writers, imported lazily from the table of DICOM outputs.

The table is ``clinibox_common/contracts/dicom_outputs.py``: each row names its writer's
module and function. Every writer has one signature (``DocumentWriter``): it is given
one version of one study (``source.StudyInput``) and returns its documents as datasets,
none when there is nothing of its kind to say (no outlined lesion: no SEG). Only the
writers asked for are imported. ``write`` makes the documents of the kinds asked for,
in the table's order, and checks that each has a SOP class its row names.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from typing import Protocol

from pydicom import Dataset

from clinibox_common.contracts.dicom_outputs import (
    DICOM_OUTPUTS,
    output_info,
    output_keys,
    outputs,
)
from firmware_app.dicom_out.document import Document
from firmware_app.dicom_out.source import StudyInput


class DocumentWriter(Protocol):
    """The one signature of a DICOM output's writer."""

    def __call__(self, study: StudyInput) -> list[Dataset]:
        """The documents of one version of one study (empty: nothing of this kind)."""
        ...


def writer(key: str) -> DocumentWriter:
    """The writer of output ``key``, its module imported now (ValueError for an unknown key)."""
    info = output_info(key)
    module = importlib.import_module(info.module)
    found: DocumentWriter = getattr(module, info.function)
    return found


def check_kinds(kinds: Collection[str]) -> None:
    """ValueError when ``kinds`` names an output the table does not have."""
    unknown = sorted(set(kinds) - set(DICOM_OUTPUTS))
    if unknown:
        raise ValueError(f"unknown DICOM result kinds {unknown}; one of "
                         f"{', '.join(output_keys())}")


def write(kinds: Collection[str], study: StudyInput, study_key: str) -> list[Document]:
    """The documents of ``kinds`` for ``study``, kind by kind in the table's order."""
    check_kinds(kinds)
    documents: list[Document] = []
    for info in outputs():
        if info.key not in kinds:
            continue
        for dataset in writer(info.key)(study):
            sop_class = str(dataset.SOPClassUID)
            if sop_class not in info.sop_class_uids:
                raise ValueError(f"the {info.key} writer made a document of SOP class "
                                 f"{sop_class}, not one its row names {info.sop_class_uids}")
            documents.append(Document(info.key, study_key, dataset))
    return documents
