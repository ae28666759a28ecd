"""The distance tool's arithmetic (``web/static/measure.js``), run in Node (Debian's ``nodejs``).

Rows and columns may have different spacings: a line's length is
sqrt((dx·column_mm)² + (dy·row_mm)²); an uncalibrated image gives pixels.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

MEASURE_JS = Path(__file__).resolve().parents[2] / "web" / "static" / "measure.js"
NODE = shutil.which("node") or shutil.which("nodejs")

SCRIPT = """
const m = require(process.argv[1]);
const s = m.parseSpacing("0.5", "0.25");
console.log(JSON.stringify({
  anisotropic: m.measureLength({x: 10, y: 20}, {x: 50, y: 50}, s),
  vertical: m.measureLength({x: 3, y: 0}, {x: 3, y: 8}, s),
  uncalibrated: m.measureLength({x: 0, y: 0}, {x: 3, y: 4}, m.parseSpacing("", "")),
  bad: m.parseSpacing("0", "abc"),
  shownMm: m.formatLength({value: 12.345, units: "mm"}, {mm: "mm", px: "pixels"}),
  shownPx: m.formatLength({value: 4.6, units: "px"}, {mm: "mm", px: "像素"}),
}));
"""


def test_lengths_use_each_axis_spacing_or_say_pixels():
    assert NODE, "Node.js runs the viewer's pure JS functions (Debian: nodejs; .ci/run installs it)"
    out = subprocess.run([NODE, "-e", SCRIPT, str(MEASURE_JS)], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    got = json.loads(out)
    assert got["anisotropic"]["units"] == "mm"
    assert got["anisotropic"]["value"] == pytest.approx(math.hypot(40 * 0.25, 30 * 0.5))
    assert got["vertical"]["value"] == pytest.approx(8 * 0.5)
    assert got["uncalibrated"] == {"value": 5, "units": "px"}
    assert got["bad"] is None
    assert got["shownMm"] == "12.3 mm" and got["shownPx"] == "5 像素"
