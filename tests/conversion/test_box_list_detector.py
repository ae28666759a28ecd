"""Bring your own detector: a YOLO-style model that outputs candidate boxes (issue 55).

A small anchor-free detector written in plain PyTorch (a grid of cells, each
predicting one box ``cx, cy, w, h`` in model-input pixels and its lesion score:
``[1, N, 4 + 1]``) is trained for a few seconds on CT phantoms, converted by the
real ``clinibox convert`` with a ``layout = "yolo"`` detection head declared in
``convert.toml`` (ONNX FP32 and INT8), installed by the box's own install path
(signature, hashes, golden cases) and run on phantoms: the box's lesion boxes,
after its own class-aware NMS, are the PyTorch model's (IoU >= 0.9); then a real
``clinibox serve`` with the package installed receives CT phantoms from dcmtk's
storescu and stores the same boxes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clinibox_common.bundled import REPO_ROOT
from clinibox_common.contracts.heads import parse_heads
from engine.imaging.preprocess import letterbox_grey
from engine.imaging.wrap import decode_file
from engine.inference.box_lists import final_boxes, pairwise_iou
from engine.model_package import load_package
from firmware_app.models.install import install
from firmware_app.service.appliance import load_runner
from firmware_app.settings import box as box_config
from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import dataset_plan, dataset_sample
from tests.box_harness import Box, storescu
from tests.conversion.conftest import clinibox
from tests.conversion.test_bring_your_own import one_thread

SIZE, STRIDE, MEAN, STD = 96, 8, 0.3, 0.2

# the cookbook's YOLO-style detector (docs/model-makers/cookbook.md), as clinic_yolo.py
MODULE = (REPO_ROOT / "examples" / "model-makers" / "yolo" / "yolo_model.py").read_text()

TOML = '''
outputs = ["candidates"]
class_names = ["lesion"]
task = "lesion-detection"
# a detector trained for seconds on faint phantom lesions
floor_auc = 0.6
# half the phantoms calibrate INT8 and its guard band
split = {calibration = 0.5, validation = 0.5}

[[heads]]
kind = "detection"
layout = "yolo"
output = "candidates"
box_format = "cxcywh"
labels = ["lesion"]
iou_threshold = 0.4
score_threshold = 0.3
max_detections = 5
'''


def _phantoms(seed: int, count: int) -> list:
    """CT phantoms of the model's input size (half with lesions)."""
    plan = dataset_plan(seed, count, ("ct",))
    return [dataset_sample(seed, i, plan, size=SIZE) for i in range(count)]


def _input(image: np.ndarray) -> np.ndarray:
    """The box's own preprocessing of a grey image: [1, 1, SIZE, SIZE]."""
    return letterbox_grey(image, (1, 1, SIZE, SIZE), MEAN, STD, {})[0]


def _targets(boxes: list[list[tuple]]) -> tuple[np.ndarray, np.ndarray]:
    """Each lesion's cell (its centre's) and its box there, as the model predicts it."""
    grid = SIZE // STRIDE
    hit = np.zeros((len(boxes), grid, grid), np.float32)
    where = np.zeros((len(boxes), 4, grid, grid), np.float32)
    for i, lesions in enumerate(boxes):
        for x0, y0, x1, y1 in lesions:
            cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
            gx, gy = min(grid - 1, int(cx)), min(grid - 1, int(cy))
            hit[i, gy, gx] = 1
            where[i, :, gy, gx] = (cx - gx, cy - gy, np.log((x1 - x0) / STRIDE),
                                   np.log((y1 - y0) / STRIDE))
    return hit, where


def _train(model: torch.nn.Module, phantoms: list, epochs: int = 30) -> torch.nn.Module:
    """Adam on the lesion cells' BCE (positives weighted 20×) and their boxes' smooth L1."""
    x = torch.from_numpy(np.concatenate([_input(p.image) for p in phantoms]))
    hit, where = (torch.from_numpy(a) for a in _targets([p.boxes for p in phantoms]))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(order), 32):
            idx = order[i:i + 32]
            p = model.raw(x[idx])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                p[:, 4], hit[idx], pos_weight=torch.tensor(20.0))
            cells = hit[idx] > 0
            if cells.any():
                box = torch.stack([torch.sigmoid(p[:, 0]), torch.sigmoid(p[:, 1]), p[:, 2],
                                   p[:, 3]], 1).permute(0, 2, 3, 1)[cells]
                loss = loss + 2 * torch.nn.functional.smooth_l1_loss(
                    box, where[idx].permute(0, 2, 3, 1)[cells])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _write_folder(folder: Path, phantoms: list) -> Path:
    """The phantoms as 8-bit PNGs and ``labels.csv`` (1: a lesion is drawn)."""
    folder.mkdir(parents=True)
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label"])
        for i, phantom in enumerate(phantoms):
            Image.fromarray(np.round(phantom.image * 255).astype(np.uint8)).save(
                folder / f"ct{i:04d}.png")
            writer.writerow([f"ct{i:04d}.png", int(bool(phantom.boxes))])
    return folder / "labels.csv"


@pytest.fixture(scope="module")
def converted(tmp_path_factory, signing_key) -> tuple[Path, torch.nn.Module, dict]:
    """The detector trained on CT phantoms and converted: (package folder, model, manifest)."""
    tmp_path = tmp_path_factory.mktemp("yolo")
    (tmp_path / "clinic_yolo.py").write_text(MODULE)
    (tmp_path / "convert.toml").write_text(TOML)
    namespace: dict = {}
    exec(MODULE, namespace)
    torch.manual_seed(0)
    with one_thread():
        model = _train(namespace["tiny_yolo"](), _phantoms(11, 300))
    torch.save(model.state_dict(), tmp_path / "yolo.pt")
    labels = _write_folder(tmp_path / "data", _phantoms(12, 160))
    out = tmp_path / "packages" / "tiny-yolo" / "1.0.0"
    run = clinibox("convert", "--config", "convert.toml", "--model", "clinic_yolo:tiny_yolo",
                   "--weights", "yolo.pt", "--input-shape", f"1,{SIZE},{SIZE}", "--mean",
                   str(MEAN), "--std", str(STD), "--data", "data", "--labels", str(labels),
                   "--targets", "onnx", "--out", str(out), "--key", str(signing_key),
                   cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-6000:]
    return out, model, load_package(out, [signing_key.with_suffix(".pub")]).manifest


def _reference(model: torch.nn.Module, manifest: dict, image: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """The PyTorch model's final boxes on a grey image, after the box's own NMS, in the
    image's pixels (corners [M, 4]), and their scores."""
    x, transform = letterbox_grey(image, (1, 1, SIZE, SIZE), MEAN, STD, {})
    with torch.no_grad():
        candidates = model(torch.from_numpy(x)).numpy()
    boxes, scores, _ = final_boxes({"candidates": candidates},
                                   parse_heads(manifest["heads"])[0], (SIZE, SIZE))
    return (boxes - [transform.offset_x, transform.offset_y] * 2) / transform.scale, scores


@pytest.mark.slow
def test_a_yolo_style_detector_converts_installs_and_outlines_what_pytorch_outlines(
        converted, tmp_path, signing_key):
    out, model, manifest = converted
    [head] = manifest["heads"]
    assert head["layout"] == "yolo" and head["output"] == "candidates"
    shapes = {o["name"]: o["shape"] for o in manifest["outputs"]}
    assert shapes == {"candidates": [1, (SIZE // STRIDE) ** 2, 5], "finding_logit": [1, 1]}
    # every artifact's final boxes against the PyTorch model's, after the box's own NMS
    assert {a["precision"] for a in manifest["artifacts"]} == {"fp32", "int8"}
    for artifact in manifest["artifacts"]:
        boxes = artifact["validation"]["boxes"]
        assert boxes["lesions"] > 0, artifact["path"]
        floor = (0.98, 0.95) if artifact["precision"] == "fp32" else (0.9, 0.8)
        assert boxes["sensitivity"] >= floor[0] and boxes["mean_iou"] >= floor[1], boxes
    assert "per-lesion sensitivity" in (out / "report.html").read_text(encoding="utf-8")

    # installed as a technician installs a package (golden cases run), then run on phantoms
    cfg = box_config.from_dict({
        "storage": {"state_dir": str(tmp_path / "state")},
        "runtime": {"backend": "onnxruntime", "precision": "fp32"},
        "models": {"dir": str(tmp_path / "box-models"), "name": "tiny-yolo",
                   "trusted_keys": [str(signing_key.with_suffix(".pub"))]}})
    assert install(cfg, out).golden.passed
    runner = load_runner(cfg)
    found = compared = 0
    for phantom in _phantoms(13, 24):
        findings, _ = runner.run(phantom.image)
        theirs, scores = _reference(model, manifest, phantom.image)
        mine = np.array([[b.x0, b.y0, b.x1, b.y1] for b in findings.boxes]).reshape(-1, 4)
        assert len(mine) == len(theirs), (findings.boxes, theirs)
        if len(mine):
            assert (np.diag(pairwise_iou(mine, theirs)) >= 0.9).all()
            assert [b.score for b in findings.boxes] == pytest.approx(scores.tolist(), abs=1e-3)
            assert {b.label for b in findings.boxes} == {"lesion"}
            compared += len(mine)
        truth = np.array(phantom.boxes).reshape(-1, 4)
        if len(truth) and len(mine) and pairwise_iou(truth, mine).max() >= 0.3:
            found += 1
    assert compared >= 5
    assert found >= 3, "the detector finds no phantom lesion"


@pytest.mark.slow
@pytest.mark.integration
def test_a_running_box_stores_the_pytorch_model_s_boxes_for_phantoms_sent_by_storescu(
        converted, tmp_path, signing_key):
    out, model, manifest = converted
    (tmp_path / "box").mkdir()
    box = Box(tmp_path / "box", {
        "runtime": {"backend": "onnxruntime", "precision": "fp32"},
        "models": {"dir": str(tmp_path / "models"), "name": "tiny-yolo",
                   "trusted_keys": [str(signing_key.with_suffix(".pub"))]}})
    box.cli("model", "install", str(out))
    files = {}
    for i, phantom in enumerate(_phantoms(14, 8)):
        ds = ct_dataset(phantom, {"PatientName": f"YOLO^{i}"})
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
        assert row["model_id"] == "tiny-yolo@1.0.0"
        image = decode_file(files[row["sop_instance_uid"]], limits, 1).frames[0]
        theirs, _ = _reference(model, manifest, image)
        stored = json.loads(row["findings_json"])
        mine = np.array([[b["x0"], b["y0"], b["x1"], b["y1"]] for b in stored]).reshape(-1, 4)
        assert len(mine) == len(theirs), (stored, theirs)
        assert (np.diag(pairwise_iou(mine, theirs)) >= 0.9).all()
        compared += len(mine)
    assert compared >= 3
