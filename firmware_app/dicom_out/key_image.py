"""The study's key image: a secondary capture of the key frame with the findings drawn in.

The frame is decoded as the viewer's preview is (``imaging.preview``) and
drawn by ``imaging.annotate`` exactly as the viewer's printed key image:
heatmap, boxes, outlines, labels. It is an RGB Secondary Capture (highdicom)
in the source's study with Burned In Annotation YES, referencing the source
image and frame (Source Image Sequence), the statement that the software
assists a doctor, and for a demonstration model that it is not for clinical
use, as Image Comments. Its source's header is made fit first, as the other
documents' (``source_header.normalise``).
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as sr_codes
from pydicom.uid import ExplicitVRLittleEndian

from clinibox_common.contracts.statuses import AssessmentKind
from engine.imaging import annotate
from engine.imaging.decode import decode_guard, frame_pixels, open_dataset
from engine.imaging.preview import frame_preview
from engine.settings import LimitsConfig
from firmware_app.dicom_out import codes, statements
from firmware_app.dicom_out.source import (
    MANUFACTURER,
    AnalysedInstance,
    ModelIdentity,
    ResultIds,
    StudyInput,
)
from firmware_app.dicom_out.source_header import normalise
from firmware_app.dicom_out.sr import CHARACTER_SET

SERIES_NUMBER = 9903
SERIES_DESCRIPTION = "clinibox key image"
#: the picture's sides, as the viewer's printed key image (``web/views_clinic.py``)
MAX_SIDE, MIN_SIDE = 1024, 512


def write_key_image(study: StudyInput) -> list[Dataset]:
    """The key image output's writer (``writers.DocumentWriter``): the key frame of the
    image with the most probable finding (no finding: no key image)."""
    chosen = key_instance(study.instances)
    if chosen is None:
        return []
    return [key_image(chosen, study.model, study.ids)]


def key_instance(instances: list[AnalysedInstance]) -> AnalysedInstance | None:
    """The image with the most probable finding (the first of equals), None without findings."""
    found = [i for i in instances
             if i.result.get("assessment") == AssessmentKind.FINDING and i.result.get("findings")]
    if not found:
        return None
    return max(found, key=lambda i: float(i.result.get("probability") or 0.0))


def key_image(instance: AnalysedInstance, model: ModelIdentity, ids: ResultIds,
              limits: LimitsConfig | None = None) -> hd.sc.SCImage:
    """The key image of ``instance`` (its result's ``key_frame`` and ``findings``).

    The source is read with the worker's checks (``limits``: its decode
    limits, default ``LimitsConfig()``), so it is the file the box analysed.
    """
    ds, header = open_dataset(instance.path, limits or LimitsConfig())
    normalise(ds)  # Unreferenceable: an image the caller should have left out
    frame = min(max(int(instance.result.get("key_frame") or 0), 0), header.frames - 1)
    with decode_guard():
        array, photometric = frame_pixels(ds, header, frame)
    preview = frame_preview(ds, header, frame, array, photometric,
                            max_side=max(header.rows, header.columns))
    picture = annotate.key_picture(preview, None, instance.result.get("findings") or [],
                                   instance.heatmap, max_side=MAX_SIDE, min_side=MIN_SIDE)
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ds,
        pixel_array=np.asarray(picture, dtype=np.uint8),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=ids.series("key_image"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=ids.document("key_image"),
        instance_number=ids.version,
        manufacturer=MANUFACTURER,
        patient_orientation=_orientation(ds) or ("L", "P"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=SERIES_DESCRIPTION,
        coding_schemes=codes.coding_schemes(),
        specific_character_set=CHARACTER_SET,
    )
    if _orientation(ds) is None:
        image.PatientOrientation = ""  # Type 2: not known for this source (highdicom wants one)
    if "Laterality" not in image:  # Type 2C (paired body parts): the source's, else empty
        image.Laterality = str(ds.get("Laterality") or "")
    image.BurnedInAnnotation = "YES"
    image.SourceImageSequence = [_source_reference(ds, frame, header.frames > 1)]
    image.DerivationDescription = (f"Findings of {model.model_id} drawn on frame {frame + 1} "
                                   f"of the source image")[:1024]
    image.ImageComments = " ".join(
        text for text in (statements.demonstration(model), statements.assists_a_doctor(model))
        if text)
    return image


def _source_reference(ds: Dataset, frame: int, multi_frame: bool) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    if multi_frame:
        item.ReferencedFrameNumber = frame + 1
    purpose = hd.sr.CodedConcept(*sr_codes.DCM.SourceImageForImageProcessingOperation)
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item


def _orientation(ds: Dataset) -> tuple[str, str] | None:
    """The source's Patient Orientation (row, column direction), from its own attribute or
    its Image Orientation (Patient); None when the source does not say."""
    own = ds.get("PatientOrientation")
    if own is not None and len(own) == 2 and all(own):
        letters = tuple(str(v)[:1] for v in own)
        if all(letter in "APRLHF" for letter in letters):
            return letters[0], letters[1]
    cosines = ds.get("ImageOrientationPatient")
    if cosines is None or len(cosines) != 6:
        return None
    return _direction(cosines[:3]), _direction(cosines[3:])


def _direction(vector: list) -> str:
    """The patient direction a unit vector mostly points to (DICOM LPS: +x L, +y P, +z H)."""
    axis = int(np.argmax(np.abs(np.asarray(vector, dtype=float))))
    positive = float(vector[axis]) >= 0
    return ("L", "P", "H")[axis] if positive else ("R", "A", "F")[axis]
