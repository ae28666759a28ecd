"""Write phantoms as DICOM (CT, US, US multi-frame, DX) or PNG/JPEG, and the phantom CLI.

Every identifying attribute can be set by the caller (``identity=``), so
tests can fill them with canary strings and prove none leaves the box; the
defaults are obviously fake values and fresh UIDs. Date (DA) and time (TM)
attributes must still be valid DICOM values, e.g. ``"19010203"``.

Pixel storage is chosen so the box's decode (modality LUT, then a linear VOI
window to [0, 1]) gives the phantom image back:

* CT: int16 stored values, ``HU = stored * RescaleSlope + RescaleIntercept``,
  WindowCenter/Width = the phantom's display window;
* US: 8-bit MONOCHROME2, ``image = stored / 255``;
* DX: 12-bit MONOCHROME1 (inverted), window covering the full 0..4095 range.

Calibration: a CT phantom's pixel spacing is written as ``PixelSpacing``
(mm); an ultrasound phantom's as one ``SequenceOfUltrasoundRegions`` item
covering the whole image with ``PhysicalDeltaX/Y`` in cm (units code 3), as
scanners do, which the box reads (``engine/imaging/decode.py``).
The CLI's ``truth.json`` gives every lesion's class, box and sizes in mm.

Transfer syntaxes: see :data:`SYNTAXES` and :func:`available_syntaxes`
(JPEG-LS needs the optional ``pyjpegls`` encoder, absent from this project's
dependencies, so it is usually unavailable).
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydicom import uid as uids
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_encoder

from phantoms.images import Phantom, generate, generate_sweep

IDENTIFYING = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "InstitutionName", "ReferringPhysicianName", "StudyDate", "StudyTime", "StudyID",
    "StudyDescription", "SeriesDescription", "StudyInstanceUID", "SeriesInstanceUID",
    "SOPInstanceUID",
)
SYNTAXES: dict[str, uids.UID] = {
    "explicit": uids.ExplicitVRLittleEndian,
    "implicit": uids.ImplicitVRLittleEndian,
    "deflate": uids.DeflatedExplicitVRLittleEndian,
    "rle": uids.RLELossless,
    "j2k": uids.JPEG2000Lossless,
    "jpegls": uids.JPEGLSLossless,
}
_NATIVE = {"explicit", "implicit", "deflate"}


def available_syntaxes() -> list[str]:
    """Names from :data:`SYNTAXES` that can be written here (encoder installed)."""
    return [n for n, u in SYNTAXES.items() if n in _NATIVE or get_encoder(u).is_available]


def default_identity(**overrides: str) -> dict[str, str]:
    """Obviously fake identifying values with fresh UIDs; ``overrides`` replace any."""
    unknown = set(overrides) - set(IDENTIFYING)
    if unknown:
        raise ValueError(f"not identifying attributes: {sorted(unknown)}; use {IDENTIFYING}")
    now = datetime.datetime.now()
    values = {
        "PatientName": "PHANTOM^DEMO", "PatientID": "PHANTOM-0000",
        "PatientBirthDate": "19000101", "PatientSex": "O", "AccessionNumber": "FAKE0000",
        "InstitutionName": "clinibox phantom clinic", "ReferringPhysicianName": "NOBODY^DR",
        "StudyDate": now.strftime("%Y%m%d"), "StudyTime": now.strftime("%H%M%S"),
        "StudyID": "PH0000", "StudyDescription": "PHANTOM STUDY - NOT A PATIENT",
        "SeriesDescription": "PHANTOM SERIES", "StudyInstanceUID": uids.generate_uid(),
        "SeriesInstanceUID": uids.generate_uid(), "SOPInstanceUID": uids.generate_uid(),
    }
    values.update(overrides)
    return values


def _base(sop_class: uids.UID, modality: str, identity: Mapping[str, str] | None) -> Dataset:
    ids = default_identity(**dict(identity or {}))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ids["SOPInstanceUID"]
    meta.TransferSyntaxUID = uids.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword, value in ids.items():
        setattr(ds, keyword, value)
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Manufacturer = "clinibox synthetic image generator"
    ds.BurnedInAnnotation = "NO"
    ds.ContentDate, ds.ContentTime = ids["StudyDate"], ids["StudyTime"]
    return ds


def _image_of(source: Phantom | np.ndarray) -> np.ndarray:
    image = source.image if isinstance(source, Phantom) else np.asarray(source, np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    return np.clip(image, 0.0, 1.0)


def ct_dataset(source: Phantom | np.ndarray, identity: Mapping[str, str] | None = None,
               window: tuple[float, float] | None = None,
               rescale: tuple[float, float] = (1.0, -1024.0)) -> Dataset:
    """CT Image Storage with int16 stored values, rescale to HU and the display window.

    A CT phantom's own HU and window are used; a plain [0, 1] image is mapped
    linearly into ``window`` (default centre 40, width 400).
    """
    slope, intercept = rescale
    if isinstance(source, Phantom) and source.hu is not None:
        hu = source.hu.astype(np.float64)
        window = window or source.window
    else:
        window = window or (40.0, 400.0)
        hu = np.rint(window[0] - window[1] / 2 + _image_of(source) * window[1])
    stored = np.rint((hu - intercept) / slope)
    if stored.min() < -32768 or stored.max() > 32767:
        raise ValueError("HU values do not fit int16 with this rescale")
    ds = _base(uids.CTImageStorage, "CT", identity)
    ds.set_pixel_data(stored.astype(np.int16), "MONOCHROME2", 16, generate_instance_uid=False)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "HU"
    ds.WindowCenter, ds.WindowWidth = round(window[0], 2), round(window[1], 2)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    row_mm, column_mm = _spacing_of(source, (0.7, 0.7))
    ds.PixelSpacing = [_ds(row_mm), _ds(column_mm)]
    ds.SliceThickness = 2.5
    ds.KVP = 120
    h, w = hu.shape
    ds.ImagePositionPatient = [_ds(-w * column_mm / 2), _ds(-h * row_mm / 2), 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    # the slices of one study share a frame of reference, as a scanner's do
    ds.FrameOfReferenceUID = uids.generate_uid(entropy_srcs=[str(ds.StudyInstanceUID),
                                                             "frame of reference"])
    ds.PositionReferenceIndicator = ""
    return ds


def _ds(value: float) -> str:
    """A decimal string (DS) of at most 16 characters."""
    return f"{value:.10g}"[:16]


def _spacing_of(source: Phantom | np.ndarray | Sequence[Phantom | np.ndarray],
                default: tuple[float, float] | None) -> tuple[float, float] | None:
    """The phantom's (row, column) mm per pixel, else ``default``."""
    first = source[0] if isinstance(source, Sequence) and len(source) else source
    spacing = first.spacing if isinstance(first, Phantom) else None
    return tuple(spacing) if spacing else default


def us_regions(height: int, width: int, spacing: tuple[float, float]) -> list[Dataset]:
    """One calibrated ultrasound region covering the whole image (deltas in cm)."""
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D (tissue or flow)
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = width - 1, height - 1
    region.ReferencePixelX0, region.ReferencePixelY0 = width // 2, 0
    region.ReferencePixelPhysicalValueX, region.ReferencePixelPhysicalValueY = 0.0, 0.0
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX = spacing[1] / 10.0
    region.PhysicalDeltaY = spacing[0] / 10.0
    return [region]


def _calibrate_us(ds: Dataset, source, height: int, width: int) -> None:
    spacing = _spacing_of(source, None)
    if spacing is not None:
        ds.SequenceOfUltrasoundRegions = us_regions(height, width, spacing)


def us_dataset(source: Phantom | np.ndarray, identity: Mapping[str, str] | None = None) -> Dataset:
    """US Image Storage, 8-bit MONOCHROME2 (``stored = round(image * 255)``), calibrated
    by an ultrasound region when the phantom has a pixel spacing."""
    ds = _base(uids.UltrasoundImageStorage, "US", identity)
    image = _image_of(source)
    ds.set_pixel_data(np.rint(image * 255).astype(np.uint8), "MONOCHROME2", 8,
                      generate_instance_uid=False)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL"]
    _calibrate_us(ds, source, *image.shape)
    return ds


def us_multiframe_dataset(frames: Sequence[Phantom | np.ndarray],
                          identity: Mapping[str, str] | None = None,
                          frame_time_ms: float = 40.0) -> Dataset:
    """US Multi-frame Image Storage: every frame 8-bit MONOCHROME2, same size."""
    stack = np.stack([np.rint(_image_of(f) * 255).astype(np.uint8) for f in frames])
    ds = _base(uids.UltrasoundMultiFrameImageStorage, "US", identity)
    ds.set_pixel_data(stack, "MONOCHROME2", 8, generate_instance_uid=False)
    ds.FrameTime = frame_time_ms
    ds.FrameIncrementPointer = 0x00181063  # FrameTime
    ds.CineRate = round(1000 / frame_time_ms)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL"]
    _calibrate_us(ds, list(frames), *stack.shape[1:])
    return ds


def dx_dataset(source: Phantom | np.ndarray, identity: Mapping[str, str] | None = None) -> Dataset:
    """Digital X-Ray (for presentation), 12-bit MONOCHROME1: bright stored = dark display."""
    stored = np.rint((1.0 - _image_of(source)) * 4095).astype(np.uint16)
    ds = _base(uids.DigitalXRayImageStorageForPresentation, "DX", identity)
    ds.set_pixel_data(stored, "MONOCHROME1", 12, generate_instance_uid=False)
    ds.WindowCenter, ds.WindowWidth = 2048.0, 4096.0
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    return ds


def write_dicom(ds: Dataset, path: str | Path, syntax: str = "explicit") -> Path:
    """Save ``ds`` as a DICOM file (Part 10) in the named transfer syntax."""
    if syntax not in SYNTAXES:
        raise ValueError(f"unknown transfer syntax {syntax!r}; choose from {', '.join(SYNTAXES)}")
    if syntax not in available_syntaxes():
        raise ValueError(f"no encoder for {syntax!r} here; available: {available_syntaxes()}")
    target = SYNTAXES[syntax]
    if syntax in _NATIVE:
        ds.file_meta.TransferSyntaxUID = target
    else:
        ds.compress(target)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True, little_endian=True,
               implicit_vr=syntax == "implicit")
    return path


def write_image(source: Phantom | np.ndarray, path: str | Path, colour: bool = False,
                quality: int = 95) -> Path:
    """8-bit grey PNG/JPEG (by suffix); ``colour`` writes a warm-tinted RGB variant."""
    from PIL import Image

    grey = _image_of(source)
    if colour:
        tint = np.array([1.0, 0.94, 0.82], dtype=np.float32)
        pixels = np.rint(grey[:, :, None] * tint * 255).astype(np.uint8)
    else:
        pixels = np.rint(grey * 255).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        Image.fromarray(pixels).save(path, quality=quality)
    else:
        Image.fromarray(pixels).save(path)
    return path


# -- CLI -----------------------------------------------------------------------------------


def _truth(p: Phantom) -> dict:
    """What the phantom holds: kind, size, spacing, boxes and each lesion's class and sizes."""
    return {"kind": p.kind, "lesion": p.lesion, "boxes": [list(b) for b in p.boxes],
            "height": int(p.image.shape[0]), "width": int(p.image.shape[1]),
            "pixel_spacing_mm": [round(v, 6) for v in p.spacing] if p.spacing else None,
            "lesions": [t.to_dict() for t in p.lesions]}


def _write_one(kind: str, index: int, args: argparse.Namespace, lesion: bool) -> list[dict]:
    rng = np.random.default_rng([args.seed, 1_000_000 + index])
    name = args.out / f"phantom-{index:05d}"
    ident = {"PatientID": f"PHANTOM-{index:05d}", "StudyID": f"PH{index:05d}",
             "AccessionNumber": f"FAKE{index:05d}"}
    if kind == "us-multiframe":
        frames = generate_sweep(rng, args.frames, lesion=lesion)
        if args.format == "dicom":
            path = write_dicom(us_multiframe_dataset(frames, ident), f"{name}.dcm", args.syntax)
            return [{"file": path.name, "frames": [_truth(f) for f in frames],
                     "lesion": any(f.lesion for f in frames)}]
        return [{"file": write_image(f, f"{name}-f{i:02d}.{args.format}", args.colour).name,
                 **_truth(f)} for i, f in enumerate(frames)]
    phantom = generate(kind, rng, args.size, lesion)
    if args.format == "dicom":
        ds = ct_dataset(phantom, ident) if kind == "ct" else us_dataset(phantom, ident)
        path = write_dicom(ds, f"{name}.dcm", args.syntax)
    else:
        path = write_image(phantom, f"{name}.{args.format}", args.colour)
    return [{"file": path.name, **_truth(phantom)}]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m phantoms``: write phantom files and a truth.json beside them."""
    parser = argparse.ArgumentParser(
        prog="python -m phantoms",
        description="Write procedurally generated CT/US phantoms (not patients) for the box.")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--count", type=int, default=10, help="number of objects")
    parser.add_argument("--kind", choices=("ct", "us", "us-multiframe", "mixed"), default="mixed")
    parser.add_argument("--format", choices=("dicom", "png", "jpg"), default="dicom")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lesion-fraction", type=float, default=0.5)
    parser.add_argument("--syntax", choices=tuple(SYNTAXES), default="explicit",
                        help=f"DICOM transfer syntax (available here: {available_syntaxes()})")
    parser.add_argument("--size", type=int, default=None,
                        help="square size in pixels (default: varied realistic sizes)")
    parser.add_argument("--frames", type=int, default=8, help="frames per US multi-frame")
    parser.add_argument("--colour", action="store_true", help="RGB PNG/JPEG variant")
    args = parser.parse_args(argv)
    if not 0.0 <= args.lesion_fraction <= 1.0:
        parser.error("--lesion-fraction must be between 0 and 1")
    if args.format == "dicom" and args.syntax not in available_syntaxes():
        parser.error(f"no encoder for --syntax {args.syntax} here; use {available_syntaxes()}")
    kinds = ("ct", "us", "us-multiframe") if args.kind == "mixed" else (args.kind,)
    lesions = np.random.default_rng(args.seed).permutation(
        [i < round(args.count * args.lesion_fraction) for i in range(args.count)])
    truth = []
    for index in range(args.count):
        truth += _write_one(kinds[index % len(kinds)], index, args, bool(lesions[index]))
    (args.out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.count} phantom object(s) to {args.out} (ground truth in truth.json)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
