"""The hospital's verdict on a study in words: one set of sentences for every place it shows.

The worklist, the study page, the printed report and its PDF all say the hospital's
review (``storage/hospital_reviews.py``) with these words, so they cannot disagree: the
verdict with its follow-up months (``contracts/downlink.verdict_words``, as the console),
"arrived late" where it reached the box after the downlink's freshness window, when the
radiologist gave it and the note they wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

from clinibox_common.i18n import formats, gettext
from firmware_app.storage.hospital_reviews import HospitalReview
from firmware_app.words import labels


@dataclass(frozen=True)
class ReviewWords:
    """A hospital review as the reader's sentences ("" where a part is absent)."""

    #: "Hospital reviewed: follow up in 6 months"
    verdict: str
    #: "(arrived late, given 2026-11-23)", or "" for a review that came in time
    late: str
    #: "reviewed 2026-11-23 14:05"
    when: str
    #: "Note from the hospital: …", or "" without a note
    note: str

    @property
    def headline(self) -> str:
        """The verdict with its late mark, as one line (the PDF's, the worklist's)."""
        return f"{self.verdict} {self.late}" if self.late else self.verdict


def review_words(review: HospitalReview | None) -> ReviewWords | None:
    """The words of ``review`` in the current language (None without a review)."""
    return None if review is None else words_of(review)


def words_of(review: HospitalReview) -> ReviewWords:
    """The words of a hospital review in the current language."""
    verdict = labels.hospital_verdict(review.verdict, review.follow_up_months)
    return ReviewWords(
        verdict=gettext("Hospital reviewed: %(verdict)s", verdict=verdict),
        late=labels.late_review(review.reviewed_at) if review.late else "",
        when=gettext("reviewed %(when)s", when=formats.moment(review.reviewed_at)),
        note=gettext("Note from the hospital: %(note)s", note=review.note)
        if review.note.strip() else "",
    )
