"""The box writes its case file from its own labelled images: the package's trainable model's
maps of the image each result was judged on, with the label people gave it; gone or
undecodable objects are left out by reason; a package without a trainable model is refused
with what to do."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from clinibox_common.bundled import REPO_ROOT
from engine.imaging.decode import decode
from engine.imaging.preprocess import get_preprocessor
from engine.model_package import load_package
from firmware_app.ingest.landing import Lander
from firmware_app.learning.cases import read_cases
from firmware_app.service.appliance import load_runner
from firmware_app.service.worker import Worker
from firmware_app.settings.box import Config, from_dict
from firmware_app.storage import db
from firmware_app.storage.spool import make_spool
from phantoms.dicom import us_dataset, write_dicom
from phantoms.images import generate
from tests.model_packages import DEMO_PRIVATE_KEY, make_package


def _box(tmp_path: Path, trainable: bool) -> Config:
    packages = tmp_path / "packages"
    make_package(packages, "1.2.0", trainable=trainable)
    return from_dict({"storage": {"state_dir": str(tmp_path / "state")},
                      "runtime": {"backend": "onnxruntime", "precision": "fp32"},
                      "models": {"dir": str(packages), "version": "1.2.0",
                                 "trusted_keys": [str(DEMO_PRIVATE_KEY.with_suffix(".pub"))]}})


def _analyse(config: Config, count: int) -> list[tuple[int, bool]]:
    """``count`` phantoms received and analysed; (instance id, truth) of each."""
    conn = db.connect(config.database_path)
    db.initialise(conn)
    spool = make_spool(config)
    lander = Lander(spool, config.database_path, 64 * 2**20)
    worker = Worker(config, spool, load_runner(config))
    landed = []
    for k in range(count):
        phantom = generate("us", np.random.default_rng(40 + k), lesion=bool(k % 2))
        path = config.state_dir / f"p{k}.dcm"
        write_dicom(us_dataset(phantom), path)
        landed.append((lander.land(path.read_bytes(), sop_instance_uid=f"1.2.40.{k}",
                                   source="dicom", origin="TEST").instance_id, bool(k % 2)))
        assert worker.run_once() is True
    conn.close()
    return landed


def _review(config: Config, landed: list[tuple[int, bool]]) -> None:
    """A clinician reviews each image's finding, truthfully."""
    conn = sqlite3.connect(config.database_path)
    for k, (instance, truth) in enumerate(landed):
        finding = bool(conn.execute("SELECT finding FROM results WHERE instance_id = ?",
                                    (instance,)).fetchone()[0])
        conn.execute("INSERT INTO feedback(instance_id, finding, verdict, at) VALUES (?, -1, ?, ?)",
                     (instance, "agree" if finding == truth else "disagree", 10.0 + k))
    conn.commit()
    conn.close()


def _clinibox(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clinibox", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_case_file_holds_the_maps_of_each_labelled_image_and_its_label(tmp_path):
    config = _box(tmp_path, trainable=True)
    landed = _analyse(config, 6)
    _review(config, landed[:5])  # the sixth image is not labelled
    gone = Path(sqlite3.connect(config.database_path).execute(
        "SELECT spool_path FROM instances WHERE id = ?", (landed[0][0],)).fetchone()[0])
    gone.unlink()  # retention took the first one's object
    (tmp_path / "clinibox.toml").write_text(
        f'[storage]\nstate_dir = "{tmp_path / "state"}"\n[runtime]\nbackend = "onnxruntime"\n'
        f'precision = "fp32"\n[models]\ndir = "{tmp_path / "packages"}"\nversion = "1.2.0"\n'
        f'trusted_keys = ["{DEMO_PRIVATE_KEY.with_suffix(".pub")}"]\n')

    done = _clinibox("learning", "cases", "--config", str(tmp_path / "clinibox.toml"), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    said = json.loads(done.stdout)
    assert (said["lesions"], said["clear"]) == (2, 2)  # 4 of the 5 labelled (1 gone)
    assert said["left_out"] == {"object_deleted": 1}
    out = Path(said["path"])
    assert out == tmp_path / "state" / "learning" / "cases.npz"
    assert out.stat().st_mode & 0o077 == 0  # the box's account only
    package = load_package(tmp_path / "packages" / "clinibox-demo-lesion" / "1.2.0",
                           [DEMO_PRIVATE_KEY.with_suffix(".pub")])
    learning = package.manifest["learning"]
    cases = read_cases(out, learning["channels"])
    # the latest label first: images 5, 4, 3, 2 (image 1's object is gone)
    assert list(cases.labels) == [truth for _i, truth in reversed(landed[1:5])]
    # each case's maps are the trainable model's, on the image as the analysis prepared it
    session = ort.InferenceSession(str(package.root / learning["path"]),
                                   providers=["CPUExecutionProvider"])
    spec = package.input
    prepare = get_preprocessor(package.manifest["preprocessing"]["name"])
    for row, (instance, _truth) in zip(cases.maps, reversed(landed[1:5]), strict=True):
        path = sqlite3.connect(config.database_path).execute(
            "SELECT spool_path FROM instances WHERE id = ?", (instance,)).fetchone()[0]
        frame = decode(Path(path), config.limits, 8).frames[0]
        tensor, _ = prepare(frame, spec.shape, spec.mean, spec.std,
                            package.manifest["preprocessing"].get("params", {}))
        [maps] = session.run([learning["maps_output"]], {spec.name: tensor})
        np.testing.assert_allclose(row, maps[0], atol=1e-5)
    # no identifier, no pixel in the file: the maps and the labels only
    assert sorted(np.load(out).files) == ["labels", "maps"]


def test_a_package_without_a_trainable_model_is_refused_saying_what_to_do(tmp_path):
    config = _box(tmp_path, trainable=False)
    (tmp_path / "clinibox.toml").write_text(
        f'[storage]\nstate_dir = "{tmp_path / "state"}"\n[models]\n'
        f'dir = "{tmp_path / "packages"}"\nversion = "1.2.0"\n'
        f'trusted_keys = ["{DEMO_PRIVATE_KEY.with_suffix(".pub")}"]\n')
    done = _clinibox("learning", "cases", "--config", str(tmp_path / "clinibox.toml"))
    assert done.returncode == 2
    assert "carries no trainable model" in done.stdout and "convert it again" in done.stdout
    assert "clinibox-demo-lesion@1.2.0" in done.stdout
    assert not (config.state_dir / "learning" / "cases.npz").exists()


@pytest.mark.parametrize("field", ["path", "sharpness"])
def test_a_manifest_whose_learning_section_is_malformed_is_refused(tmp_path, field):
    from clinibox_common.contracts.manifest import PackageError, check_schema

    root = make_package(tmp_path, "1.3.0", trainable=True, key=None)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["learning"][field] = None if field == "path" else 0
    with pytest.raises(PackageError, match="learning"):
        check_schema(manifest)


def test_an_image_left_out_frees_its_place_and_a_frame_not_judged_is_not_used(tmp_path,
                                                                              monkeypatch):
    """At most MAX_CASES images, counted among those kept: an image left out frees its place
    for an older one. An image whose judged frame is not among the decoded frames any more
    (the frame limit changed) is left out by its reason, never labelled with another frame."""
    from firmware_app.learning import case_file

    config = _box(tmp_path, trainable=True)
    landed = _analyse(config, 5)
    _review(config, landed)
    conn = sqlite3.connect(config.database_path)
    conn.execute("UPDATE results SET key_frame = 7 WHERE instance_id = ?", (landed[4][0],))
    conn.commit()
    monkeypatch.setattr(case_file, "MAX_CASES", 3)
    package = load_package(tmp_path / "packages" / "clinibox-demo-lesion" / "1.2.0",
                           [DEMO_PRIVATE_KEY.with_suffix(".pub")])
    out = tmp_path / "cases.npz"
    summary = case_file.write_case_file(config, conn, package, out)
    conn.close()
    assert dict(summary.left_out) == {"key_frame_missing": 1}
    cases = read_cases(out, package.manifest["learning"]["channels"])
    # the latest first: image 5 left out, images 4, 3, 2 kept (3 places), image 1 not reached
    assert list(cases.labels) == [truth for _i, truth in reversed(landed[1:4])]
    assert (summary.lesions, summary.clear) == (sum(t for _i, t in landed[1:4]), 3 - sum(
        t for _i, t in landed[1:4]))
