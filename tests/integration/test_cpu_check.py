"""`clinibox cpu-check`: a package's INT8 artifacts on an AVX2 CPU without VNNI, emulated.

QEMU's user-mode emulator (Debian's qemu-user) runs the box's own runtimes
with the CPUID of an AMD EPYC-Rome: AVX2 and FMA, no AVX-512, no VNNI, the
CPU class on which a full-range INT8 artifact once answered the same for every
image. The control proves the emulated CPU runs another kernel than this one:
an artifact with 8-bit weights fails its golden cases there, while the
shipped 7-bit one gives this CPU's answers.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.model_packages import DEMO_PRIVATE_KEY, FULL_RANGE_INT8, make_package

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHIPPED = "onnxruntime:onnx/int8 (model.int8.onnx)"
FULL_RANGE = f"onnxruntime:onnx/int8 ({FULL_RANGE_INT8})"


def test_full_range_int8_fails_on_an_emulated_avx2_cpu_and_the_shipped_one_holds(tmp_path):
    root = make_package(tmp_path, "1.0.1", full_range_int8=True)
    done = subprocess.run(
        [sys.executable, "-m", "clinibox", "cpu-check", str(root), "--cpu", "x86-64-v3",
         "--precision", "int8", "--runtime", "onnxruntime", "--json",
         "--trust", str(DEMO_PRIVATE_KEY.with_suffix(".pub"))],
        capture_output=True, text=True, timeout=900, check=False)
    assert done.stdout, done.stderr
    report = json.loads(done.stdout)
    (emulated,) = report["classes"]
    assert emulated["cpu"] == "x86-64-v3"
    assert "AVX2" in emulated["features"]
    assert "AVX512F" not in emulated["features"] and "AVX512VNNI" not in emulated["features"]
    here = {a["label"]: a for a in report["reference"]["artifacts"]}
    there = {a["label"]: a for a in emulated["artifacts"]}
    assert set(there) == {SHIPPED, FULL_RANGE}  # the second stage has no INT8 artifact

    # the shipped 7-bit artifact: every golden case, the same values as on this CPU
    assert here[SHIPPED]["passed"] and there[SHIPPED]["passed"]
    assert there[SHIPPED]["cases"] == len(here[SHIPPED]["values"]) == 8
    for a, b in zip(here[SHIPPED]["values"], there[SHIPPED]["values"], strict=True):
        assert abs(a["probability"] - b["probability"]) < 0.01

    # 8-bit weights: the emulated VPMADDUBSW kernel saturates, the answers collapse
    assert not there[FULL_RANGE]["passed"]
    assert "OUT OF TOLERANCE" in there[FULL_RANGE]["problem"]
    values = [v["probability"] for v in there[FULL_RANGE]["values"]]
    expected = [v["probability"] for v in here[SHIPPED]["values"]]
    assert max(abs(a - b) for a, b in zip(values, expected, strict=True)) > 0.1
    if "AVX512VNNI" in report["reference"]["features"]:  # VNNI accumulates in 32 bits
        assert here[FULL_RANGE]["passed"]
    assert done.returncode == 1  # a package with an artifact that is wrong there is not shipped
