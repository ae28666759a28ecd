"""The clinic doctor's list: images where the hospital's verdict contradicts what the box said,
and no one at the clinic has looked since (issue 60).

``GET /to-confirm`` lists them, newest verdict first, each with its study's link. The doctor
confirms or corrects the box on the study page (the image's agree / disagree, as for any
finding); that review is the image's newest label (``firmware_app/storage/case_labels.py``),
which takes it off this list. The labels stay on the box: they are what federated
fine-tuning learns from.
"""

from __future__ import annotations

from flask import Blueprint, render_template

from firmware_app.storage.case_labels import to_confirm
from web.security import database

blueprint = Blueprint("confirm", __name__)


@blueprint.route("/to-confirm")
def to_confirm_list():
    """The images to confirm or correct, newest verdict first."""
    return render_template("to_confirm.html", rows=to_confirm(database()))
