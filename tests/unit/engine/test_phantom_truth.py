"""Phantom truth: lesion classes, masks, pixel spacing and sizes in mm, as files carry them."""

from __future__ import annotations

import json
import math

import numpy as np
import pydicom
import pytest

from demo.model import CLASS_COVER, GRID, MASK_GRID, lesion_maps
from engine.imaging.decode import decode
from engine.settings import LimitsConfig
from phantoms import dicom as pd
from phantoms.images import (
    CLASSES,
    CT_FOV_MM,
    US_DEPTH_MM,
    Phantom,
    feret,
    generate,
    generate_sweep,
)


def _lesions(kind: str, count: int, size=None) -> list[tuple[Phantom, object]]:
    out = []
    seed = 0
    while len(out) < count:
        p = generate(kind, np.random.default_rng([77, seed]), size, lesion=True)
        out += [(p, t) for t in p.lesions]
        seed += 1
    return out


def test_feret_of_known_shapes():
    rect = np.zeros((20, 30), bool)
    rect[5:9, 10:20] = True  # 4 rows x 10 columns
    long, short = feret(rect)
    assert long == pytest.approx(math.hypot(10, 4))
    assert short == pytest.approx(2 * 10 * 4 / math.hypot(10, 4))  # across the diagonal
    yy, xx = np.mgrid[0:101, 0:101]
    disc = (yy - 50) ** 2 + (xx - 50) ** 2 <= 40**2
    long, short = feret(disc)
    assert 80 <= long <= 82 and 79 <= short <= long
    square = np.ones((10, 10), bool)  # pixels twice as tall as wide: 20 mm x 10 mm
    assert feret(square, (2.0, 1.0))[0] == pytest.approx(math.hypot(20, 10))
    assert feret(np.zeros((5, 5), bool)) == (0.0, 0.0)


@pytest.mark.parametrize(("kind", "size"), [("ct", None), ("us", None), ("us", (240, 320))])
def test_every_lesion_has_a_class_mask_box_and_sizes(kind, size):
    for p, t in _lesions(kind, 12, size):
        h, w = p.image.shape
        assert t.label in CLASSES
        assert p.boxes == [x.box for x in p.lesions] and p.lesion
        full = t.full_mask(h, w)
        ys, xs = np.nonzero(full)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == t.box
        assert t.area_px == full.sum() > 0
        row_mm, col_mm = p.spacing
        assert row_mm == col_mm  # square pixels
        assert t.long_axis_mm == pytest.approx(t.long_axis_px * col_mm)
        assert t.short_axis_mm == pytest.approx(t.short_axis_px * col_mm)
        assert t.area_mm2 == pytest.approx(t.area_px * row_mm * col_mm)
        assert t.short_axis_mm <= t.long_axis_mm
        # the long axis spans at least the box's longer side, at most its diagonal
        bw, bh = t.box[2] - t.box[0], t.box[3] - t.box[1]
        assert max(bw, bh) - 1e-9 <= t.long_axis_px <= math.hypot(bw, bh) + 1e-9
        record = t.to_dict()
        assert set(record) >= {"class", "box", "long_axis_mm", "short_axis_mm", "area_mm2"}
    union = sum(x.area_px for x in p.lesions)
    assert p.truth_mask().sum() == union  # lesions never overlap


def test_pixel_spacing_gives_the_field_of_view():
    for seed in range(6):
        ct = generate("ct", np.random.default_rng(seed), None)
        us = generate("us", np.random.default_rng(seed), None)
        assert CT_FOV_MM[0] <= ct.spacing[1] * ct.image.shape[1] <= CT_FOV_MM[1]
        assert US_DEPTH_MM[0] <= us.spacing[0] * us.image.shape[0] <= US_DEPTH_MM[1]
        assert 0.58 <= ct.spacing[1] <= 1.65
    normal = generate("ct", np.random.default_rng(1), 256, lesion=False)
    assert normal.lesions == [] and not normal.truth_mask().any() and normal.spacing


def _compactness(mask: np.ndarray) -> float:
    """Perimeter² / (4π area): 1 for a disc, larger for lobulated or spiculated outlines."""
    padded = np.pad(mask, 1)
    edges = (np.abs(np.diff(padded.astype(int), axis=0)).sum()
             + np.abs(np.diff(padded.astype(int), axis=1)).sum())
    return float(edges) ** 2 / (4 * math.pi * mask.sum())


@pytest.mark.slow
def test_the_class_shows_in_the_picture():
    found = _lesions("ct", 40, 384) + _lesions("us", 40, (300, 400))
    labels = [t.label for _, t in found]
    assert labels.count("benign") >= 15 and labels.count("malignant") >= 15

    def mean(what, label, kind=None):
        return np.mean([what(p, t) for p, t in found
                        if t.label == label and (kind is None or p.kind == kind)])

    def outline(p, t):
        return _compactness(t.mask) / (t.long_axis_px / max(t.short_axis_px, 1))

    def margin(p, t):  # spread of grey values inside: malignant lesions are mottled
        return float(p.image[t.full_mask(*p.image.shape)].std())

    def taller(p, t):
        return (t.box[3] - t.box[1]) > 1.1 * (t.box[2] - t.box[0])

    assert mean(outline, "malignant") > 1.2 * mean(outline, "benign")
    assert mean(margin, "malignant", "ct") > 1.2 * mean(margin, "benign", "ct")
    assert mean(taller, "malignant", "us") > mean(taller, "benign", "us") + 0.4


def test_sweep_frames_carry_their_own_truth():
    frames = generate_sweep(np.random.default_rng(8), frames=8, size=(240, 320), lesion=True)
    assert [len(f.lesions) for f in frames] == [len(f.boxes) for f in frames]
    assert frames[0].lesions == [] and frames[-1].lesions == []
    middle, early = frames[4].lesions[0], frames[2].lesions[0]
    assert middle.label == early.label and middle.long_axis_mm > early.long_axis_mm
    assert all(f.spacing == frames[0].spacing for f in frames)


def test_dicom_carries_the_spacing_the_box_reads(tmp_path):
    ct = generate("ct", np.random.default_rng(4), 384, lesion=True)
    ds = pydicom.dcmread(pd.write_dicom(pd.ct_dataset(ct), tmp_path / "ct.dcm"))
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx(list(ct.spacing))
    image = decode(tmp_path / "ct.dcm", LimitsConfig(), 8)
    assert image.pixel_spacing == pytest.approx(ct.spacing) and image.spacing_source == \
        "Pixel Spacing"
    us = generate("us", np.random.default_rng(4), (300, 400), lesion=True)
    ds = pydicom.dcmread(pd.write_dicom(pd.us_dataset(us), tmp_path / "us.dcm"))
    region = ds.SequenceOfUltrasoundRegions[0]
    assert region.PhysicalUnitsXDirection == region.PhysicalUnitsYDirection == 3  # cm
    assert region.PhysicalDeltaX == pytest.approx(us.spacing[1] / 10)
    assert region.PhysicalDeltaY == pytest.approx(us.spacing[0] / 10)
    assert (region.RegionLocationMaxX1, region.RegionLocationMaxY1) == (399, 299)
    image = decode(tmp_path / "us.dcm", LimitsConfig(), 8)
    assert image.pixel_spacing == pytest.approx(us.spacing)
    assert image.spacing_source == "ultrasound region"
    frames = generate_sweep(np.random.default_rng(5), frames=4)
    pd.write_dicom(pd.us_multiframe_dataset(frames), tmp_path / "cine.dcm")
    assert decode(tmp_path / "cine.dcm", LimitsConfig(), 8).pixel_spacing == \
        pytest.approx(frames[0].spacing)
    plain = pydicom.dcmread(pd.write_dicom(pd.us_dataset(us.image), tmp_path / "plain.dcm"))
    assert "SequenceOfUltrasoundRegions" not in plain  # no phantom, no calibration claimed


def test_cli_truth_gives_classes_and_sizes(tmp_path):
    assert pd.main(["--out", str(tmp_path), "--count", "4", "--kind", "mixed", "--seed", "2",
                    "--lesion-fraction", "1"]) == 0
    truth = json.loads((tmp_path / "truth.json").read_text())
    singles = [t for t in truth if "frames" not in t]
    assert singles and all(t["pixel_spacing_mm"] and t["lesions"] for t in singles)
    for t in singles:
        assert [les["box"] for les in t["lesions"]] == [[round(v, 2) for v in b]
                                                        for b in t["boxes"]]
        for les in t["lesions"]:
            assert les["class"] in CLASSES
            assert 0 < les["short_axis_mm"] <= les["long_axis_mm"] and les["area_mm2"] > 0
    cine = next(t for t in truth if "frames" in t)
    assert any(f["lesions"] for f in cine["frames"])


def test_lesion_maps_are_the_model_targets():
    p = generate("ct", np.random.default_rng(12), 512, lesion=True)
    cover, classes = lesion_maps(p)
    assert cover.shape == (MASK_GRID, MASK_GRID) and classes.shape == (GRID, GRID)
    # the 512 px image is halved to 256 px, cells are 4 x 4 input pixels = 8 x 8 source pixels
    assert cover.sum() * 64 == pytest.approx(p.truth_mask().sum(), rel=0.05)
    assert cover.min() >= 0 and cover.max() <= 1
    for t in p.lesions:
        x0, y0, x1, y1 = (v / 2 / 8 for v in t.box)
        cy, cx = int((y0 + y1) / 2), int((x0 + x1) / 2)
        assert classes[cy, cx] == CLASSES.index(t.label)
    assert (classes >= 0).sum() >= len(p.lesions) and (classes < 0).any()
    assert CLASS_COVER > 0
    empty_cover, empty_classes = lesion_maps(generate("us", np.random.default_rng(1), 256,
                                                      lesion=False))
    assert not empty_cover.any() and (empty_classes == -1).all()


def test_a_lesion_never_reaches_beyond_its_painted_reach():
    from phantoms.images import _lesion_shape, _reach

    rng = np.random.default_rng(12)
    for kind in ("ct", "us"):
        for label in CLASSES:
            for _ in range(25):
                shape = _lesion_shape(rng, 200.0, 200.0, float(rng.uniform(4, 40)), label, kind)
                rows, cols, soft = shape.mask(400, 400)
                ys, xs = np.nonzero(soft >= 0.5)
                reach = np.hypot(cols.start + xs + 0.5 - 200.0, rows.start + ys + 0.5 - 200.0)
                assert reach.max() <= _reach(shape)


def test_lesions_are_placed_by_their_reach_inside_the_fan_and_clear_of_taken_organs():
    """A lesion's truth shows only what the image shows: no part of it beyond the edge of
    the ultrasound fan, none laid over a structure already there (a kidney, say)."""
    from phantoms.images import _place_lesion, _Sector

    rng = np.random.default_rng(13)
    h, w = 300, 400
    fan = _Sector(rng, h, w)
    organ = (200.0, 170.0, 40.0)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    placed = 0
    for i in range(40):
        taken = [organ]
        r = float(w * rng.uniform(0.04, 0.15))
        shape = _place_lesion(rng, fan, r, CLASSES[i % 2], "us", taken, 0.04 * w, 0.02 * w)
        if shape is None:
            continue
        placed += 1
        truth = shape.truth(h, w, CLASSES[i % 2], (0.1, 0.1))
        mask = truth.full_mask(h, w)
        assert fan.mask[mask].min() >= 0.5, "lesion truth beyond the imaged fan"
        assert np.hypot(xx[mask] - organ[0], yy[mask] - organ[1]).min() > organ[2]
        assert taken[-1][:2] == (shape.cx, shape.cy)  # its reach is taken for what follows
    assert placed >= 30


def test_ct_lesions_stay_clear_of_the_kidneys_and_vena_cava(monkeypatch):
    """Lesions laid over a kidney or the vena cava added their contrast to an organ's:
    no cross-section shows that, and their truth could not be seen."""
    import phantoms.images as phantoms

    seen = []
    original = phantoms._place_lesion

    def spy(rng, inside, r, label, kind, taken, fallback, smallest):
        seen.append(list(taken))
        return original(rng, inside, r, label, kind, taken, fallback, smallest)

    monkeypatch.setattr(phantoms, "_place_lesion", spy)
    p = generate("ct", np.random.default_rng(31), 512, lesion=True)
    assert p.lesion and seen
    w = h = 512
    # the two kidneys sit either side of the midline, the vena cava left of the aorta
    kidneys = [t for t in seen[0] if abs(t[1] - h / 2) < 0.15 * h and abs(abs(t[0] - w / 2)
                                                                         - 0.15 * w) < 0.03 * w]
    assert len(kidneys) == 2
    for truth in p.lesions:
        ys, xs = np.nonzero(truth.full_mask(h, w))
        for kx, ky, reach in kidneys:
            assert np.hypot(xs + 0.5 - kx, ys + 0.5 - ky).min() > reach
