"""A small offline bundle's shape (``make wheelhouse``'s folder) for the software release's
tests: the app's and pip's wheels, a dependency, the native receiver's source, a unit, a shipped
key and the installer, with their ``SHA256SUMS``. The app's wheel is large enough to travel in
several chunks."""

from __future__ import annotations

import hashlib
from pathlib import Path


def small_bundle(folder: Path, version: str) -> Path:
    """The bundle of clinibox ``version`` written in ``folder``."""
    files = {
        f"wheels/clinibox-{version}-py3-none-any.whl": b"app " + version.encode() * 9000,
        "wheels/pip-24.0-py3-none-any.whl": b"pip",
        "wheels/numpy-2.0-cp311.whl": b"numpy",
        "native/receiver/clinibox_receiver.cc": b"int main() {}",
        "systemd/clinibox.service": b"[Service]\n",
        "models/keys/hospital.pub": b"a public key",
        "install.sh": b"#!/bin/sh\n",
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items())))
    return folder
