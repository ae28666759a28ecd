"""Software releases for a booted image: later versions of this checkout, cut from the offline
bundle the image was built from and signed as the hospital signs them.

A release's clinibox wheel is built from a copy of the sources with another version in
``pyproject.toml`` (as ``scripts/build-wheelhouse.sh`` builds the bundle's); a *broken*
release's self-test also fails a check of its own, as a version with a real fault would. The
bundle is copied with hard links, its clinibox wheel replaced and its ``SHA256SUMS`` made
again, then ``clinibox software pack`` cuts and signs the release.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

from tests.box_harness import REPO, clinibox

#: what a broken release adds to its self-test (its table names the check)
BROKEN_CHECK = "release fault"
_FAULT = f'''
    steps.append(({BROKEN_CHECK!r}, lambda: Check({BROKEN_CHECK!r}, FAIL,
                                                "this build fails on purpose")))
    return [_guarded(name, step) for name, step in steps]'''


def _sources(into: Path, version: str, broken: bool) -> Path:
    """A copy of the sources the wheel is built from, at ``version``."""
    into.mkdir(parents=True)
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    current = tomllib.loads(pyproject)["project"]["version"]
    (into / "pyproject.toml").write_text(
        pyproject.replace(f'version = "{current}"', f'version = "{version}"', 1),
        encoding="utf-8")
    shutil.copyfile(REPO / "README.md", into / "README.md")
    packages = tomllib.loads(pyproject)["tool"]["importlinter"]["root_packages"]
    for package in packages:
        if package != "demo":
            shutil.copytree(REPO / package, into / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
    if broken:
        selftest = into / "firmware_app" / "ops" / "selftest.py"
        text = selftest.read_text(encoding="utf-8")
        end = "    return [_guarded(name, step) for name, step in steps]"
        assert end in text, "the self-test's last line moved: update tests/image/releases.py"
        selftest.write_text(text.replace(end, _FAULT.lstrip("\n"), 1), encoding="utf-8")
    return into


def _wheel(sources: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(out), str(sources)], check=True, capture_output=True,
                   timeout=600)
    return next(out.glob("clinibox-*.whl"))


def _bundle_with(bundle: Path, wheel: Path, into: Path) -> Path:
    """``bundle`` copied (hard links) with ``wheel`` as its clinibox wheel, its sums made
    again."""
    subprocess.run(["cp", "-al", str(bundle), str(into)], check=True, timeout=120)
    for old in (into / "wheels").glob("clinibox-*.whl"):
        old.unlink()
    shutil.copyfile(wheel, into / "wheels" / wheel.name)
    lines = [line for line in (into / "SHA256SUMS").read_text().splitlines()
             if not re.search(r"\swheels/clinibox-", line)]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    lines.append(f"{digest}  wheels/{wheel.name}")
    (into / "SHA256SUMS").unlink()  # a hard link to the image's bundle: never write through it
    (into / "SHA256SUMS").write_text("\n".join(sorted(lines, key=lambda x: x[66:])) + "\n")
    return into


def make_release(bundle: Path, version: str, key: Path, work: Path, *,
                 broken: bool = False) -> Path:
    """The signed ``clinibox-<version>.release`` cut from ``bundle`` (in ``work``)."""
    folder = work / f"release-{version}"
    wheel = _wheel(_sources(folder / "src", version, broken), folder / "wheel")
    derived = _bundle_with(bundle, wheel, folder / "bundle")
    clinibox("software", "pack", str(derived), "--key", str(key), "--out", str(folder))
    return folder / f"clinibox-{version}.release"
