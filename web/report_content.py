"""What a printed study report shows, and how the viewer gets it as a PDF.

The PDF is made by ``web.report_pdf`` in a short-lived child process: the
writer (fpdf, fontTools) and a Chinese font loaded for subsetting hold about
50 MB, which a viewer worker would otherwise keep for good after its first
report. The child takes about half a second to start; it gets the content
already written in the reader's language and the language itself. A viewer
process runs one such child at a time.
"""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass

from clinibox_common.child_call import call_child
from clinibox_common.errors import CliniboxError

#: longest a report may take to make (a font to subset, a key image to place)
PDF_SECONDS = 60
#: one report child at a time per viewer process: each holds about 50 MB while it runs,
#: so a burst of report requests waits in turn instead of piling children up
_ONE_AT_A_TIME = threading.BoundedSemaphore(1)


class ReportError(CliniboxError):
    """The PDF report could not be made."""

    kind = "report not made"


@dataclass
class ReportContent:
    """Everything one study report shows, already formatted as display text."""

    patient_name: str
    patient_id: str
    study_date: str  # as shown (already formatted)
    study_description: str
    modality: str
    received: str  # formatted local time
    verdict: str  # the headline in plain words
    findings: list[str]  # plain-language lines
    warnings: list[str]  # quality warnings, plain language
    model_id: str
    notice: str  # "This result assists a doctor and does not replace one." (+ demo line)
    generated: str  # formatted date/time the report was made
    key_image_png: bytes | None = None
    #: shown instead of the key image when there is none (e.g. deleted by retention)
    image_note: str = ""
    #: the study's lesions in one sentence (count, largest diameter)
    summary: str = ""
    #: a note printed first (e.g. why a report asked for in Chinese is in English)
    font_note: str = ""
    #: what to do beyond the verdict ("" for nothing more), and the whole image's probability
    #: ("" where the model gave no result on any image)
    next_step: str = ""
    image_probability: str = ""
    #: the hospital's verdict, when it was given and its note, in the study page's words
    #: (``firmware_app/words/review_words.py``; "" where the hospital has not reviewed the study)
    hospital_verdict: str = ""
    hospital_when: str = ""
    hospital_note: str = ""


def make_pdf(content: ReportContent, language: str) -> bytes:
    """The report as PDF bytes in ``language``, made in a child process (``web.report_pdf``)."""
    try:
        with _ONE_AT_A_TIME:
            made = call_child("web.report_pdf", (content, language), PDF_SECONDS)
    except subprocess.TimeoutExpired:
        raise ReportError(f"the report took longer than {PDF_SECONDS} s") from None
    except ChildProcessError as exc:
        raise ReportError(f"the report could not be made ({exc})") from None
    if not made.startswith(b"%PDF"):
        raise ReportError("the report could not be made (no PDF came back)")
    return made
