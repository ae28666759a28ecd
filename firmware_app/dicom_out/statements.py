"""What the result documents say in words: the viewer's wording, for the PACS.

An image the model cannot judge (``not_assessable``) or was not validated for
(``outside_validated_range``) is stated as such, never as "no finding".
Lesions are counted as the page counts them: per 3-D lesion in a series read
as a volume (its images say which lesions they show), per image in a series
read per slice (a series of several images says once why it is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clinibox_common.contracts.reasons import SAYS_RESCAN, english, from_records
from clinibox_common.contracts.statuses import AssessmentKind
from engine.inference import volume
from engine.inference.volume import Lesion3D
from firmware_app.dicom_out.source import ModelIdentity

#: why a series of several images is read image by image: the words the viewer shows too
PER_SLICE_REASONS: dict[str, str] = volume.PER_SLICE_WORDS


def assists_a_doctor(model: ModelIdentity) -> str:
    """Every document's statement: software that assists a doctor, not a diagnosis."""
    return (f"Produced by software (clinibox, model {model.model_id}) to assist a doctor; "
            "it is not a diagnosis. This result assists a doctor and does not replace one. "
            "A doctor must read the images and make the diagnosis.")


def demonstration(model: ModelIdentity) -> str:
    """A demonstration package's statement ("" for a clinical one)."""
    if not model.demo:
        return ""
    return (f"DEMONSTRATION ONLY: the model {model.model_id} was trained on synthetic "
            "phantoms and is not for clinical use.")


def image_result(number: int, series: object, instance: object, result: dict[str, Any],
                 part_of: Sequence[int] | None = None) -> str:
    """One image's result in a sentence: its assessment, the lesions, the reason.

    The image is named by its place in the report and its series and instance
    numbers as a PACS viewer shows them; never by a UID (free text is kept by a
    de-identified export, whose leak check would then leave the report out).
    ``part_of``: the numbers of the 3-D lesions it shows, for an image of a
    series read as a volume (its lesions are not counted on their own).
    """
    numbers = ", ".join(f"{what} {value}" for what, value in (("series", _integer(series)),
                                                              ("instance", _integer(instance)))
                        if value is not None)
    where = f"Image {number}" + (f" ({numbers})" if numbers else "")
    assessment = result.get("assessment") or ""
    recorded = from_records(result.get("assessment_reason"))
    reason = english(recorded)
    if assessment == AssessmentKind.NOT_ASSESSABLE:
        why = reason or "the image cannot be judged"
        says_rescan = any(r.code in SAYS_RESCAN for r in recorded)
        advice = "" if says_rescan else "; rescan suggested"
        return (f"{where}: not assessable: {why}{advice}. The model gives no result for this "
                "image; a doctor must read it. This is not a negative result.")
    if assessment == AssessmentKind.OUTSIDE_VALIDATED_RANGE:
        why = f" ({reason})" if reason else ""
        return (f"{where}: outside what the model was validated on{why}. The model gives no "
                "result for this image; a doctor must read it. This is not a negative result.")
    if part_of is not None:
        return _in_volume(where, assessment, part_of, result)
    lesions = result.get("lesions") or []
    if assessment == AssessmentKind.FINDING or lesions:
        count = f"{len(lesions)} lesion{'' if len(lesions) == 1 else 's'} marked"
        return f"{where}: possible finding, {count} (model probability {_percent(result)})."
    return _no_finding(where, result)


def volume_result(series: object, modality: str, images: int,
                  lesions: Sequence[tuple[int, Lesion3D]]) -> str:
    """A series read as a volume in a sentence: its 3-D lesions (number, lesion), each
    with the slices it was seen on and its extent across them."""
    head = f"{_series(series, modality, images)}, read as a volume"
    if not lesions:
        return head + ": no lesion marked."
    each = "; ".join(f"lesion {number} on {lesion.slices} slice{_s(lesion.slices)} "
                     f"({lesion.z_extent_mm:.1f} mm deep)" for number, lesion in lesions)
    return head + f", shows {len(lesions)} lesion{_s(len(lesions))} in 3-D: {each}."


def per_slice_result(series: object, modality: str, images: int, reason: str) -> str:
    """Why a series is read image by image, not as a volume, in a sentence."""
    why = PER_SLICE_REASONS.get(reason, reason.replace("_", " "))
    return (f"{_series(series, modality, images)} is read image by image, not as a volume: "
            f"{why}. Its lesions are counted per image.")


def _in_volume(where: str, assessment: str, part_of: Sequence[int],
               result: dict[str, Any]) -> str:
    """The sentence of a judged image of a series read as a volume."""
    if assessment != AssessmentKind.FINDING:
        return _no_finding(where, result)
    shows = f", part of lesion{_s(len(part_of))} {_listed(part_of)}" if part_of else ""
    return f"{where}: possible finding{shows} (model probability {_percent(result)})."


def _no_finding(where: str, result: dict[str, Any]) -> str:
    return f"{where}: no suspicious area found by the model (model probability {_percent(result)})."


def _listed(numbers: Sequence[int]) -> str:
    """"1", "1 and 2", "1, 2 and 3"."""
    words = [str(n) for n in numbers]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" and {words[-1]}"


def _series(series: object, modality: str, images: int) -> str:
    """A series as a PACS viewer shows it: "Series 3 (CT, 40 images)"."""
    number = _integer(series)
    name = "Series" if number is None else f"Series {number}"
    what = ", ".join(v for v in (modality, f"{images} image{_s(images)}") if v)
    return f"{name} ({what})"


def _integer(value: object) -> int | None:
    """A Series or Instance Number (IS) as the integer it must be; None for anything else (a
    header's free text, "DOE^JOHN 1970", never reaches a sentence)."""
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _percent(result: dict[str, Any]) -> str:
    probability = result.get("probability")
    return "unknown" if probability is None else f"{round(100 * float(probability))} %"


def comparison(number: int, compared: dict[str, Any]) -> list[str]:
    """Each compared lesion of image ``number`` against its earlier self
    (``storage/growth.StudyGrowth.to_dict``), a sentence each. The earlier study is not named
    by its date or UID (free text stays in a de-identified export)."""
    lines = []
    for lesion in compared.get("lesions") or []:
        where = f"Image {number}, lesion {lesion.get('number')}"
        if not lesion.get("seen_before"):
            lines.append(f"{where}: not seen on the patient's earlier study.")
        elif lesion.get("percent") is None:
            lines.append(f"{where}: seen on the patient's earlier study too (no size in mm to "
                         "compare).")
        else:
            lines.append(f"{where}: long axis {float(lesion['size_mm']):.1f} mm, "
                         f"{float(lesion['was_mm']):.1f} mm on the patient's earlier study "
                         f"({float(lesion['percent']):+.1f} %).")
    return lines
