"""The ``[dicomweb]`` section: the box's studies read over DICOMweb (QIDO-RS, WADO-RS) by a
standard viewer (OHIF) or any DICOMweb client, on the viewer's port and accounts
(``web/views_dicomweb.py``), with the box's own result documents kept for it
(``storage/kept_documents.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clinibox_common.contracts.dicom_outputs import DICOM_OUTPUTS, default_outputs, output_keys
from clinibox_common.i18n import gettext
from clinibox_common.settings_loader import in_range, names, setting


def _document_kinds(value: Any) -> str | None:
    """keys of the DICOM outputs table (contracts/dicom_outputs.py); empty keeps none."""
    unknown = [kind for kind in value if kind not in DICOM_OUTPUTS]
    if unknown:
        return gettext("must list any of %(options)s; got %(value)s",
                       options=names(output_keys()), value=repr(value))
    return None


@dataclass
class DicomwebConfig:
    """Read-only DICOMweb on the viewer's HTTPS port, at ``/dicomweb``."""

    enabled: bool = setting(doc="serve the box's studies read-only over DICOMweb (QIDO-RS, "
                                "WADO-RS) at https://<box>:<[web] port>/dicomweb to the "
                                "viewer's accounts (HTTP Basic or a viewer session), with the "
                                "box's result documents kept for it", default=False)
    keep: list[str] = setting(_document_kinds, "the box's result documents kept and served "
                              "with each study (its latest completion): any of "
                              + ", ".join(f'"{kind}"' for kind in output_keys()),
                              factory=default_outputs)
    max_results: int = setting(in_range(1, 10000), "the most matches one search answers "
                               "(a client asks for the next ones with offset)", 200)
