"""Fuzzing in `make test`: the committed corpus and every regression replayed exactly,
then each target fuzzed by atheris (coverage-guided libFuzzer) for a bounded time.

The replay is deterministic and fast; the fuzzing run is bounded by
``FUZZ_SECONDS`` (default 15 s a target), an RSS limit and a per-input timeout,
in a child process, with a fixed seed (a failure in CI can be replayed), and
starts from a copy of the corpus (new inputs it finds stay in the test's
temporary folder; ``make fuzz`` adds them to the corpus).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS, WORK_ENV

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SECONDS = int(os.environ.get("FUZZ_SECONDS", "15"))
# libFuzzer's RSS limit reads the process's peak RSS (getrusage), and Linux carries a
# parent's peak across fork and exec: started from a pytest worker that has converted
# models, the fuzzer would begin "over" its limit (CI: every target "out-of-memory" at
# 3164 MB before its first input). A shell that forks the fuzzer, rather than exec it,
# gives it a peak of its own.
OWN_PEAK = ("sh", "-c", '"$@"; exit $?', "sh")


def _inputs(target: str) -> list[Path]:
    return sorted((HERE / "corpus" / target).glob("*")) + sorted(
        (HERE / "regressions" / target).glob("*"))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_corpus_and_regressions_replay_cleanly(target):
    inputs = _inputs(target)
    assert len(inputs) >= 3, f"no corpus for {target}"
    for path in inputs:
        TARGETS[target](path.read_bytes())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_coverage_guided_fuzzing_finds_no_crash(target, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(HERE / "corpus" / target, corpus)
    found = len(list(corpus.iterdir()))
    run = subprocess.run(
        [*OWN_PEAK, sys.executable, "-m", "tests.fuzz.fuzz", target,
         f"-max_total_time={SECONDS}", "-seed=1", "-rss_limit_mb=3072", "-timeout=20",
         "-max_len=65536", f"-artifact_prefix={tmp_path}/", str(corpus)],
        cwd=REPO, capture_output=True, text=True, timeout=SECONDS + 240,
        env={**os.environ, WORK_ENV: str(tmp_path)})
    crashes = sorted(p.name for p in tmp_path.glob("crash-*")) + sorted(
        p.name for p in tmp_path.glob("oom-*")) + sorted(p.name for p in tmp_path.glob("timeout-*"))
    assert run.returncode == 0 and not crashes, (crashes, run.stderr[-4000:])
    assert "Done" in run.stderr and "#" in run.stderr  # libFuzzer ran and reported its runs
    assert len(list(corpus.iterdir())) >= found


def test_the_fuzzer_does_not_inherit_its_parents_peak_memory():
    """A parent whose peak is 400 MB: a child it runs directly reports that peak as its
    own; one started through OWN_PEAK reports only its own."""
    peak = "import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
    parent = f"""
import subprocess, sys
block = bytearray(400 * 1024 * 1024)
block[::4096] = b"\\1" * len(block[::4096])
direct = subprocess.run([sys.executable, "-c", {peak!r}], capture_output=True, text=True)
fresh = subprocess.run([*{OWN_PEAK!r}, sys.executable, "-c", {peak!r}],
                       capture_output=True, text=True)
print(direct.stdout.strip(), fresh.stdout.strip())
"""
    run = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True,
                         timeout=60, check=True)
    direct, fresh = (int(word) for word in run.stdout.split())
    assert direct >= 400 and fresh < 100, (direct, fresh)
