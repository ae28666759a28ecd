"""One DICOM result document the box writes for a study (SR, SEG, key image, …).

The seam between what writes results (the writers of the table of DICOM outputs,
``contracts/dicom_outputs.py``, through ``writers.py``) and what delivers or exports
them (the DICOM outbox, the de-identified export).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import Dataset

from clinibox_common.contracts.dicom_outputs import DICOM_OUTPUTS, output_info, output_keys

#: the kinds of result document, as named in ``[[pacs.destinations]] send``: the keys of
#: the table of DICOM outputs when this module was imported (``output_keys()`` reads it now)
DOCUMENT_KINDS = output_keys()


@dataclass(frozen=True)
class Document:
    """A finished DICOM object: its kind, the study it belongs to and the dataset itself.

    ``study_key`` is the box's key for the study (its Study Instance UID, or
    ``local:<id>`` for an image that had none); ``dataset`` is ready to be
    written with ``dataset.save_as(path, enforce_file_format=True)``.
    """

    kind: str
    study_key: str
    dataset: Dataset
    #: the file as it was made, when it was made elsewhere (``dicom_out/maker.py``): written
    #: as it is rather than encoded again
    encoded: bytes | None = None

    def __post_init__(self) -> None:
        if self.kind not in DICOM_OUTPUTS:
            output_info(self.kind)  # ValueError naming the known kinds

    @property
    def sop_instance_uid(self) -> str:
        """The document's SOP Instance UID."""
        return str(self.dataset.SOPInstanceUID)

    @property
    def sop_class_uid(self) -> str:
        """The document's SOP Class UID."""
        return str(self.dataset.SOPClassUID)
