"""One study's DICOM results for the PACS: the SR, the SEG objects, the key image, ….

The one entry the study completion calls (in the worker process, on files
the box already decoded successfully). The headers are read with pydicom;
only the key image decodes pixels (one frame).

Each header is made fit first (``source_header.normalise``: Type 2 attributes
present, unreadable dates and numbers emptied, strings cut to their VR,
invalid UIDs removed). An image the documents cannot refer to (a missing or
invalid Study, Series, SOP Instance or SOP Class UID) is left out of them
with its reason code and the others still go; only when no image is left do
the documents fail (``NothingToDescribe``). What was left out and changed is
written into the caller's ``HeaderReport``, with the images left out of the SEG alone
(a slice without its orientation in a segmented series, say: ``seg.py``).
"""

from __future__ import annotations

from collections.abc import Collection

import pydicom

from clinibox_common.errors import CliniboxError
from clinibox_common.i18n import N_
from firmware_app.dicom_out import writers
from firmware_app.dicom_out.document import Document
from firmware_app.dicom_out.source import (
    AnalysedInstance,
    ModelIdentity,
    ResultIds,
    Source,
    StudyInput,
)
from firmware_app.dicom_out.source_header import (
    BAD_PIXEL_SPACING,
    HeaderReport,
    Unreferenceable,
    normalise,
)

__all__ = ["AnalysedInstance", "HeaderReport", "ModelIdentity", "NothingToDescribe",
           "study_documents"]


class NothingToDescribe(CliniboxError, ValueError):
    """No image of the study can be referred to by a document (each one's reason kept)."""

    kind = N_("no DICOM result")

    def __init__(self, left_out: dict[str, str]) -> None:
        super().__init__("no-describable-instance " + " ".join(
            f"{name}={code}" for name, code in sorted(left_out.items()))[:250])
        self.left_out = dict(left_out)


def instance_name(instance: AnalysedInstance) -> str:
    """How an image is named in the study's records: its id in the box, else its file."""
    return instance.name


def describable(instances: list[AnalysedInstance], report: HeaderReport
                ) -> list[Source]:
    """Each image with its header made fit (``normalise``); those that cannot be referred to
    are left out, their reason code in ``report``."""
    sources = []
    for instance in instances:
        dataset = pydicom.dcmread(instance.path, stop_before_pixels=True)
        name = instance_name(instance)
        try:
            fixes = normalise(dataset)
        except Unreferenceable as exc:
            report.left_out[name] = str(exc)
            continue
        if fixes:
            report.fixes[name] = [str(fix) for fix in fixes]
        sources.append(Source(instance, dataset,
                              uncalibrated=any(f.code == BAD_PIXEL_SPACING for f in fixes)))
    return sources


def study_documents(instances: list[AnalysedInstance], model: ModelIdentity, *, device_id: str,
                    version: int, kinds: Collection[str],
                    predecessor: Document | None = None,
                    report: HeaderReport | None = None) -> list[Document]:
    """The documents of ``kinds`` (keys of the table of DICOM outputs: "sr", "seg",
    "key_image", …) for version ``version`` of a study, made by their writers
    (``writers.py``) in the table's order.

    ``instances`` are the study's analysed images (one study, in the order the
    SR lists them). Version 1 is the first report of a study; a study updated
    by late images gets version 2, 3, …, whose SR names the previous version
    in Predecessor Documents: ``predecessor`` (the previous SR) when given,
    else the UIDs that version was made with (they are deterministic). Every
    UID comes from (device id, study key, model id, version, kind), so the
    same completion made twice gives the same documents.

    Each writer says what it needs (``contracts/dicom_outputs.py``): a SEG comes
    only for images whose lesions carry contours (none: no SEG); the key image is
    the key frame of the image with the most probable finding (no finding: no key
    image). ``report`` receives the images left out and the changes made to the
    headers of the others.
    """
    writers.check_kinds(kinds)
    if version < 1:
        raise ValueError(f"a study's result version starts at 1, not {version}")
    if not instances:
        raise ValueError("a study's results need at least one analysed image")
    if predecessor is not None and predecessor.kind != "sr":
        raise ValueError(f"the predecessor of an SR is an SR, not a {predecessor.kind}")
    report = report if report is not None else HeaderReport()
    sources = describable(instances, report)
    if not sources:
        raise NothingToDescribe(report.left_out)
    study_key = _study_key(sources)
    study = StudyInput(sources, model, ResultIds(device_id, study_key, model.model_id, version),
                       predecessor.dataset if predecessor is not None else None,
                       seg_left_out=report.seg_left_out)
    return writers.write(kinds, study, study_key)


def _study_key(sources: list[Source]) -> str:
    """The box's key of the one study all ``sources`` belong to (ValueError otherwise)."""
    keys = {str(s.result.get("study_instance_uid") or s.dataset.get("StudyInstanceUID") or "")
            for s in sources}
    if len(keys) != 1 or "" in keys:
        raise ValueError(f"the images of one study's results must share one study, not {keys}")
    return keys.pop()
