"""What decoding in the sandbox costs: ms per instance in the child vs in-process.

The reference, measured in the same run and interleaved, is the same
``decode`` called in this process. Files: 512 × 512 CT phantoms (the
project's generator) and pydicom's JPEG 2000 and RLE test images.

    .venv/bin/python bench/decode_sandbox.py [--files 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pydicom.data import get_testdata_file

from common import machine, percentiles, phantom_files, save
from firmware_app.imaging.decode import decode
from firmware_app.imaging.sandbox import DecodeSandbox
from firmware_app.settings.box import LimitsConfig


def main() -> None:
    """Time both ways, interleaved per file, and print the overhead."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cts = phantom_files(Path(tempfile.gettempdir()) / f"clinibox-bench-ct-{args.files}",
                        args.files, "ct", seed=7)
    j2k, rle = (Path(get_testdata_file(n)) for n in ("JPEG2000.dcm", "emri_small_RLE.dcm"))
    sets = {"CT 512×512 (phantoms)": cts, "JPEG 2000 (pydicom JPEG2000.dcm)": [j2k] * 10,
            "RLE (pydicom emri_small_RLE.dcm)": [rle] * 10}
    limits = LimitsConfig()
    sandbox = DecodeSandbox(limits)
    sandbox.decode(cts[0], 8)  # start the child (once per service life)
    figures: dict = {"machine": machine("pydicom", "numpy"),
                     "network_isolated": sandbox.network_isolated}
    try:
        for name, files in sets.items():
            inside, child = [], []
            for _ in range(args.rounds):
                for path in files:
                    started = time.perf_counter()
                    decode(path, limits, 8)
                    inside.append((time.perf_counter() - started) * 1000)
                    started = time.perf_counter()
                    sandbox.decode(path, 8)
                    child.append((time.perf_counter() - started) * 1000)
            here, there = percentiles(inside), percentiles(child)
            figures[name] = {"in_process": here, "sandbox": there,
                             "overhead_p50_ms": round(there["p50_ms"] - here["p50_ms"], 2)}
    finally:
        sandbox.close()
    save("decode_sandbox", figures)


if __name__ == "__main__":
    main()
