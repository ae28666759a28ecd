"""What the result documents say in words: the viewer's wording, for the PACS.

An image the model cannot judge (``not_assessable``) or was not validated for
(``outside_validated_range``) is stated as such, never as "no finding".
"""

from __future__ import annotations

from typing import Any

from firmware_app.dicom_out.source import ModelIdentity


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


def image_result(number: int, series: object, instance: object, result: dict[str, Any]) -> str:
    """One image's result in a sentence: its assessment, the lesions, the reason.

    The image is named by its place in the report and its series and instance
    numbers as a PACS viewer shows them; never by a UID (free text is kept by a
    de-identified export, whose leak check would then leave the report out).
    """
    numbers = ", ".join(f"{what} {value}" for what, value in (("series", series),
                                                              ("instance", instance))
                        if value not in (None, ""))
    where = f"Image {number}" + (f" ({numbers})" if numbers else "")
    assessment = result.get("assessment") or ""
    reason = str(result.get("assessment_reason") or "").strip()
    if assessment == "not_assessable":
        why = reason or "the image cannot be judged"
        advice = "" if "rescan suggested" in why else "; rescan suggested"
        return (f"{where}: not assessable: {why}{advice}. The model gives no result for this "
                "image; a doctor must read it. This is not a negative result.")
    if assessment == "outside_validated_range":
        why = f" ({reason})" if reason else ""
        return (f"{where}: outside what the model was validated on{why}. The model gives no "
                "result for this image; a doctor must read it. This is not a negative result.")
    lesions = result.get("lesions") or []
    if assessment == "finding" or lesions:
        count = f"{len(lesions)} lesion{'' if len(lesions) == 1 else 's'} marked"
        return f"{where}: possible finding, {count} (model probability {_percent(result)})."
    return f"{where}: no suspicious area found by the model (model probability {_percent(result)})."


def _percent(result: dict[str, Any]) -> str:
    probability = result.get("probability")
    return "unknown" if probability is None else f"{round(100 * float(probability))} %"
