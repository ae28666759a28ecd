"""One study's DICOM results for the PACS: the SR, the SEG objects and the key image.

The one entry the study completion calls (in the worker process, on files
the box already decoded successfully). The headers are read with pydicom;
only the key image decodes pixels (one frame).
"""

from __future__ import annotations

from collections.abc import Collection

import pydicom

from firmware_app.dicom_out.document import DOCUMENT_KINDS, Document
from firmware_app.dicom_out.key_image import key_image
from firmware_app.dicom_out.seg import segmentations
from firmware_app.dicom_out.source import AnalysedInstance, ModelIdentity, ResultIds, Source
from firmware_app.dicom_out.sr import predecessor_reference, structured_report

__all__ = ["AnalysedInstance", "ModelIdentity", "study_documents"]


def study_documents(instances: list[AnalysedInstance], model: ModelIdentity, *, device_id: str,
                    version: int, kinds: Collection[str],
                    predecessor: Document | None = None) -> list[Document]:
    """The documents of ``kinds`` ("sr", "seg", "key_image") for version ``version`` of a study.

    ``instances`` are the study's analysed images (one study, in the order the
    SR lists them). Version 1 is the first report of a study; a study updated
    by late images gets version 2, 3, …, whose SR names the previous version
    in Predecessor Documents: ``predecessor`` (the previous SR) when given,
    else the UIDs that version was made with (they are deterministic). Every
    UID comes from (device id, study key, model id, version, kind), so the
    same completion made twice gives the same documents.

    A SEG comes only for images whose lesions carry contours (none: no SEG);
    the key image is the key frame of the image with the most probable
    finding (no finding: no key image).
    """
    unknown = set(kinds) - set(DOCUMENT_KINDS)
    if unknown:
        raise ValueError(f"unknown DICOM result kinds {sorted(unknown)}; one of {DOCUMENT_KINDS}")
    if version < 1:
        raise ValueError(f"a study's result version starts at 1, not {version}")
    if not instances:
        raise ValueError("a study's results need at least one analysed image")
    if predecessor is not None and predecessor.kind != "sr":
        raise ValueError(f"the predecessor of an SR is an SR, not a {predecessor.kind}")
    sources = [Source(i, pydicom.dcmread(i.path, stop_before_pixels=True)) for i in instances]
    study_key = _study_key(sources)
    ids = ResultIds(device_id, study_key, model.model_id, version)
    documents: list[Document] = []
    if "sr" in kinds:
        previous = None
        if version > 1:
            previous = (predecessor.dataset if predecessor is not None
                        else predecessor_reference(str(sources[0].dataset.StudyInstanceUID), ids))
        documents.append(Document("sr", study_key,
                                  structured_report(sources, model, ids, previous)))
    if "seg" in kinds:
        documents += [Document("seg", study_key, seg)
                      for seg in segmentations(sources, model, ids)]
    if "key_image" in kinds:
        chosen = _key_instance(instances)
        if chosen is not None:
            documents.append(Document("key_image", study_key, key_image(chosen, model, ids)))
    return documents


def _study_key(sources: list[Source]) -> str:
    """The box's key of the one study all ``sources`` belong to (ValueError otherwise)."""
    keys = {str(s.result.get("study_instance_uid") or s.dataset.get("StudyInstanceUID") or "")
            for s in sources}
    if len(keys) != 1 or "" in keys:
        raise ValueError(f"the images of one study's results must share one study, not {keys}")
    return keys.pop()


def _key_instance(instances: list[AnalysedInstance]) -> AnalysedInstance | None:
    """The image with the most probable finding (the first of equals), None without findings."""
    found = [i for i in instances
             if i.result.get("assessment") == "finding" and i.result.get("findings")]
    if not found:
        return None
    return max(found, key=lambda i: float(i.result.get("probability") or 0.0))
