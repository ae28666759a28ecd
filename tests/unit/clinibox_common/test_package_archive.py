"""The package archive format (contracts/package_archive.py): deterministic bytes, the
facts of an archive, hostile archives refused, and ``model install``'s staging reads it."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from clinibox_common.contracts.manifest import PackageError
from clinibox_common.contracts.package_archive import describe, pack
from firmware_app.models.store import ModelStore

MANIFEST = {"schema": "clinibox.model-package/1", "name": "clinibox-lesion", "version": "1.2.0"}


def package_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps(MANIFEST))
    (root / "model.onnx").write_bytes(b"\x00model" * 100)
    (root / "golden").mkdir()
    (root / "golden" / "case-0.npy").write_bytes(b"case" * 10)
    return root


def hostile(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


MANIFEST_BYTES = json.dumps(MANIFEST).encode()


def test_the_same_folder_packs_to_the_same_bytes(tmp_path):
    root = package_folder(tmp_path / "pkg")
    first = pack(root, tmp_path / "one.tar.gz")
    os.utime(root / "model.onnx", (1_000_000, 1_000_000))  # times and modes do not count
    os.chmod(root / "golden" / "case-0.npy", 0o600)
    second = pack(root, tmp_path / "two.tar.gz")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert (first.sha256, first.size) == (second.sha256, second.size)
    assert (first.name, first.version, first.unpacked_bytes) == ("clinibox-lesion", "1.2.0",
                                                                 600 + 40 + len(MANIFEST_BYTES))
    assert first.path.read_bytes()[4:8] == b"\x00\x00\x00\x00"  # gzip header time
    assert not list(tmp_path.glob(".one.tar.gz.*"))  # no temporary file left


def test_members_are_sorted_under_one_top_folder_with_fixed_owner_time_and_modes(tmp_path):
    archive = pack(package_folder(tmp_path / "pkg"), tmp_path / "p.tar.gz").path
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == ["clinibox-lesion-1.2.0", "clinibox-lesion-1.2.0/golden",
                     "clinibox-lesion-1.2.0/golden/case-0.npy",
                     "clinibox-lesion-1.2.0/manifest.json", "clinibox-lesion-1.2.0/model.onnx"]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == (0o755 if m.isdir() else 0o644)


def test_describe_reads_what_pack_wrote_and_install_stages_it(tmp_path):
    packed = pack(package_folder(tmp_path / "pkg"), tmp_path / "p.tar.gz")
    assert describe(packed.path) == packed
    staging, staged = ModelStore(tmp_path / "store", "clinibox-lesion").stage(packed.path)
    assert staged == staging / "package" / "clinibox-lesion-1.2.0"
    assert (staged / "golden" / "case-0.npy").read_bytes() == b"case" * 10


def test_pack_refuses_a_link(tmp_path):
    root = package_folder(tmp_path / "pkg")
    (root / "escape.onnx").symlink_to("/etc/passwd")
    with pytest.raises(PackageError, match="link"):
        pack(root, tmp_path / "p.tar.gz")
    assert not (tmp_path / "p.tar.gz").exists()


@pytest.mark.parametrize(("members", "words"), [
    ([(member("p/manifest.json"), MANIFEST_BYTES),
      (member("p/model.onnx", tarfile.SYMTYPE, "/etc/passwd"), b"")], "link"),
    ([(member("p/manifest.json"), MANIFEST_BYTES),
      (member("p/model.onnx", tarfile.LNKTYPE, "p/manifest.json"), b"")], "link"),
    ([(member("p/manifest.json"), MANIFEST_BYTES), (member("p/../../evil"), b"x")],
     "climbs out"),
    ([(member("/etc/clinibox/manifest.json"), MANIFEST_BYTES)], "absolute path"),
    ([(member("a/manifest.json"), MANIFEST_BYTES), (member("b/manifest.json"), MANIFEST_BYTES)],
     "2 manifest.json"),
    ([(member("p/model.onnx"), b"x")], "0 manifest.json"),
    ([(member("p/manifest.json"), MANIFEST_BYTES), (member("p/tty", tarfile.CHRTYPE), b"")],
     "device"),
    ([(member("p/manifest.json"), b"{not json")], "not readable JSON"),
])
def test_hostile_archives_are_refused(tmp_path, members, words):
    archive = hostile(tmp_path / "h.tar.gz", *members)
    with pytest.raises(PackageError, match=words):
        describe(archive)


def test_an_archive_unpacking_beyond_the_bound_is_refused(tmp_path):
    archive = hostile(tmp_path / "big.tar.gz", (member("p/manifest.json"), MANIFEST_BYTES),
                      (member("p/model.onnx"), b"\x00" * 50_000))
    assert describe(archive).unpacked_bytes == 50_000 + len(MANIFEST_BYTES)
    with pytest.raises(PackageError, match="unpacks to more than 10000 bytes"):
        describe(archive, max_unpacked=10_000)


def test_a_file_that_is_no_archive_is_refused(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive at all")
    with pytest.raises(PackageError, match="cannot be read as a package archive"):
        describe(junk)
