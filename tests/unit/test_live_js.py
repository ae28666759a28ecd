"""The live page's arithmetic (``web/static/live.js``), run in Node (Debian's ``nodejs``):
boxes scaled from the frame's pixels, sizes in the reader's digits, the ring held for
stepping back, steps, taps turned into frame pixels, measured lengths."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

LIVE_JS = Path(__file__).resolve().parents[2] / "web" / "static" / "live.js"
NODE = shutil.which("node") or shutil.which("nodejs")

SCRIPT = """
const l = require(process.argv[1]);
const ring = [0, 1, 2, 3, 12.5].map((arrived, seq) => ({seq, arrived}));
const lesion = {box: [10, 20, 50, 40], long_axis_mm: 12.4};
console.log(JSON.stringify({
  box: l.scaleBox([100, 50, 300, 250], 0.5),
  backing: l.backingSize(1280, 720, 640, 1),
  backingRetina: l.backingSize(1280, 720, 800, 2),
  small: l.backingSize(320, 240, 640, 2),
  size: l.sizeLabel(12.4, 8.06, "en"), sizeZh: l.sizeLabel(12.6, 9, "zh-CN"),
  longOnly: l.sizeLabel(4.25, null, "en"), noSize: l.sizeLabel(null, 3, "en"),
  drawn: l.boxesToDraw({hint: "hold_here", lesions: [lesion, {box: [1, 2]}]}).length,
  outside: l.boxesToDraw({hint: "outside_validated_range", lesions: [lesion]}).length,
  unassessable: l.boxesToDraw({hint: "not_assessable", lesions: [lesion]}).length,
  pruned: l.pruneRing(ring, 10).map((e) => e.seq),
  merged: l.mergeSeqs([4, 2, 3], [1, 2, 5]),
  back: l.stepSeq([1, 2, 3, 5], 3, -1), forward: l.stepSeq([1, 2, 3, 5], 3, 1),
  first: l.stepSeq([1, 2, 3], 1, -1), last: l.stepSeq([1, 2, 3], 3, 1),
  between: l.stepSeq([1, 2, 5, 6], 4, -1), betweenForward: l.stepSeq([1, 2, 5, 6], 4, 1),
  point: l.framePoint(110, 70, {left: 10, top: 20, width: 200, height: 100}, 1280, 720),
  mm: l.lineLength({x: 0, y: 0}, {x: 30, y: 40}, 0.1),
  px: l.lineLength({x: 0, y: 0}, {x: 30, y: 40}, 0),
  fps: l.fpsText("{fps} frames analysed a second", 15.4, "en"), noFps: l.fpsText("{fps}", null),
  delay: l.delayText("picture delay {ms} ms", [31, 44, 38, null, 120], "en"),
  delayZh: l.delayText("画面延迟 {ms} 毫秒", [1234], "zh-CN"),
  noDelay: l.delayText("{ms}", [null, undefined, -5]),
}));
"""


def test_live_page_arithmetic():
    assert NODE, "Node.js runs the viewer's pure JS functions (Debian: nodejs; .ci/run installs it)"
    out = subprocess.run([NODE, "-e", SCRIPT, str(LIVE_JS)], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    got = json.loads(out)
    assert got["box"] == {"x": 50, "y": 25, "w": 100, "h": 100}
    assert got["backing"] == {"width": 640, "height": 360, "scale": 0.5}
    assert got["backingRetina"] == {"width": 1280, "height": 720, "scale": 1}  # never upscaled
    assert got["small"] == {"width": 320, "height": 240, "scale": 1}
    # as the study page and the report write a lesion's axes (firmware_app/words/wording.axes_mm)
    assert got["size"] == "12.4 × 8.1 mm" and got["sizeZh"] == "12.6 × 9.0 mm"
    assert got["longOnly"] == "4.3 mm"
    assert got["noSize"] == ""
    assert got["drawn"] == 1  # a malformed box is left out
    assert got["outside"] == 0 and got["unassessable"] == 0  # no box where no finding is shown
    assert got["pruned"] == [3, 4]  # within 10 s of the newest (12.5)
    assert got["merged"] == [1, 2, 3, 4, 5]
    assert (got["back"], got["forward"], got["first"], got["last"]) == (2, 5, 1, 3)
    assert (got["between"], got["betweenForward"]) == (2, 5)  # a frame gone from the ring
    assert got["point"]["x"] == pytest.approx(640) and got["point"]["y"] == pytest.approx(360)
    assert got["mm"] == {"value": pytest.approx(5.0), "units": "mm"}
    assert got["px"] == {"value": pytest.approx(math.hypot(30, 40)), "units": "px"}
    assert got["fps"] == "15 frames analysed a second" and got["noFps"] == ""
    # the middle of the delays measured, to 10 ms: one late frame does not make the line jump
    assert got["delay"] == "picture delay 40 ms" and got["delayZh"] == "画面延迟 1,230 毫秒"
    assert got["noDelay"] == ""
