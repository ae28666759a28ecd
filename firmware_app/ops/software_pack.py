"""``clinibox software pack``: a release of the box's software cut from an offline bundle and
signed (``contracts/software_release.py`` says what it carries).

Run where the hospital's model-signing key is kept, as ``clinibox model sign`` is: the
bundle (``make wheelhouse``'s folder or ``.tar.gz``) is checked against its own
``SHA256SUMS`` first, so a damaged bundle is never signed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from clinibox_common.contracts import signing
from clinibox_common.contracts.package_archive import PackedArchive, pack
from clinibox_common.contracts.software_release import (
    RELEASE_NAME,
    SUFFIX,
    manifest_for,
    read_sums,
    sign,
)
from clinibox_common.errors import CliniboxError
from clinibox_common.i18n import _
from clinibox_common.i18n.error_words import error_words


class PackError(CliniboxError):
    """The bundle cannot make a release."""


def _bundle_folder(bundle: Path, scratch: Path) -> Path:
    """The bundle's folder: itself, or its ``.tar.gz`` unpacked into ``scratch``."""
    if bundle.is_dir():
        return bundle
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            for member in tar.getmembers():  # Debian 12's Python 3.11.2 has no filter="data"
                if member.issym() or member.islnk() or member.isdev() or \
                        member.name.startswith("/") or ".." in member.name.split("/"):
                    raise tarfile.TarError(f"{member.name}: not a plain file of the bundle")
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(scratch, **safe)
    except (OSError, tarfile.TarError) as exc:
        raise PackError(_("%(bundle)s is no offline bundle: %(error)s", bundle=str(bundle),
                           error=error_words(exc))) from exc
    folders = [p for p in scratch.iterdir() if p.is_dir()]
    if len(folders) != 1:
        raise PackError(_("%(bundle)s does not hold one bundle folder", bundle=str(bundle)))
    return folders[0]


def _checked_sums(folder: Path) -> dict[str, str]:
    """The bundle's SHA256SUMS, every line matching its file (PackError otherwise)."""
    try:
        sums = read_sums(folder / "SHA256SUMS")
    except OSError as exc:
        raise PackError(_("%(folder)s has no SHA256SUMS: make the bundle with make wheelhouse",
                           folder=str(folder))) from exc
    for name, digest in sums.items():
        path = folder / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise PackError(_("%(file)s does not match the bundle's SHA256SUMS",
                             file=f"{folder}/{name}"))
    return sums


def pack_release(bundle: Path, key: Path, out_dir: Path) -> PackedArchive:
    """Cut and sign the release of ``bundle`` with ``key``; the archive written in
    ``out_dir`` as ``clinibox-<version>.release``."""
    with tempfile.TemporaryDirectory(prefix="clinibox-release-") as scratch:
        folder = _bundle_folder(Path(bundle), Path(scratch) / "bundle")
        sums = _checked_sums(folder)
        wheels = sorted(n for n in sums if n.startswith("wheels/clinibox-"))
        pips = sorted(n for n in sums if n.startswith("wheels/pip-"))
        if len(wheels) != 1 or not pips:
            raise PackError(_("%(folder)s lacks its one clinibox wheel or its pip wheel",
                             folder=str(folder)))
        version = Path(wheels[0]).name.split("-")[1]
        release = Path(scratch) / f"{RELEASE_NAME}-{version}"
        (release / "wheels").mkdir(parents=True)
        for name in (wheels[0], pips[-1]):
            shutil.copyfile(folder / name, release / name)
        shutil.copyfile(folder / "SHA256SUMS", release / "SHA256SUMS")
        shutil.copytree(folder / "systemd", release / "systemd")
        if any((folder / "models").rglob("*.pem")):
            raise PackError(_("%(folder)s carries a private key (*.pem): refusing to pack it",
                             folder=str(folder)))
        created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        manifest = sign(manifest_for(release, version, created),
                        signing.load_private_key(key))
        (release / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n",
                                               encoding="utf-8")
        return pack(release, Path(out_dir) / f"{RELEASE_NAME}-{version}{SUFFIX}")
