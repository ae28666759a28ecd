"""The technician's list of cases clinicians disagreed with, and their one-step export.

``GET /feedback`` lists every study with a ``disagree`` verdict, newest verdict
first: local study id, date, modality, model, the model's assessment and
probability, the verdicts, and whether it was exported before.
``POST /feedback/export`` (CSRF-checked like every form) exports the cases not
exported before (or all of them, with the ``all`` box ticked) de-identified,
each with its ``case.json`` (``firmware_app/dicom_out/disagreements.py``), as
one zip download; each case is recorded in ``exports`` and the audit trail
(action ``export``, detail naming "disagreements") with the account and the
client's address. Technicians only (403 for clinicians).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from flask import Blueprint, abort, current_app, render_template, request, send_file

from firmware_app.storage.disagreements import list_cases
from web.audit_trail import client_address
from web.security import current_account, database, technician_only

blueprint = Blueprint("feedback", __name__)


@blueprint.route("/feedback")
@technician_only
def disagreements():
    """The cases clinicians disagreed with, newest first, and the export button."""
    cases = list_cases(database())
    verdicts = {case.study_id: sorted({i.verdict for i in case.images} - {""})
                for case in cases}
    return render_template("disagreements.html", cases=cases, verdicts=verdicts,
                           waiting=sum(1 for case in cases if not case.exported))


@blueprint.route("/feedback/export", methods=["POST"])
@technician_only
def export():
    """The listed cases (not exported before, or all) de-identified, as one zip download.

    The de-identifying export (pydicom, highdicom, dicognito) is imported here, when a
    technician asks for it, not when the viewer starts."""
    from firmware_app.dicom_out.disagreements import export_disagreements
    from firmware_app.dicom_out.export import ExportError

    account = current_account()
    config = current_app.config["CLINIBOX"].config
    scratch = Path(tempfile.mkdtemp(prefix=".viewer-disagreements-", dir=config.state_dir))
    try:
        try:
            summary = export_disagreements(
                database(), scratch / "cases.zip", as_zip=True, account=account.name,
                address=client_address(), include_exported=request.form.get("all") == "1",
                target_label="viewer download")
        except ExportError as exc:
            abort(400, description=str(exc))
        handle = open(scratch / "cases.zip", "rb")  # noqa: SIM115 (send_file closes it)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the open file stays readable
    first = summary.export_ids[0] if summary.export_ids else 0
    response = send_file(handle, mimetype="application/zip", as_attachment=True,
                         download_name=f"clinibox-disagreements-{first}.zip")
    response.headers["X-Clinibox-Cases"] = str(len(summary.cases))
    return response
