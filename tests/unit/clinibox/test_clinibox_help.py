"""The one command starts in a fresh interpreter: ``python -m clinibox --help`` names the
box's, the hospital's and the workstation's commands (a smoke test: an import broken on any
floor fails it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.smoke
def test_python_m_clinibox_help_lists_every_floors_commands():
    done = subprocess.run([sys.executable, "-m", "clinibox", "--help"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "LANG": "C.UTF-8"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: clinibox")
    for command in ("serve", "infer", "web", "central", "convert", "selftest"):
        assert command in done.stdout
    assert done.stderr == ""
