"""The words of the model's assessment of an image (``contracts/statuses.AssessmentKind``), one
table for the box's viewer (``web/labels.py``) and the hospital's console
(``central/console/labels.py``).

An assessment is stored and sent as its stable word (``no_finding`` …, never translated);
the pages show it in the reader's language.
"""

from __future__ import annotations

from firmware_app.contracts.statuses import AssessmentKind
from firmware_app.i18n import N_

#: the model's assessments of an image (English, for the catalog), one for every kind
ASSESSMENT_WORDS: dict[str, str] = {
    AssessmentKind.FINDING: N_("finding"), AssessmentKind.NO_FINDING: N_("no finding"),
    AssessmentKind.NOT_ASSESSABLE: N_("not assessable"),
    AssessmentKind.OUTSIDE_VALIDATED_RANGE: N_("outside the validated range")}
