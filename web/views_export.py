"""The de-identified export of a study from the viewer: a zip download for a second reader.

``POST /study/ID/export`` (the "Export de-identified" button on the study
page; CSRF-checked like every form) writes the study's images and its
structured report (``dicom_out/study_report.py``) de-identified with the
DICOM Basic Profile (``firmware_app/dicom_out/export.py``) into a zip
made in the box's state folder, records the export with the account's name
and the client's address (in ``exports`` and the audit trail), and answers
the zip as a download. Clinicians and technicians may export; a request
without a session is turned away (401).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from flask import Blueprint, abort, current_app, send_file

from clinibox_common.contracts.statuses import Role
from firmware_app.storage import exports as export_queries
from web.audit_trail import client_address
from web.security import current_account, database

blueprint = Blueprint("export", __name__)

#: roles that may export a study
EXPORT_ROLES = (Role.CLINICIAN, Role.TECHNICIAN)


@blueprint.route("/study/<int:study_id>/export", methods=["POST"])
def export_zip(study_id: int):
    """The study de-identified as a zip download, recorded with the account and address.

    The export (pydicom, highdicom, dicognito) is imported on the first one, not when the
    viewer starts."""
    from firmware_app.dicom_out.export import ExportError, export_study
    from firmware_app.dicom_out.study_report import study_report

    account = current_account()
    if account is None or account.role not in EXPORT_ROLES:
        abort(403)
    conn = database()
    study = export_queries.study_by_id(conn, study_id)
    if study is None:
        abort(404)
    viewer = current_app.config["CLINIBOX"]
    config = viewer.config
    manifest = viewer.package_facts().get("manifest")
    report = (study_report(conn, study.study_key, manifest, config.telemetry.device)
              if manifest else [])
    scratch = Path(tempfile.mkdtemp(prefix=".viewer-export-", dir=config.state_dir))
    try:
        try:
            summary = export_study(conn, str(study_id), scratch / "export.zip", as_zip=True,
                                   account=account.name, address=client_address(),
                                   target_label="viewer download", extra_documents=report)
        except ExportError as exc:
            abort(400, description=str(exc))
        handle = open(scratch / "export.zip", "rb")  # noqa: SIM115 (send_file closes it)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the open file stays readable
    response = send_file(handle, mimetype="application/zip", as_attachment=True,
                         download_name=f"clinibox-export-{summary.export_id}.zip")
    response.headers["X-Clinibox-Left-Out"] = str(len(summary.left_out))
    return response
