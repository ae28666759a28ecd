"""Bring your own detector: torchvision's SSD, trained on phantoms (issue 55).

torchvision's own ``SSD`` (its head, default boxes, box coder, hard-negative-mining loss and
postprocessing, with a small two-level backbone so that it learns in seconds on 2 cores) is
trained briefly on CT phantoms, wrapped as "Bring your own detector" shows (each anchor's
decoded box and its class logit, before NMS: ``layout = "boxes_scores"``), converted by the
real ``clinibox convert`` (ONNX FP32 and INT8), installed by the box's own install path and run
through the box's runner on phantoms: the box's lesion boxes, after its own NMS, are the
boxes torchvision's SSD gives itself, NMS included (IoU >= 0.9); then a real
``clinibox serve`` with the package installed receives CT phantoms from dcmtk's storescu and
stores the same boxes. torchvision comes through ``tests/torchvision_cpu.py`` (its
CUDA-only wheel, its operators in pure PyTorch). A RetinaNet with this backbone learns far
slower (its focal loss found no lesion in 10 epochs), hence SSD.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clinibox_common.bundled import REPO_ROOT
from engine.imaging.preprocess import letterbox_grey
from engine.imaging.wrap import decode_file
from engine.inference.box_lists import pairwise_iou
from engine.model_package import load_package
from firmware_app.models.install import install
from firmware_app.service.appliance import load_runner
from firmware_app.settings import box as box_config
from phantoms.dicom import ct_dataset, write_dicom
from tests.box_harness import Box, storescu
from tests.conversion.conftest import clinibox
from tests.conversion.test_box_list_detector import _phantoms, _write_folder
from tests.conversion.test_bring_your_own import one_thread

SIZE, MEAN, STD = 96, 0.3, 0.2

# the cookbook's torchvision SSD (docs/model-makers/cookbook.md) as clinic_ssd.py, torchvision
# loaded first with its compiled operators in pure PyTorch where they cannot load
MODULE = ("from tests.torchvision_cpu import load\n\nload()\n"
          + (REPO_ROOT / "examples" / "model-makers" / "torchvision-ssd" / "ssd_model.py")
          .read_text())

TOML = '''
outputs = ["boxes", "scores"]
task = "lesion-detection"
floor_auc = 0.6
split = {calibration = 0.5, validation = 0.5}

[[heads]]
kind = "detection"
layout = "boxes_scores"
boxes_output = "boxes"
scores_output = "scores"
box_format = "xyxy"
activation = "softmax"
labels = ["background", "lesion"]
background = ["background"]
iou_threshold = 0.4
score_threshold = 0.3
max_detections = 5
'''


def _input(image: np.ndarray) -> tuple[torch.Tensor, object]:
    """The box's own preprocessing of a grey image: [1, 1, SIZE, SIZE] and its transform."""
    x, transform = letterbox_grey(image, (1, 1, SIZE, SIZE), MEAN, STD, {})
    return torch.from_numpy(x), transform


def _train(model: torch.nn.Module, phantoms: list, epochs: int) -> torch.nn.Module:
    """torchvision's own training: its focal and box losses on the phantoms' lesion boxes."""
    images = [_input(p.image)[0][0] for p in phantoms]
    targets = [{"boxes": torch.tensor(p.boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.ones(len(p.boxes), dtype=torch.long)} for p in phantoms]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images)).tolist()
        for i in range(0, len(order), 16):
            batch = order[i:i + 16]
            losses = model([images[j] for j in batch], [targets[j] for j in batch])
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def converted(tmp_path_factory, signing_key) -> tuple[Path, torch.nn.Module, dict]:
    """torchvision's SSD trained on CT phantoms and converted: (package folder, the trained
    detector, manifest)."""
    tmp_path = tmp_path_factory.mktemp("ssd")
    (tmp_path / "clinic_ssd.py").write_text(MODULE)
    (tmp_path / "convert.toml").write_text(TOML)
    namespace: dict = {}
    exec(MODULE, namespace)
    torch.manual_seed(0)
    with one_thread():
        model = _train(namespace["ssd"](), _phantoms(11, 300), epochs=15)
    torch.save(namespace["Candidates"](model).state_dict(), tmp_path / "ssd.pt")
    labels = _write_folder(tmp_path / "data", _phantoms(12, 160))
    out = tmp_path / "packages" / "torchvision-ssd" / "1.0.0"
    run = clinibox("convert", "--config", "convert.toml", "--model", "clinic_ssd:torchvision_ssd",
                   "--weights", "ssd.pt", "--input-shape", f"1,{SIZE},{SIZE}", "--mean",
                   str(MEAN), "--std", str(STD), "--data", "data", "--labels", str(labels),
                   "--targets", "onnx", "--out", str(out), "--key", str(signing_key),
                   cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-6000:]
    return out, model.eval(), load_package(out, [signing_key.with_suffix(".pub")]).manifest


def _torchvision_boxes(model: torch.nn.Module, image: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's own final boxes (its postprocessing and NMS) on a grey image, in the
    image's pixels, and their scores."""
    x, transform = _input(image)
    with torch.no_grad():
        [found] = model([x[0]])
    boxes = found["boxes"].numpy().astype(np.float64)
    offset = [transform.offset_x, transform.offset_y] * 2
    return (boxes - offset) / transform.scale, found["scores"].numpy()


@pytest.mark.slow
def test_torchvision_s_ssd_converts_installs_and_outlines_what_torchvision_outlines(
        converted, tmp_path, signing_key):
    out, model, manifest = converted
    [head] = manifest["heads"]
    assert head["layout"] == "boxes_scores"
    # each artifact's final boxes against the PyTorch model's, within the gate's box floors
    assert {a["precision"] for a in manifest["artifacts"]} == {"fp32", "int8"}
    for artifact in manifest["artifacts"]:
        boxes = artifact["validation"]["boxes"]
        assert boxes["lesions"] > 0, artifact["path"]
        floor = (0.98, 0.95) if artifact["precision"] == "fp32" else (0.9, 0.8)
        assert boxes["sensitivity"] >= floor[0] and boxes["mean_iou"] >= floor[1], boxes

    cfg = box_config.from_dict({
        "storage": {"state_dir": str(tmp_path / "state")},
        "runtime": {"backend": "onnxruntime", "precision": "fp32"},
        "models": {"dir": str(tmp_path / "box-models"), "name": "torchvision-ssd",
                   "trusted_keys": [str(signing_key.with_suffix(".pub"))]}})
    assert install(cfg, out).golden.passed
    runner = load_runner(cfg)
    found = compared = 0
    ious: list[float] = []
    for phantom in _phantoms(13, 24):
        findings, _ = runner.run(phantom.image)
        theirs, scores = _torchvision_boxes(model, phantom.image)
        mine = np.array([[b.x0, b.y0, b.x1, b.y1] for b in findings.boxes]).reshape(-1, 4)
        assert len(mine) == len(theirs), (findings.boxes, theirs)
        if len(mine):
            ious += np.diag(pairwise_iou(mine, theirs)).tolist()
            assert [b.score for b in findings.boxes] == pytest.approx(scores.tolist(), abs=1e-3)
            assert {b.label for b in findings.boxes} == {"lesion"}
            compared += len(mine)
        truth = np.array(phantom.boxes).reshape(-1, 4)
        if len(truth) and len(mine) and pairwise_iou(truth, mine).max() >= 0.3:
            found += 1
    print(f"torchvision SSD: {compared} boxes, IoU min {min(ious):.4f} mean "
          f"{np.mean(ious):.4f}; {found} phantom lesions found")
    assert min(ious) >= 0.9
    assert compared >= 5
    assert found >= 3, "the detector finds no phantom lesion"


@pytest.mark.slow
@pytest.mark.integration
def test_a_running_box_stores_torchvision_s_boxes_for_phantoms_sent_by_storescu(
        converted, tmp_path, signing_key):
    out, model, _ = converted
    (tmp_path / "box").mkdir()
    box = Box(tmp_path / "box", {
        "runtime": {"backend": "onnxruntime", "precision": "fp32"},
        "models": {"dir": str(tmp_path / "models"), "name": "torchvision-ssd",
                   "trusted_keys": [str(signing_key.with_suffix(".pub"))]}})
    box.cli("model", "install", str(out))
    files = {}
    for i, phantom in enumerate(_phantoms(14, 8)):
        ds = ct_dataset(phantom, {"PatientName": f"SSD^{i}"})
        files[str(ds.SOPInstanceUID)] = write_dicom(ds, tmp_path / f"ct{i}.dcm")
    box.start()
    try:
        sent = storescu(box.port, list(files.values()))
        assert sent.returncode == 0, sent.stderr[-2000:]
        box.wait_idle(len(files))
        rows = box.db_rows("SELECT i.sop_instance_uid, r.model_id, r.findings_json "
                           "FROM results r JOIN instances i ON i.id = r.instance_id")
    finally:
        box.stop()
    assert len(rows) == len(files)
    limits = box_config.from_dict({}).limits
    compared = 0
    for row in rows:
        assert row["model_id"] == "torchvision-ssd@1.0.0"
        image = decode_file(files[row["sop_instance_uid"]], limits, 1).frames[0]
        theirs, _ = _torchvision_boxes(model, image)
        stored = json.loads(row["findings_json"])
        mine = np.array([[b["x0"], b["y0"], b["x1"], b["y1"]] for b in stored]).reshape(-1, 4)
        assert len(mine) == len(theirs), (stored, theirs)
        assert (np.diag(pairwise_iou(mine, theirs)) >= 0.9).all()
        compared += len(mine)
    assert compared >= 3
