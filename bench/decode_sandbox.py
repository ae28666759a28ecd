"""What decoding in the sandbox costs: ms per instance in the child vs in-process.

The reference, measured in the same run and interleaved, is the same
``decode`` called in this process. Files: 512 × 512 CT phantoms (the
project's generator) and pydicom's JPEG 2000 and RLE test images.

    .venv/bin/python -m bench.decode_sandbox [--files 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pydicom.data import get_testdata_file

from bench.common import figure, machine, percentiles, phantom_files, save
from engine.imaging.decode import decode
from engine.imaging.sandbox import DecodeSandbox
from engine.settings import LimitsConfig


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
    reference = "the same decode in this process, interleaved, same run"
    kept = {}
    for name in sets:
        kept[f"{name}: in process p50"] = figure(figures[name]["in_process"]["p50_ms"], "ms")
        kept[f"{name}: sandbox p50"] = figure(figures[name]["sandbox"]["p50_ms"], "ms",
                                              reference)
        kept[f"{name}: sandbox overhead p50"] = figure(figures[name]["overhead_p50_ms"], "ms",
                                                       reference)
    save("decode_sandbox", figures, kept,
         notes=f"{args.rounds} rounds; network isolated: {figures['network_isolated']}")


if __name__ == "__main__":
    main()
