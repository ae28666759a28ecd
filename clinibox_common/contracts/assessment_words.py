"""The words of the model's assessment of an image (``contracts/statuses.AssessmentKind``), one
table for the box's viewer (``firmware_app/words/labels.py``) and the hospital's console
(``central/labels.py``).

An assessment is stored and sent as its stable word (``no_finding`` …, never translated);
the pages show it in the reader's language.
"""

from __future__ import annotations

from clinibox_common.contracts.statuses import AssessmentKind
from clinibox_common.i18n import N_

#: the model's assessments of an image (English, for the catalog), one for every kind
ASSESSMENT_WORDS: dict[str, str] = {
    AssessmentKind.FINDING: N_("finding"), AssessmentKind.NO_FINDING: N_("no finding"),
    AssessmentKind.NOT_ASSESSABLE: N_("not assessable"),
    AssessmentKind.OUTSIDE_VALIDATED_RANGE: N_("outside the validated range")}
