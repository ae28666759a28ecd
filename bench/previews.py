"""What display previews cost the worker and save the viewer, per image kind.

For each image the worker's decode is timed without and with writing the
previews (``DecodeSandbox.decode(..., preview_to=...)``), interleaved. The
viewer's work for one study page and its report (load the key frame with the
frame cache emptied, render it through its own window and through a new one,
draw the report's key image) is timed from the stored preview, and, as the
reference measured in the same run, the way the viewer worked before previews:
a full decode in its sandbox for every request. Sizes: the DICOM file, the
preview file, and the memory one loaded frame holds in the viewer.

Images: a 512 × 512 CT phantom (the project's generator), pydicom's 10-frame
MR (``emri_small.dcm``) and a 4096 × 3328 16-bit mammography-sized phantom,
RLE-compressed, as a large full-field detector sends it.

    .venv/bin/python -m bench.previews [--rounds 10]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.data import get_testdata_file
from pydicom.uid import RLELossless

from bench.common import figure, machine, percentiles, phantom_files, save
from engine.imaging import preview_file
from engine.imaging.decode import modality_values, open_dataset
from engine.imaging.sandbox import DecodeSandbox
from engine.settings import LimitsConfig
from firmware_app.storage.spool import preview_path
from tests.corpus import image_dataset, write
from web import render

MAX_FRAMES = 8


def mammography_sized(folder: Path) -> Path:
    """A 4096 × 3328 16-bit image with soft structure, RLE Lossless like many detectors send."""
    rng = np.random.default_rng(5)
    rows, columns = 4096, 3328
    y, x = np.mgrid[0:rows, 0:columns]
    tissue = 1800 + 900 * np.exp(-((x - 400) / 1400.0) ** 2) * np.cos(y / 900.0) ** 2
    stored = (tissue + rng.normal(0, 30, (rows, columns))).clip(0, 4095).astype(np.uint16)
    ds = image_dataset("mammo-sized", rows=rows, columns=columns)
    ds.Modality = "MG"
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = stored.tobytes()
    ds.compress(RLELossless, encoding_plugin="pydicom")
    return write(ds, folder, "mammo.dcm")


def viewer_work(path: Path, frame: int, limits: LimitsConfig) -> None:
    """One study page and its report: key frame loaded, rendered twice, key image drawn."""
    image = render.load_frame(path, frame, limits, MAX_FRAMES)
    render.render_png(image, max_side=2048)
    render.render_png(image, render.Window(image.default_window.centre + 50,
                                           image.default_window.width * 0.8), max_side=2048)
    render.key_image_png(image, None, [], None, max_side=1024)


def main() -> None:
    """Time each image both ways, interleaved, and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clinibox-bench-previews-"))
    ct = phantom_files(work / "ct", 1, "ct", seed=3)[0]
    mr = work / "mr.dcm"
    shutil.copyfile(get_testdata_file("emri_small.dcm"), mr)
    images = {"CT 512×512 phantom": (ct, 0), "MR 10 frames (pydicom emri_small)": (mr, 5),
              "mammography-sized 4096×3328, RLE": (mammography_sized(work), 0)}
    limits = LimitsConfig()
    sandbox = DecodeSandbox(limits)
    sandbox.decode(ct, MAX_FRAMES)  # start the worker's child (once per service life)
    figures: dict = {"machine": machine("numpy", "pydicom", "pillow"), "rounds": args.rounds}
    try:
        for name, (path, frame) in images.items():
            plain, with_previews, stored, per_request = [], [], [], []
            target = preview_path(path)
            for _ in range(args.rounds):
                started = time.perf_counter()
                sandbox.decode(path, MAX_FRAMES)
                plain.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                sandbox.decode(path, MAX_FRAMES, preview_to=target)
                with_previews.append((time.perf_counter() - started) * 1000)
                render.clear_cache()
                started = time.perf_counter()
                viewer_work(path, frame, limits)
                stored.append((time.perf_counter() - started) * 1000)
                render.clear_cache()
                target.unlink()  # the reference: the viewer decodes for every request
                started = time.perf_counter()
                viewer_work(path, frame, limits)
                per_request.append((time.perf_counter() - started) * 1000)
            ds, header = open_dataset(path, limits)
            full = modality_values(ds, header, frame).nbytes
            loaded = preview_file.load(target, frame).values.nbytes
            worker, worker_ref = percentiles(with_previews), percentiles(plain)
            viewer, viewer_ref = percentiles(stored), percentiles(per_request)
            figures[name] = {
                "dicom_bytes": path.stat().st_size, "preview_bytes": target.stat().st_size,
                "frame_bytes_in_viewer": loaded, "full_frame_bytes_decoded": full,
                "worker_decode": worker_ref, "worker_decode_and_previews": worker,
                "worker_extra_p50_ms": round(worker["p50_ms"] - worker_ref["p50_ms"], 2),
                "viewer_from_preview": viewer, "viewer_decoding_per_request": viewer_ref,
                "viewer_speedup_p50": round(viewer_ref["p50_ms"] / viewer["p50_ms"], 1)}
    finally:
        sandbox.close()  # the viewer's own child ends with this process
        shutil.rmtree(work, ignore_errors=True)
    worker_ref = "the worker's decode without previews, same run"
    viewer_ref = "the viewer decoding the DICOM file for every request, same run"
    kept = {}
    for name in images:
        row = figures[name]
        kept[f"{name}: worker, decode and previews p50"] = figure(
            row["worker_decode_and_previews"]["p50_ms"], "ms", worker_ref)
        kept[f"{name}: worker extra p50"] = figure(row["worker_extra_p50_ms"], "ms",
                                                   worker_ref)
        kept[f"{name}: viewer from the preview p50"] = figure(
            row["viewer_from_preview"]["p50_ms"], "ms", viewer_ref)
        kept[f"{name}: viewer decoding p50"] = figure(
            row["viewer_decoding_per_request"]["p50_ms"], "ms")
        kept[f"{name}: viewer speed-up"] = figure(row["viewer_speedup_p50"], "×", viewer_ref)
    save("previews", figures, kept, notes=f"{args.rounds} rounds, interleaved")


if __name__ == "__main__":
    main()
