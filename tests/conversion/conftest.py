"""Shared fixtures for the converter tests: a labelled PNG folder, keys, a runner for the CLI."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clinibox_common.bundled import REPO_ROOT
from clinibox_common.contracts import signing
from tests.conversion.tiny_models import shapes_dataset


def write_png_folder(folder: Path, count: int, size: int, classes: int, seed: int) -> Path:
    """``count`` shapes images as 8-bit PNGs plus ``labels.csv``; returns the CSV path."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = shapes_dataset(count, size, classes, seed)
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label"])
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            name = f"img{i:04d}.png"
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(folder / name)
            writer.writerow([name, int(label)])
    return folder / "labels.csv"


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory) -> Path:
    """A fresh Ed25519 private key with its .pub beside it."""
    folder = tmp_path_factory.mktemp("keys")
    signing.generate_key_pair(folder / "workstation.pem", folder / "workstation.pub")
    return folder / "workstation.pem"


def clinibox(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real ``clinibox`` command line (as a module of this interpreter)."""
    env = dict(os.environ, PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{cwd}", CLINIBOX_QUIET="1",
               TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "clinibox", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
