"""The malformed corpus: deterministic, fast, complete, and its storescu claims true."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.corpus import (
    REWRITTEN_BY_STORESCU,
    SENDABLE_BY_STORESCU,
    SENDABLE_WITH_OPTIONS,
    build_malformed_corpus,
)
from tests.ports import free_port

STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"


def test_corpus_is_deterministic_and_complete(tmp_path: Path) -> None:
    first = build_malformed_corpus(tmp_path / "a")
    second = build_malformed_corpus(tmp_path / "b")
    assert first == second
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(first)
    for name in first:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert len(first) >= 24
    assert all(reason == reason.lower() for reason in first.values())
    assert {n for n, r in first.items() if r == ""} == {
        "uid_path_traversal.dcm", "uid_slash_dotdot.dcm"
    }
    assert (tmp_path / "a" / "empty.dcm").stat().st_size == 0
    assert all((tmp_path / "a" / n).stat().st_size > 0 for n in first if n != "empty.dcm")


def test_corpus_covers_the_required_kinds(tmp_path: Path) -> None:
    expected = build_malformed_corpus(tmp_path)
    reasons = set(expected.values())
    for needed in ("truncated file", "60000 x 60000 pixels", "999999999 frames",
                   "no pixel data", "pixel data too short", "cannot be decoded on this box",
                   "unsupported bits allocated", "unsupported samples per pixel",
                   "not a dicom file", "empty file", "truncated"):
        assert needed in reasons, needed
    assert (tmp_path / "truncated.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "dicm_then_garbage.dcm").read_bytes()[128:132] == b"DICM"


def test_corpus_is_fast(tmp_path: Path) -> None:
    started = time.perf_counter()
    build_malformed_corpus(tmp_path)
    assert time.perf_counter() - started < 2.0


def test_sendable_sets_name_corpus_files(tmp_path: Path) -> None:
    expected = build_malformed_corpus(tmp_path)
    assert set(expected) >= SENDABLE_BY_STORESCU
    assert set(SENDABLE_WITH_OPTIONS) <= set(expected)
    assert set(expected) >= REWRITTEN_BY_STORESCU
    assert not SENDABLE_BY_STORESCU & set(SENDABLE_WITH_OPTIONS)
    assert not SENDABLE_BY_STORESCU & REWRITTEN_BY_STORESCU
    assert len(SENDABLE_BY_STORESCU) >= 5


def _sent(output: str) -> set[str]:
    """Files storescu reports a successful C-STORE response for."""
    sent, current = set(), None
    for line in output.splitlines():
        if "Sending file:" in line:
            current = Path(line.split("Sending file:", 1)[1].strip()).name
        elif "Received Store Response (Success)" in line and current:
            sent.add(current)
            current = None
    return sent


def _storescu(port: int, files: list[Path], *options: str) -> str:
    result = subprocess.run(
        [STORESCU, "-v", "--no-halt", "--required", *options, "127.0.0.1", str(port),
         *map(str, files)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TCP_NODELAY": "1"},
    )
    return result.stdout + result.stderr


@pytest.mark.integration
def test_storescu_sends_exactly_the_recorded_files(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    expected = build_malformed_corpus(corpus)
    port = free_port()
    receiver = subprocess.Popen(
        [STORESCP, "-pm", "+xa", "--ignore", str(port)], cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "storescp did not start"
                time.sleep(0.05)
        output = _storescu(port, [corpus / name for name in sorted(expected)])
        assert _sent(output) == SENDABLE_BY_STORESCU | REWRITTEN_BY_STORESCU, output[-3000:]
        for name, options in SENDABLE_WITH_OPTIONS.items():
            assert _sent(_storescu(port, [corpus / name])) == set()
            assert _sent(_storescu(port, [corpus / name], *options)) == {name}
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
