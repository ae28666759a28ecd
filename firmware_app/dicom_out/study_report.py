"""The study's structured report for a de-identified export: the SR its PACS was sent.

The export carries the study's SR beside its images. It is made again from the
stored results with the version and the deterministic UIDs of the study's last
completion (``service/study_completion``), so it is the document the PACS
holds (version 1 for a study not complete yet); the export de-identifies it
with the images, its references then pointing at the exported images.
"""

from __future__ import annotations

import sqlite3

from pydicom import Dataset

from firmware_app.dicom_out.study_documents import (
    AnalysedInstance,
    ModelIdentity,
    study_documents,
)
from firmware_app.storage.study_completion import analysed_instances, completions


def study_report(conn: sqlite3.Connection, study_key: str, manifest: dict, device_id: str
                 ) -> list[Dataset]:
    """The study's SR as a one-item list (empty when no analysed image of it is left)."""
    instances = [AnalysedInstance(path, result, heatmap)
                 for path, result, heatmap in analysed_instances(conn, study_key)
                 if path.exists()]
    if not instances or study_key.startswith("local:"):
        return []
    documents = study_documents(instances, ModelIdentity.from_manifest(manifest),
                                device_id=device_id,
                                version=max(1, completions(conn, study_key)), kinds=["sr"])
    return [d.dataset for d in documents]
