"""The words and the one rule for a model's probabilities, shared by the box's viewer
(``web/``) and the hospital's console (``central_console``), so an image or a lesion reads
the same on both: the same sentence, the same percentage.

Two probabilities, never mixed up:

* the **whole image**'s: how likely the model thinks it is that the image shows a lesion
  (an alert's ``score``: the study's most suspicious image); it decides alert, finding or
  no finding;
* a **lesion**'s **model confidence**: how sure the model is that the marked area is a
  lesion (an alert's ``lesions[].score``).

Each is written by :func:`clinibox_common.i18n.formats.percent`: a whole percentage, never
rounded up to a certainty nor down to none (``>99%``, ``<1%``).
"""

from __future__ import annotations

from clinibox_common.i18n import formats, gettext, ngettext

#: a probability (0 … 1) as the pages write it: ``87%`` / ``>99%``
percent = formats.percent


def whole_image(probability: float | None, images: int | None = None) -> str:
    """The whole image's probability: "Whole image: >99%", with ``images`` "…, the most
    suspicious of 3 images analysed" (the study page's sentence)."""
    if images is None or images < 1:
        return gettext("Whole image: %(percent)s", percent=percent(probability))
    return ngettext("Whole image: %(percent)s, the most suspicious of %(num)d image analysed",
                    "Whole image: %(percent)s, the most suspicious of %(num)d images analysed",
                    images, percent=percent(probability))


def lesion_confidence(probability: float | None) -> str:
    """A lesion's model confidence: "model confidence 77%"."""
    return gettext("model confidence %(percent)s", percent=percent(probability))
