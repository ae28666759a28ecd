"""A CT/MR series read as a volume: one lesion on adjacent slices is one 3-D lesion
(``inference/volume.py``), the geometry it needs kept by decode and the store
(``imaging/decode.py``, v12 ``instances.geometry_json``, ``storage/volumes.py``)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from engine.imaging.decode import decode
from engine.imaging.geometry import slice_geometry
from engine.inference import volume
from engine.inference.aggregate import InstanceFindings
from engine.inference.volume import SeriesSlice, series_volume
from engine.settings import LimitsConfig
from firmware_app.storage import db
from firmware_app.storage.migrations._sql import columns
from firmware_app.storage.results import ResultStore
from firmware_app.storage.volumes import study_volumes
from tests.corpus import image_dataset, write

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SPACING = 2.5


def record(box=(10.0, 10.0, 20.0, 20.0), area=50.0, size_from="mask", probability=0.8,
           contour=None, label="malignant") -> dict:
    """A lesion record as stored (``Lesion.to_dict()``): the sizes in mm."""
    width, height = box[2] - box[0], box[3] - box[1]
    return {"label": label, "probability": probability, "box": list(box), "frame": 0,
            "long_axis_mm": max(width, height), "short_axis_mm": min(width, height),
            "area_mm2": area, "units": "mm", "size_from": size_from,
            "class_probabilities": {"benign": 1 - probability, "malignant": probability},
            "contour": contour or [], "frames": [0]}


def axial(instance_id: int, z: float, *lesions: dict, **changes) -> SeriesSlice:
    """An axial slice at ``z`` mm, 1 mm pixels, with its lesion records."""
    values = {"position": (-100.0, -100.0, z), "orientation": AXIAL,
              "pixel_spacing": (1.0, 1.0), "slice_thickness": SPACING,
              "frame_of_reference_uid": "1.2.3", "lesions": tuple(lesions)}
    values.update(changes)
    return SeriesSlice(instance_id, **values)


def stack(areas: list[float | None], **changes) -> list[SeriesSlice]:
    """One slice per area, ``SPACING`` apart; a lesion record where the area is not None."""
    return [axial(i + 1, i * SPACING, *([] if a is None else [record(area=a)]), **changes)
            for i, a in enumerate(areas)]


def test_six_contiguous_slices_with_one_lesion_are_one_3d_lesion():
    areas = [20.0, 60.0, 90.0, 90.0, 60.0, 20.0]
    read = series_volume(stack(areas), "1.2.series", "CT")
    assert (read.read_as, read.reason, read.per_slice_lesions) == ("volume", "", 6)
    assert read.lesion_count == 1 and read.slice_spacing_mm == pytest.approx(SPACING)
    (lesion,) = read.lesions
    assert lesion.volume_mm3 == pytest.approx(sum(areas) * SPACING)
    assert lesion.volume_from == "mask"
    assert lesion.z_extent_mm == pytest.approx(6 * SPACING)
    assert lesion.instance_ids == (1, 2, 3, 4, 5, 6) and lesion.slices == 6
    assert [(p.instance_id, p.lesion_index) for p in lesion.parts] == [(i, 0) for i in range(1, 7)]
    assert (lesion.long_axis_mm, lesion.short_axis_mm) == (10.0, 10.0)
    # box edges 10..20 → pixel centres 9.5..19.5: the centre is pixel 14.5 from the first's
    assert lesion.centre_mm == pytest.approx((-85.5, -85.5, 2.5 * SPACING))
    assert lesion.class_probabilities == {"benign": pytest.approx(0.2), "malignant": 0.8}
    out = read.to_dict()
    assert out["lesion_count"] == 1 and out["lesions"][0]["volume_mm3"] == 850.0
    assert json.loads(json.dumps(out)) == out


def test_a_gap_of_one_slice_still_joins_and_counts_the_skipped_slice():
    read = series_volume(stack([40.0, 60.0, None, 60.0, 40.0]))
    (lesion,) = read.lesions
    assert lesion.instance_ids == (1, 2, 4, 5)
    assert lesion.volume_mm3 == pytest.approx((40 + 60 + 60 + 60 + 40) * SPACING)
    assert lesion.z_extent_mm == pytest.approx(5 * SPACING)


def test_a_gap_of_two_slices_makes_two_lesions():
    read = series_volume(stack([40.0, 60.0, None, None, 60.0, 40.0]))
    assert read.read_as == "volume" and read.lesion_count == 2
    assert sorted(lesion.instance_ids for lesion in read.lesions) == [(1, 2), (5, 6)]


def test_unsorted_input_is_ordered_by_position_along_the_normal():
    slices = stack([10.0, 20.0, 30.0, 40.0])
    shuffled = [slices[2], slices[0], slices[3], slices[1]]
    read = series_volume(shuffled)
    assert read.instance_ids == (1, 2, 3, 4)
    assert read.lesions[0].parts[0].area_mm2 == 10.0
    # feet first: positions descending along the instance numbers
    backwards = [axial(i, -i * SPACING, record()) for i in (1, 2, 3)]
    assert series_volume(backwards).instance_ids == (3, 2, 1)


def test_slice_spacing_comes_from_the_positions_not_the_thickness():
    slices = stack([50.0, 50.0, 50.0], slice_thickness=5.0)
    (lesion,) = series_volume(slices).lesions
    assert lesion.volume_mm3 == pytest.approx(150.0 * SPACING)


def test_lesions_side_by_side_stay_apart_and_a_small_one_inside_a_large_one_joins():
    left, right = (10.0, 10.0, 20.0, 20.0), (40.0, 10.0, 50.0, 20.0)
    slices = [axial(i, i * SPACING, record(left), record(right)) for i in range(3)]
    assert series_volume(slices).lesion_count == 2
    pole = axial(3, 3 * SPACING, record((14.0, 14.0, 16.0, 16.0), area=3.0))
    assert series_volume([*slices, pole]).lesion_count == 2  # the cap joins the left one


def test_contours_decide_overlap_where_the_model_segments():
    """Two crescent-free L-shapes whose boxes overlap but whose outlines do not."""
    lower = [[0, 0], [20, 0], [20, 4], [4, 4], [4, 20], [0, 20]]
    upper = [[8, 8], [20, 8], [20, 20], [8, 20]]
    slices = [axial(1, 0.0, record((0, 0, 21, 21), contour=lower)),
              axial(2, SPACING, record((8, 8, 21, 21), contour=upper))]
    assert series_volume(slices).lesion_count == 2
    boxes_only = [axial(1, 0.0, record((0, 0, 21, 21))), axial(2, SPACING,
                                                              record((8, 8, 21, 21)))]
    assert series_volume(boxes_only).lesion_count == 1


def test_box_sizes_say_so():
    slices = stack([None, None, None])
    slices = [axial(s.instance_id, s.position[2], record(area=78.5, size_from="box"))
              for s in slices]
    (lesion,) = series_volume(slices).lesions
    assert lesion.volume_from == "box" and lesion.volume_mm3 == pytest.approx(3 * 78.5 * SPACING)


def test_an_oblique_stack_is_a_volume_and_its_centre_is_in_patient_coordinates():
    row, column = (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)  # sagittal: normal along -x
    slices = [SeriesSlice(i, (5.0 - i * 2.0, 0.0, 0.0), (*row, *column), (0.5, 0.5),
                          lesions=(record((0.5, 0.5, 1.5, 1.5), area=1.0),))
              for i in range(3)]
    read = series_volume(slices)
    assert read.read_as == "volume" and read.slice_spacing_mm == pytest.approx(2.0)
    assert read.normal == pytest.approx((-1.0, 0.0, 0.0))
    # box edges 0.5..1.5: pixel-centre index 0.5, 0.25 mm along the row and the column
    assert read.lesions[0].centre_mm == pytest.approx((3.0, 0.25, -0.25))


@pytest.mark.parametrize(("slices", "reason"), [
    (stack([50.0]), volume.SINGLE_SLICE),
    ([axial(1, 0.0, record()), axial(2, SPACING, record(), position=None)], volume.NO_POSITIONS),
    ([axial(1, 0.0), axial(2, SPACING, orientation=None)], volume.NO_POSITIONS),
    ([axial(1, 0.0), axial(2, SPACING, position=(0.0, float("nan"), SPACING))],
     volume.NO_POSITIONS),
    (stack([50.0, 50.0], pixel_spacing=None), volume.NO_PIXEL_SPACING),
    ([axial(1, 0.0), axial(2, SPACING, orientation=(1.0, 0.0, 0.0, 0.0, 0.9, 0.44))],
     volume.MIXED_ORIENTATION),
    (stack([50.0, 50.0], orientation=(1.0, 0.0, 0.0, 1.0, 0.0, 0.0)), volume.BAD_ORIENTATION),
    ([axial(1, 0.0), axial(2, SPACING, frame_of_reference_uid="9.9")],
     volume.MIXED_FRAME_OF_REFERENCE),
    ([axial(1, 0.0), axial(2, 0.0)], volume.DUPLICATE_POSITIONS),
    ([axial(i, i * SPACING, position=(-100.0, -100.0 + i * 0.5, i * SPACING))
      for i in range(4)], volume.TILTED),
    ([axial(i, z) for i, z in enumerate((0.0, 2.5, 5.0, 10.0, 12.5))], volume.GAP),
    ([axial(1, 0.0), axial(2, SPACING, frames=12)], volume.MULTI_FRAME),
])
def test_what_is_not_a_regular_stack_is_read_per_slice_with_its_reason(slices, reason):
    read = series_volume(slices)
    assert (read.read_as, read.reason, read.lesions) == ("per_slice", reason, ())
    assert reason in volume.PER_SLICE_REASONS
    assert read.lesion_count == sum(len(s.lesions) for s in slices)
    assert read.instance_ids == tuple(s.instance_id for s in slices)  # as given


def test_a_slice_from_a_malformed_stored_geometry_has_none_of_it():
    malformed = {"image_position": [1, 2], "image_orientation": "1\\0\\0\\0\\1\\0",
                 "pixel_spacing": [0.0, 1.0], "slice_thickness": "thick",
                 "frame_of_reference_uid": None, "frames": "two"}
    item = SeriesSlice.from_geometry(7, malformed)
    assert (item.position, item.orientation, item.pixel_spacing, item.slice_thickness,
            item.frame_of_reference_uid, item.frames) == (None, None, None, None, "", 1)
    assert SeriesSlice.from_geometry(8, None).position is None


# -- decode keeps the geometry -------------------------------------------------------


def test_decode_keeps_the_geometry(tmp_path: Path):
    ds = image_dataset("geometry", rows=16, columns=16)
    ds.ImagePositionPatient = [-120.5, -98.25, 37.5]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.75, 0.8]
    ds.SliceThickness = 2.5
    ds.SpacingBetweenSlices = 2.0
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
    image = decode(write(ds, tmp_path), LimitsConfig(), 1)
    assert image.image_position == (-120.5, -98.25, 37.5)
    assert image.image_orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert (image.slice_thickness, image.spacing_between_slices) == (2.5, 2.0)
    assert image.geometry() == {
        "image_position": [-120.5, -98.25, 37.5],
        "image_orientation": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        "pixel_spacing": [0.75, 0.8], "slice_thickness": 2.5,
        "spacing_between_slices": 2.0,
        "frame_of_reference_uid": "1.2.826.0.1.3680043.8.498.1", "frames": 1}


def test_malformed_geometry_is_none_never_an_exception(tmp_path: Path):
    ds = image_dataset("bad-geometry", rows=16, columns=16)
    ds.ImagePositionPatient = [1.0, 2.0]  # wrong length
    ds.ImageOrientationPatient = ["NaN", 0, 0, 0, 1, 0]
    ds.SliceThickness = "-1"
    ds.SpacingBetweenSlices = [1.0, 2.0]
    del ds.PixelSpacing
    ds.ImagerPixelSpacing = [0.2, 0.2]  # at the detector: not the patient plane
    image = decode(write(ds, tmp_path), LimitsConfig(), 1)
    assert (image.image_position, image.image_orientation, image.slice_thickness,
            image.spacing_between_slices, image.frame_of_reference_uid) == (
        None, None, None, None, "")
    assert image.pixel_spacing == (0.2, 0.2) and image.geometry()["pixel_spacing"] is None


def test_slice_geometry_reads_text_that_is_not_a_number(tmp_path: Path):
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = image_dataset("text-geometry", rows=16, columns=16)
    for keyword, raw in (("ImagePositionPatient", b"a\\b\\c "),
                         ("ImageOrientationPatient", b"1\\0\\0\\0\\1\\inf "),
                         ("SliceThickness", b"thin")):
        tag = Tag(keyword)
        ds[tag] = RawDataElement(tag, "DS", len(raw), raw, 0, False, True)
    geometry = slice_geometry(ds)
    assert geometry["image_position"] is None and geometry["image_orientation"] is None
    assert geometry["slice_thickness"] is None


# -- the store keeps it: v12 ---------------------------------------------------------------


def test_a_v11_database_gains_the_geometry_column(tmp_path: Path):
    path = tmp_path / "box.db"
    conn = db.connect(path)
    db.initialise(conn)
    conn.execute("ALTER TABLE instances DROP COLUMN geometry_json")  # as a v11 box has it
    conn.execute("INSERT INTO instances(id, local_id, study_instance_uid, source, spool_path,"
                 " size_bytes, status, received_at, updated_at)"
                 " VALUES (1, 'l1', 'S', 'dicom', 'p', 1, 'processed', 1, 1)")
    conn.execute("PRAGMA user_version=11")
    conn.close()
    conn = db.open_database(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION >= 12
    assert "geometry_json" in columns(conn, "instances")
    assert conn.execute("SELECT geometry_json FROM instances").fetchone()[0] is None
    conn.close()
    again = db.open_database(path)  # opening an upgraded database changes nothing
    assert again.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 1
    again.close()


def _store(conn, series: str, z: float | None, area: float | None,
           assessment: str = "finding") -> int:
    """One analysed axial slice of study S stored as the worker stores it."""
    from engine.inference.lesions import Lesion

    now = time.time()
    instance = conn.execute(
        "INSERT INTO instances(local_id, source, spool_path, size_bytes, status, received_at,"
        " updated_at) VALUES (?, 'dicom', 'p', 1, 'processing', ?, ?)",
        (f"l{now}-{z}-{series}", now, now)).lastrowid
    lesions = [] if area is None else [Lesion(
        "malignant", 0.9, (10.0, 10.0, 20.0, 20.0), 0, 10.0, 10.0, area, 10.0, 10.0, area,
        "mm", "mask")]
    geometry = None if z is None else {
        "image_position": [-100.0, -100.0, z], "image_orientation": list(AXIAL),
        "pixel_spacing": [1.0, 1.0], "slice_thickness": SPACING,
        "spacing_between_slices": None, "frame_of_reference_uid": "1.2.3", "frames": 1}
    ResultStore(conn).complete(
        instance_id=instance,
        identity={"study_instance_uid": "S", "series_instance_uid": series, "modality": "CT"},
        findings=InstanceFindings(probability=0.9, finding=bool(lesions), alert=False,
                                  boxes=[], heatmap=None, key_frame=0, assessment=assessment,
                                  lesions=lesions),
        warnings=[], model_id="m@1", backend="onnxruntime/fp32", frames_inferred=1,
        timings={}, geometry=geometry)
    return instance


def test_a_study_s_series_are_read_as_volumes_from_the_store(conn):
    ids = [_store(conn, "ct", i * SPACING, 50.0) for i in range(6)]
    _store(conn, "ct", 6 * SPACING, 50.0, assessment="not_assessable")  # a slice, no lesion
    old = [_store(conn, "old", None, 50.0) for _ in range(2)]  # analysed before v12
    read = study_volumes(conn, "S")
    by_series = {s.series_instance_uid: s for s in read.series}
    ct = by_series["ct"]
    assert (ct.read_as, ct.lesion_count, len(ct.instance_ids)) == ("volume", 1, 7)
    assert ct.lesions[0].instance_ids == tuple(ids)
    assert ct.lesions[0].volume_mm3 == pytest.approx(6 * 50.0 * SPACING)
    assert (by_series["old"].read_as, by_series["old"].reason) == ("per_slice", "no_positions")
    assert by_series["old"].instance_ids == tuple(old)
    assert read.lesion_count == 1 + 2 and read.volumes == 1
    assert json.loads(json.dumps(read.to_dict()))["lesion_count"] == 3
    assert study_volumes(conn, "nothing").series == ()


def test_ellipse_volume_of_a_sphere_sampled_in_slices_is_close():
    """The volume estimate itself: a 20 mm sphere cut every 2.5 mm, exact disc areas."""
    radius = 10.0
    zs = [z for z in (k * SPACING - 11.25 for k in range(10)) if abs(z) < radius]
    def disc(z: float) -> dict:  # the cross-section and the box around it
        r = math.sqrt(radius**2 - z**2)
        return record(box=(50 - r, 50 - r, 50 + r, 50 + r), area=math.pi * r**2)

    slices = [axial(i, z, disc(z)) for i, z in enumerate(zs)]
    (lesion,) = series_volume(slices).lesions
    assert lesion.volume_mm3 == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.03)


def test_the_phantom_series_is_a_stack_with_its_truth(tmp_path: Path):
    import numpy as np

    from phantoms.series import generate_series, write_series

    series = generate_series(np.random.default_rng(3), slices=16, size=128, spacing_mm=2.0,
                             lesions=1, diameters_mm=(20.0, 24.0))
    (truth,) = series.lesions
    paths = write_series(series, tmp_path)
    images = [decode(p, LimitsConfig(), 1) for p in (paths[0], paths[-1])]
    assert [i.image_position[2] for i in images] == [0.0, 30.0]
    assert images[0].frame_of_reference_uid == images[1].frame_of_reference_uid != ""
    assert images[0].series_instance_uid == images[1].series_instance_uid
    assert images[0].slice_thickness == images[0].spacing_between_slices == 2.0
    sections = sum(t.area_mm2 for p in series.slices for t in p.lesions)
    assert sections * 2.0 == pytest.approx(truth.volume_mm3, rel=0.1)
    slices = [SeriesSlice(k, position, AXIAL, series.pixel_spacing, lesions=tuple(
        record(t.box, t.area_mm2) for t in phantom.lesions))
        for k, (phantom, position) in enumerate(zip(series.slices, series.positions,
                                                    strict=True))]
    (found,) = series_volume(slices).lesions
    assert all(abs(a - b) < 1.0 for a, b in zip(found.centre_mm, truth.centre_mm, strict=True))


def test_a_malformed_record_is_read_by_its_box_or_left_out():
    bad_contour = record(contour=[[10, 10], [20, "x"], [20, 20]])
    no_box = {**record(), "box": [1, 2, 3]}
    slices = [axial(1, 0.0, bad_contour, no_box), axial(2, SPACING, record(area=None))]
    (lesion,) = series_volume(slices).lesions
    assert lesion.instance_ids == (1, 2)
    assert lesion.parts[1].area_mm2 == pytest.approx(math.pi / 4 * 100)  # the box's ellipse


# -- hostile geometry and records (a red-team pass): read per slice, never a crash ----------


def test_slices_of_different_pixel_spacings_are_read_per_slice():
    """One slice's spacing 7 000 times finer made the common grid 7 000² times larger (a
    55 GiB raster, a 500 on the study page); the series is now read per slice."""
    slices = stack([80.0] * 4)
    slices[2] = axial(3, 2 * SPACING, record(area=80.0), pixel_spacing=(0.7, 0.7))
    assert series_volume(slices).reason == volume.MIXED_PIXEL_SPACING


@pytest.mark.parametrize("changes", [
    {"pixel_spacing": (1e-4, 1e-4)},  # a cell of a tenth of a micrometre
    {"pixel_spacing": (1e4, 1e4)},  # of ten metres
])
def test_implausible_spacing_is_read_per_slice(changes):
    assert series_volume(stack([80.0] * 4, **changes)).reason == volume.IMPLAUSIBLE_GEOMETRY


def test_positions_no_body_has_are_read_per_slice():
    far = [axial(i + 1, i * 1e26, record(area=80.0)) for i in range(3)]
    assert series_volume(far).reason == volume.IMPLAUSIBLE_GEOMETRY
    huge = [axial(i + 1, 1.7e308 - i, record()) for i in range(3)]
    assert series_volume(huge).reason == volume.IMPLAUSIBLE_GEOMETRY
    reading = series_volume(far)
    assert json.loads(json.dumps(reading.to_dict(), allow_nan=False))["lesion_count"] == 3


def test_a_huge_box_costs_a_bounded_raster_and_malformed_records_do_not_crash():
    huge = record(box=(0.0, 0.0, 1e6, 1e6), area=1.0)
    odd = {**record(), "class_probabilities": "malignant", "area_mm2": float("inf")}
    reading = series_volume([axial(1, 0.0, huge, odd), axial(2, SPACING, huge)])
    assert reading.read_as == volume.READ_AS_VOLUME
    assert all(math.isfinite(lesion.volume_mm3) for lesion in reading.lesions)


def test_a_series_with_more_records_than_the_box_reads_as_a_volume_is_read_per_slice():
    slices = [axial(i + 1, i * SPACING, *[record()] * 25) for i in range(81)]
    reading = series_volume(slices)
    assert reading.reason == volume.TOO_MANY_RECORDS and reading.lesion_count == 81 * 25


@pytest.mark.slow
def test_a_large_series_of_outlined_lesions_is_read_as_a_volume():
    """2 000 records of 96-point outlines (what a study page reads; they once cost 3 to 18 s
    there, 0.6 s now: docs/decisions/0034-volume-reading-bounded.md) make ten 3-D lesions."""
    def ring(cx: float, radius: float) -> dict:
        angles = [2 * math.pi * k / 96 for k in range(96)]
        contour = [[cx + radius * math.cos(a), 60 + radius * math.sin(a)] for a in angles]
        return record(box=(cx - radius, 60 - radius, cx + radius, 60 + radius),
                      area=math.pi * radius**2 * 0.7, contour=contour)

    slices = [axial(i + 1, i * SPACING, *(ring(60 + 110 * k, 50) for k in range(10)))
              for i in range(200)]
    reading = series_volume(slices)
    assert reading.read_as == volume.READ_AS_VOLUME and reading.lesion_count == 10
    assert all(lesion.slices == 200 for lesion in reading.lesions)
