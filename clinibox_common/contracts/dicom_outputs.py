"""The one table of DICOM outputs: the result documents the box sends to the clinic's PACS.

Every part that names an output reads this table: the settings (``[[pacs.destinations]]
send`` lists keys of it, and by default the outputs on by default), the result documents
(``dicom_out/document.py``), the writer registry (``dicom_out/writers.py``, which makes
the documents of the kinds asked for, in the table's order) and the database (the
kinds ``dicom_outbox.kind`` may hold, written from the table whenever the database
opens: ``storage/dicom_outbox.py``, ``kind_rule``). Adding an output means writing its
writer module under ``firmware_app/dicom_out/`` and adding one row here
(docs/development/dicom-output.md).

Nothing in this module imports a writer: ``dicom_out/writers.py`` imports the writer's
module lazily from ``module`` and ``function``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from clinibox_common.i18n import N_

#: an output key: what ``send`` lists and ``dicom_outbox.kind`` holds (it goes into SQL
#: as a literal, so letters, digits and underscores only)
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

#: what a writer may need from a study's results (``OutputInfo.needs``)
NEEDS: dict[str, str] = {
    "headers": "the analysed images' headers (read without their pixels)",
    "results": "each image's stored result (assessment, lesions, probabilities)",
    "lesion_masks": "lesions with an outline (a contour of 3 or more points): none, no document",
    "finding": "an image with a finding: none, no document",
    "pixels": "the key frame's pixels (decoded once, with the worker's limits)",
    "predecessor": "the previous version's document of this kind (a study's version > 1)",
}


@dataclass(frozen=True)
class OutputInfo:
    """One kind of DICOM output: what it is, which SOP classes it writes, where its writer is."""

    #: the key named in ``send`` and stored in ``dicom_outbox.kind``
    key: str
    #: the SOP Class UID(s) its documents have (the registry checks each document's)
    sop_class_uids: tuple[str, ...]
    #: the writer: ``module:function``, a ``dicom_out.writers.DocumentWriter``
    module: str
    function: str
    #: what it is, in words (English, for the documentation)
    iod: str
    #: its name on screen (a msgid)
    label: str
    #: the order documents are made, queued and sent in (lowest first)
    order: int
    #: what the writer needs from a study's results (keys of ``NEEDS``)
    needs: tuple[str, ...] = ("headers", "results")
    #: sent to a destination whose ``send`` is not set
    default: bool = True

    def __post_init__(self) -> None:
        if not _KEY.match(self.key):
            raise ValueError(f"a DICOM output key is 1-32 lower-case letters, digits or "
                             f"underscores (a letter first), not {self.key!r}")
        if not self.sop_class_uids:
            raise ValueError(f"DICOM output {self.key!r} names no SOP class")
        unknown = [need for need in self.needs if need not in NEEDS]
        if unknown:
            raise ValueError(f"DICOM output {self.key!r} needs {unknown}; known: "
                             f"{', '.join(NEEDS)}")

    @property
    def writer(self) -> str:
        """E.g. ``firmware_app.dicom_out.sr:write_sr``."""
        return f"{self.module}:{self.function}"


#: every DICOM output, by key (monkeypatch-able in tests: readers look it up when they need it)
DICOM_OUTPUTS: dict[str, OutputInfo] = {
    info.key: info
    for info in (
        OutputInfo(
            "sr",
            ("1.2.840.10008.5.1.4.1.1.88.34",),  # Comprehensive 3D SR Storage
            "firmware_app.dicom_out.sr",
            "write_sr",
            iod="Comprehensive 3D SR with the TID 1500 Measurement Report: lesions, "
                "measurements, probabilities and assessments",
            label=N_("structured report (SR)"),
            order=10,
            needs=("headers", "results", "predecessor"),
        ),
        OutputInfo(
            "seg",
            ("1.2.840.10008.5.1.4.1.1.66.4",),  # Segmentation Storage
            "firmware_app.dicom_out.seg",
            "write_seg",
            iod="Segmentation (binary) of the lesions' outlines, one per volume or image",
            label=N_("lesion outlines (SEG)"),
            order=20,
            needs=("headers", "results", "lesion_masks"),
        ),
        OutputInfo(
            "key_image",
            ("1.2.840.10008.5.1.4.1.1.7",),  # Secondary Capture Image Storage
            "firmware_app.dicom_out.key_image",
            "write_key_image",
            iod="Secondary Capture (RGB) of the key frame with the findings drawn in",
            label=N_("key image"),
            order=30,
            needs=("results", "finding", "pixels"),
        ),
    )
}


def outputs() -> list[OutputInfo]:
    """Every DICOM output, in the order documents are made and sent."""
    return sorted(DICOM_OUTPUTS.values(), key=lambda info: (info.order, info.key))


def output_keys() -> tuple[str, ...]:
    """Every output key, in order (what ``send`` may list, what ``dicom_outbox.kind`` holds)."""
    return tuple(info.key for info in outputs())


def default_outputs() -> list[str]:
    """The keys a destination is sent when its ``send`` is not set."""
    return [info.key for info in outputs() if info.default]


def output_info(key: str) -> OutputInfo:
    """The row of output ``key`` (ValueError naming the known keys)."""
    try:
        return DICOM_OUTPUTS[key]
    except KeyError:
        raise ValueError(f"unknown DICOM output {key!r}; one of "
                         f"{', '.join(output_keys())}") from None


def output_table() -> list[dict[str, Any]]:
    """The table as plain rows, in order (for the generated reference page)."""
    return [{"key": info.key, "label": info.label, "iod": info.iod,
             "sop_class_uids": list(info.sop_class_uids), "writer": info.writer,
             "needs": list(info.needs), "needs_text": [NEEDS[need] for need in info.needs],
             "default": info.default, "order": info.order}
            for info in outputs()]
