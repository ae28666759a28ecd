"""web.render: window/level in modality units, frames, colour, heatmap and key image.

The viewer draws from the display previews made by decode()'s own pipeline
(``engine.imaging.preview``), so its default rendering is checked
against decode() itself; the windows and overlays against numbers worked out
by hand. ``load_frame`` here views a copy of each file in a folder of its own
(a preview is written beside the image, never beside pydicom's test files).
"""

from __future__ import annotations

import io
import os
import shutil
from itertools import count
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import pixel_array

from engine.imaging import preview_file
from engine.imaging.decode import DecodeError, decode
from engine.imaging.preview_file import FrameNotPreviewed, FramePreview
from engine.settings import LimitsConfig
from firmware_app.storage.spool import preview_path
from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import generate
from tests.corpus import data_file, image_dataset, write
from web import render
from web.render import (
    BOX_COLOUR,
    Window,
    clear_cache,
    heatmap_png,
    key_image_png,
    render_png,
)

LIMITS = LimitsConfig()
_copies = count()
_state: dict[str, Path] = {}


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path_factory):
    clear_cache()
    _state["base"] = tmp_path_factory.getbasetemp()
    _state["views"] = tmp_path_factory.mktemp("viewed")
    yield
    clear_cache()


def load_frame(path: Path, frame: int, limits: LimitsConfig = LIMITS,
               max_frames: int = 1000) -> FramePreview:
    """render.load_frame on ``path``, or on a copy of it when it is not a test's own file."""
    if not Path(path).resolve().is_relative_to(_state["base"].resolve()):
        copy = _state["views"] / f"{next(_copies)}_{Path(path).name}"
        shutil.copyfile(path, copy)
        path = copy
    return render.load_frame(path, frame, limits, max_frames)


def png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(png(data))


def ct_file(tmp_path: Path, hu: np.ndarray, name: str = "ct.dcm", **attrs) -> Path:
    """A CT file holding exactly ``hu`` (stored = HU + 1024, slope 1), window 40/400."""
    rows, columns = hu.shape
    ds = image_dataset(name, rows=rows, columns=columns)
    ds.PixelData = (hu.astype(np.int32) + 1024).astype("<u2").tobytes()
    for keyword, value in attrs.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return write(ds, tmp_path, name)


def dicom_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2 linear window to 8 bits, worked out independently."""
    unit = np.clip((values - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    return np.rint(unit * 255).astype(np.uint8)


# -- grey frames and window/level -------------------------------------------------------


def test_ct_values_are_hounsfield_units_with_the_files_window(tmp_path: Path) -> None:
    hu = np.array([[-1000, -100, 0, 40], [41, 100, 240, 1000]], dtype=np.int32)
    hu = np.repeat(np.repeat(hu, 4, axis=0), 4, axis=1)  # 8 x 16
    image = load_frame(ct_file(tmp_path, hu), 0, LIMITS)
    assert isinstance(image, FramePreview)
    assert image.values.dtype == np.int16 and image.values.shape == (8, 16)  # exact, compact
    np.testing.assert_array_equal(image.values, hu)
    assert image.default_window == Window(40.0, 400.0)
    assert image.value_range == (-1000.0, 1000.0)
    assert (image.rows, image.columns, image.frame, image.total_frames) == (8, 16, 0, 1)
    assert image.modality == "CT" and not image.colour and not image.invert


def test_narrow_window_makes_the_centre_mid_grey_and_values_above_white(tmp_path: Path) -> None:
    hu = np.tile(np.array([-100, 30, 40, 50, 300], dtype=np.int32), (4, 1))
    image = load_frame(ct_file(tmp_path, hu), 0, LIMITS)
    out = pixels(render_png(image, Window(40.5, 11)))
    assert png(render_png(image, Window(40.5, 11))).mode == "L"
    assert out.shape == (4, 5)
    assert out[0, 2] in (127, 128)  # the value at the centre: mid-grey
    assert out[0, 3] == 255 and out[0, 4] == 255  # above the window: white
    assert out[0, 0] == 0 and out[0, 1] == 0  # below: black
    np.testing.assert_array_equal(out, dicom_window(hu.astype(float), 40.5, 11))


def test_window_level_changes_the_image_as_the_formula_says(tmp_path: Path) -> None:
    hu = np.tile(np.arange(-1000, 1000, 8, dtype=np.int32), (3, 1))  # 3 x 250
    image = load_frame(ct_file(tmp_path, hu), 0, LIMITS)
    soft = pixels(render_png(image))  # the file's 40/400
    lung = pixels(render_png(image, Window(-600, 1500)))
    bone = pixels(render_png(image, Window(400, 2000)))
    np.testing.assert_array_equal(soft, dicom_window(hu.astype(float), 40, 400))
    np.testing.assert_array_equal(lung, dicom_window(hu.astype(float), -600, 1500))
    np.testing.assert_array_equal(bone, dicom_window(hu.astype(float), 400, 2000))
    assert not np.array_equal(soft, lung) and not np.array_equal(lung, bone)
    # air is black in a soft-tissue window and grey in a lung window
    assert soft[0, 0] == 0 and 0 < lung[0, 0] < 128


def test_zero_negative_or_non_finite_widths_do_not_break_rendering(tmp_path: Path) -> None:
    hu = np.tile(np.array([0, 39, 40, 41, 80], dtype=np.int32), (2, 1))
    image = load_frame(ct_file(tmp_path, hu), 0, LIMITS)
    for width in (0.0, -5.0):
        out = pixels(render_png(image, Window(40.5, width)))  # treated as width 1: a threshold
        np.testing.assert_array_equal(out[0], [0, 0, 0, 255, 255])
    fallback = pixels(render_png(image, Window(float("nan"), float("inf"))))
    np.testing.assert_array_equal(fallback, pixels(render_png(image)))


def test_default_window_is_the_percentile_window_without_window_attributes(
    tmp_path: Path,
) -> None:
    values = np.arange(10000, dtype=np.int32).reshape(100, 100) - 1000
    path = ct_file(tmp_path, values, WindowCenter=None, WindowWidth=None)
    image = load_frame(path, 0, LIMITS)
    low, high = np.percentile(values, [0.5, 99.5])
    assert image.default_window.width == pytest.approx(high - low + 1)
    assert image.default_window.centre == pytest.approx((low + high) / 2 + 0.5)
    out = pixels(render_png(image))
    expected = np.rint(np.clip((values - low) / (high - low), 0, 1) * 255)
    np.testing.assert_array_equal(out, expected.astype(np.uint8))
    assert 0.005 <= (out == 0).mean() < 0.008  # 0.5 % clipped, plus rounding to 8 bits
    # the same file with a window: that window is the default, not the percentiles
    windowed = load_frame(ct_file(tmp_path, values, "w.dcm"), 0, LIMITS)
    assert windowed.default_window == Window(40.0, 400.0)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "693_J2KI.dcm",
                                  "RG1_UNCR.dcm", "emri_small.dcm", "liver.dcm",
                                  "JPEG2000.dcm", "6154"])
def test_default_rendering_matches_the_workers_decode(name: str) -> None:
    decoded = decode(data_file(name), LIMITS, max_frames=1000)
    for index in decoded.frame_indices[:3]:
        image = load_frame(data_file(name), index, LIMITS)
        out = pixels(render_png(image, max_side=4096)).astype(int)
        worker = np.rint(decoded.frames[decoded.frame_indices.index(index)] * 255).astype(int)
        assert out.shape == worker.shape
        assert np.abs(out - worker).max() <= 1, (name, index)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    hu = np.tile(np.arange(-200, 300, 10, dtype=np.int32), (2, 1))
    mono2 = load_frame(ct_file(tmp_path, hu, "m2.dcm"), 0, LIMITS)
    mono1 = load_frame(ct_file(tmp_path, hu, "m1.dcm", PhotometricInterpretation="MONOCHROME1"),
                       0, LIMITS)
    assert mono1.invert and not mono2.invert
    for window in (None, Window(0, 200)):
        dark, light = pixels(render_png(mono1, window)), pixels(render_png(mono2, window))
        np.testing.assert_array_equal(dark.astype(int), 255 - light.astype(int))
    # the highest values are black on MONOCHROME1
    assert pixels(render_png(mono1))[0, -1] == 0


def test_small_8_bit_images_show_as_stored_like_the_worker(tmp_path: Path) -> None:
    ds = image_dataset("us8", rows=4, columns=64)
    for keyword in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
        delattr(ds, keyword)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (4, 1))
    ds.PixelData = ramp.tobytes()
    image = load_frame(write(ds, tmp_path), 0, LIMITS)
    assert image.default_window == Window(128.0, 256.0)
    np.testing.assert_array_equal(pixels(render_png(image)), ramp)


# -- frames, errors and the cache --------------------------------------------------------


def test_multi_frame_selection_gives_different_frames() -> None:
    path = data_file("emri_small.dcm")
    first, middle = load_frame(path, 0, LIMITS), load_frame(path, 5, LIMITS)
    assert (first.frame, middle.frame) == (0, 5)
    assert first.total_frames == middle.total_frames == 10
    assert not np.array_equal(first.values, middle.values)
    assert not np.array_equal(pixels(render_png(first)), pixels(render_png(middle)))
    ds = pydicom.dcmread(path)
    np.testing.assert_array_equal(middle.values, pixel_array(ds, index=5).astype(float))


def test_only_the_frames_the_model_analysed_are_previewed(tmp_path: Path) -> None:
    path = data_file("emri_small.dcm")  # 10 frames; the worker analyses 3 of them
    shown = load_frame(path, 5, LIMITS, max_frames=3)
    assert shown.previewed == (0, 5, 9) and shown.total_frames == 10
    with pytest.raises(FrameNotPreviewed):
        load_frame(path, 4, LIMITS, max_frames=3)
    with pytest.raises(FrameNotPreviewed):
        load_frame(path, -1, LIMITS)
    single = ct_file(tmp_path, np.zeros((8, 8), dtype=np.int32))
    with pytest.raises(FrameNotPreviewed):
        load_frame(single, 1, LIMITS)


def test_unreadable_files_and_limits_raise_decode_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"hello" * 100)
    with pytest.raises(DecodeError, match="not a DICOM file"):
        load_frame(junk, 0, LIMITS)
    with pytest.raises(DecodeError, match="over the 16 limit"):
        load_frame(data_file("CT_small.dcm"), 0, LimitsConfig(max_rows=16, max_columns=16))
    with pytest.raises(FileNotFoundError):
        load_frame(tmp_path / "gone.dcm", 0, LIMITS)


def test_frames_are_cached_read_only_and_refreshed_when_the_preview_changes(
    tmp_path: Path,
) -> None:
    path = ct_file(tmp_path, np.full((8, 8), 10, dtype=np.int32))
    first = load_frame(path, 0, LIMITS)
    assert load_frame(path, 0, LIMITS) is first
    assert not first.values.flags.writeable
    ct_file(tmp_path, np.full((8, 8), 99, dtype=np.int32))  # rewritten in place
    assert load_frame(path, 0, LIMITS) is first  # the preview stands for the image
    preview_path(path).unlink()
    assert load_frame(path, 0, LIMITS).values[0, 0] == 99  # made again from the image


@pytest.mark.slow
def test_a_large_image_is_previewed_at_display_size_with_boxes_in_source_pixels(
    tmp_path: Path,
) -> None:
    ds = image_dataset("large", rows=3000, columns=4000)
    hu = np.full((3000, 4000), -1000, np.int32)
    hu[1000:2000, 2000:3000] = 500
    ds.PixelData = (hu + 1024).astype("<u2").tobytes()
    image = load_frame(write(ds, tmp_path, "large.dcm"), 0, LIMITS)
    assert image.values.shape == (1536, 2048) and (image.rows, image.columns) == (3000, 4000)
    assert image.value_range == (-1000.0, 500.0)
    assert preview_path(tmp_path / "large.dcm").stat().st_size < 2048 * 1536 * 4 + 4096
    assert render.display_size(image) == (2048, 1536)
    assert pixels(render_png(image)).shape == (1536, 2048)
    box = {"x0": 2000, "y0": 1000, "x1": 3000, "y1": 2000, "label": ""}  # no label tab
    key = pixels(key_image_png(image, None, [box], None, max_side=1024))
    assert key.shape == (768, 1024, 3)
    red = (key[..., 0] == BOX_COLOUR[0]) & (key[..., 1] == BOX_COLOUR[1])
    rows, columns = np.nonzero(red)
    assert (columns.min(), columns.max()) == (512, 767)  # 2000..3000 of 4000 → 512..768
    assert (rows.min(), rows.max()) == (256, 511)


def test_a_torn_preview_is_made_again_from_its_image(tmp_path: Path) -> None:
    """Previews are not synced to disk (they are made from the durable object beside them):
    one a power cut left unreadable is made again; without its image it is a DecodeError
    page, not a crash."""
    path = ct_file(tmp_path, np.arange(64, dtype=np.int32).reshape(8, 8))
    first = load_frame(path, 0, LIMITS)
    preview_path(path).write_bytes(b"PK\x03\x04 not a zip")
    clear_cache()
    with pytest.raises(DecodeError, match="unreadable preview"):
        preview_file.load(preview_path(path), 0)
    again = load_frame(path, 0, LIMITS)
    np.testing.assert_array_equal(again.values, first.values)
    assert preview_file.load(preview_path(path), 0).rows == 8  # whole again on disk
    preview_path(path).write_bytes(b"")  # torn, and its image gone too
    path.unlink()
    clear_cache()
    with pytest.raises(DecodeError, match="unreadable preview"):
        load_frame(path, 0, LIMITS)


# -- colour and size ---------------------------------------------------------------------


def test_colour_images_render_as_rgb() -> None:
    rgb = load_frame(data_file("SC_rgb.dcm"), 0, LIMITS)
    assert rgb.colour and not rgb.invert and rgb.default_window == Window(127.5, 255.0)
    assert rgb.values.shape == (100, 100, 3)
    out = png(render_png(rgb))
    assert out.mode == "RGB"
    expected = pixel_array(pydicom.dcmread(data_file("SC_rgb.dcm")))
    np.testing.assert_array_equal(np.asarray(out), expected)
    # a window on colour changes brightness/contrast of every channel
    darker = pixels(render_png(rgb, Window(200, 100)))
    assert darker.mean() < np.asarray(out).mean()
    for name in ("US1_J2KR.dcm", "examples_palette.dcm", "SC_ybr_full_uncompressed.dcm"):
        image = load_frame(data_file(name), 0, LIMITS)
        picture = png(render_png(image))
        assert image.colour and picture.mode == "RGB", name
        channels = np.asarray(picture).reshape(-1, 3).astype(int)
        assert (np.abs(channels[:, 0] - channels[:, 2]) > 20).any(), f"{name} has colour"


def test_colour_luma_matches_the_workers_grey() -> None:
    for name in ("SC_rgb.dcm", "examples_palette.dcm"):
        rgb = pixels(render_png(load_frame(data_file(name), 0, LIMITS))).astype(float)
        grey = decode(data_file(name), LIMITS, 1).frames[0] * 255
        luma = rgb @ np.array([0.299, 0.587, 0.114])
        assert np.abs(luma - grey).max() < 1.0, name


def test_max_side_downscales_keeping_the_aspect_ratio(tmp_path: Path) -> None:
    hu = np.zeros((200, 300), dtype=np.int32)
    image = load_frame(ct_file(tmp_path, hu), 0, LIMITS)
    assert png(render_png(image)).size == (300, 200)  # within the default: untouched
    small = png(render_png(image, max_side=100))
    assert small.size == (100, 67)
    tall = png(render_png(load_frame(data_file("JPEG2000.dcm"), 0, LIMITS), max_side=128))
    assert tall.size == (32, 128)  # 256 x 1024
    with pytest.raises(ValueError):
        render_png(image, max_side=0)


# -- heatmap -------------------------------------------------------------------------------


def test_heatmap_png_size_transparency_and_hot_quadrant() -> None:
    heat = np.zeros((8, 8), dtype=np.float32)
    heat[1:3, 5:7] = 1.0  # top-right quadrant
    heat[6, 1] = 0.1  # below the floor: invisible
    picture = png(heatmap_png(heat, 200, 120))
    assert picture.mode == "RGBA" and picture.size == (200, 120)
    rgba = np.asarray(picture)
    alpha = rgba[..., 3]
    assert alpha[:60, 100:].max() >= 140  # ~0.6 at the hot spot
    assert alpha.max() <= round(0.6 * 255)
    assert alpha[60:, :100].max() == 0  # bottom-left: only 0.1, below the floor
    assert alpha[:60, :100].max() == 0 and alpha[60:, 100:].max() == 0
    hottest = np.unravel_index(np.argmax(alpha), alpha.shape)
    assert tuple(rgba[hottest][:3]) == (255, 0, 0)  # red at 1.0
    # a lower floor shows the faint spot too; upsampling covers the whole extent
    low = np.asarray(png(heatmap_png(heat, 200, 120, floor=0.05)))[..., 3]
    assert low[60:, :100].max() > 0
    full = np.asarray(png(heatmap_png(np.ones((3, 5)), 50, 30)))[..., 3]
    assert full.min() == full.max() == round(0.6 * 255)


def test_heatmap_ramp_is_yellow_at_the_floor_and_red_at_the_top() -> None:
    ramp = np.linspace(0, 1, 101, dtype=np.float32)[None, :].repeat(2, axis=0)
    rgba = np.asarray(png(heatmap_png(ramp, 101, 2, floor=0.2)))[0]
    assert (rgba[:20, 3] == 0).all()
    assert rgba[30, 1] > rgba[90, 1]  # green falls: yellow → red
    assert rgba[30, 3] < rgba[90, 3]  # alpha rises


def test_heatmap_must_be_two_dimensional() -> None:
    for bad in (np.zeros(5), np.zeros((2, 2, 2)), np.zeros((0, 4))):
        with pytest.raises(ValueError):
            heatmap_png(bad, 10, 10)


# -- key image -----------------------------------------------------------------------------


def test_key_image_draws_the_box_scaled_to_the_output(tmp_path: Path) -> None:
    hu = np.full((200, 400), -1000, dtype=np.int32)  # black
    image = load_frame(ct_file(tmp_path, hu), 0, LIMITS)
    box = {"x0": 100, "y0": 60, "x1": 300, "y1": 160, "score": 0.87, "label": "lesion"}
    out = png(key_image_png(image, None, [box], None, max_side=200))
    assert out.mode == "RGB" and out.size == (200, 100)
    rgb = np.asarray(out)
    colour = np.array(BOX_COLOUR)
    # scale 0.5: left edge at x=50, right edge at x=149, top y=30, bottom y=79
    assert (rgb[40:70, 50] == colour).all() and (rgb[40:70, 149] == colour).all()
    assert (rgb[79, 60:140] == colour).all() and (rgb[30, 60:140] == colour).all()
    assert (rgb[55, 60:140] == 0).all()  # the inside stays clear
    assert (rgb[90:, :40] == 0).all()  # far from the box: untouched
    assert (rgb[:30, 50:150] == colour).all(axis=-1).any()  # the label tab above the box


def test_key_image_label_reads_score_as_percent(tmp_path: Path) -> None:
    image = load_frame(ct_file(tmp_path, np.full((64, 64), -1000, dtype=np.int32)), 0, LIMITS)
    box = {"x0": 10, "y0": 30, "x1": 40, "y1": 50, "score": 0.87, "label": "lesion"}
    plain = np.asarray(png(key_image_png(image, None, [box], None)))
    unlabelled = np.asarray(png(key_image_png(image, None, [{**box, "label": ""}], None)))
    # 64 px sources are shown at 512 px so the label stays legible
    assert plain.shape == (512, 512, 3)
    tab = (plain == np.array(BOX_COLOUR)).all(axis=-1)
    assert tab[: 30 * 8, 80:].sum() > (unlabelled == np.array(BOX_COLOUR)).all(axis=-1)[
        : 30 * 8, 80:].sum()  # "lesion 87%" is a wider tab than "87%"
    # broken boxes are skipped, not fatal
    key_image_png(image, None, [{"x0": "a"}, {"y0": 1}, {**box, "x0": float("nan")}], None)


def test_key_image_blends_the_heatmap_where_it_is_hot(tmp_path: Path) -> None:
    image = load_frame(ct_file(tmp_path, np.zeros((100, 100), dtype=np.int32)), 0, LIMITS)
    heat = np.zeros((4, 4))
    heat[3, 3] = 1.0  # bottom-right
    plain = np.asarray(png(key_image_png(image, Window(0, 400), [], None, max_side=100)))
    blended = np.asarray(png(key_image_png(image, Window(0, 400), [], heat, max_side=100)))
    assert plain.shape == blended.shape == (100, 100, 3)
    np.testing.assert_array_equal(plain[:50, :50], blended[:50, :50])
    corner = blended[95, 95].astype(int)
    assert corner[0] > corner[2] + 50  # warm: red over grey


def test_phantom_ct_round_trip_with_boxes(tmp_path: Path) -> None:
    phantom = generate("ct", np.random.default_rng(3), size=512, lesion=True)
    path = write_dicom(ct_dataset(phantom), tmp_path / "phantom.dcm")
    image = load_frame(path, 0, LIMITS)
    assert image.values.shape == (512, 512)
    np.testing.assert_allclose(image.values, phantom.hu, atol=0.5)
    assert image.default_window == Window(*[round(v, 2) for v in phantom.window])
    boxes = [{"x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3], "score": 0.9, "label": "lesion"}
             for b in phantom.boxes]
    key = png(key_image_png(image, None, boxes, np.random.default_rng(0).random((64, 64))))
    assert key.size == (512, 512)


def test_a_missing_preview_is_made_once_in_the_viewers_sandbox_not_the_web_process(tmp_path):
    import signal

    hu = np.full((64, 64), 40, np.int16)
    first = ct_file(tmp_path, hu, "a.dcm")
    assert load_frame(first, 0, LIMITS).rows == 64
    assert preview_path(first).exists()
    child = render._sandboxes[os.getpid()]._process
    assert child is not None and child.pid != os.getpid()
    os.kill(child.pid, signal.SIGKILL)  # a codec that crashed between requests
    child.wait(10)
    clear_cache()
    assert load_frame(first, 0, LIMITS).rows == 64  # from the preview: no decoder needed
    assert render._sandboxes[os.getpid()]._process.poll() is not None
    assert load_frame(ct_file(tmp_path, hu, "b.dcm"), 0, LIMITS).rows == 64  # a fresh child


@pytest.mark.slow  # a decoder child grows to its memory limit first
def test_an_image_too_big_for_the_viewers_decoder_is_a_page_not_a_dead_viewer(tmp_path):
    small = LimitsConfig(sandbox_memory_mb=64, max_megapixels=300.0)
    big = write(image_dataset("big-view", 4096, 4096), tmp_path, "big.dcm")  # 32 MB of pixels
    with pytest.raises(DecodeError, match=r"64 MB memory limit|decoder crashed"):
        load_frame(big, 0, small)
    hu = np.full((64, 64), 40, np.int16)
    assert load_frame(ct_file(tmp_path, hu, "after.dcm"), 0, small).rows == 64


def test_the_frame_cache_stays_within_its_bounds(tmp_path, monkeypatch):
    """A viewer worker that showed many images keeps at most CACHE_ENTRIES frames and
    CACHE_MAX_BYTES of them; the most recent stays cached (the window dragged on it)."""
    monkeypatch.setattr(render, "CACHE_MAX_BYTES", 3 * 64 * 64 * 2)  # three 64² int16 frames
    files = [ct_file(tmp_path, np.full((64, 64), float(i), np.float32), name=f"c{i}.dcm")
             for i in range(render.CACHE_ENTRIES + 2)]
    for path in files:
        load_frame(path, 0)
    cached = list(render._cache.values())
    assert 0 < len(cached) <= min(render.CACHE_ENTRIES, 3)
    assert sum(f.values.nbytes for f in cached) <= render.CACHE_MAX_BYTES
    assert float(cached[-1].values.mean()) == float(len(files) - 1)  # the latest
    monkeypatch.setattr(render, "CACHE_MAX_BYTES", 64 * 64 * 2 - 1)  # smaller than one frame
    render.clear_cache()
    load_frame(files[0], 0)
    assert not render._cache  # a frame larger than the whole cache is not kept
