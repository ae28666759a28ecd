"""The model maker's cookbook (docs/model-makers/cookbook.md) runs as written (issue 55).

Each example of ``examples/model-makers`` is trained briefly on CT phantoms written as DICOM
(``phantoms/cases.py``) through the public training transform (``converters/box_input.py``),
converted by its page's ``clinibox convert --config convert.toml`` command, installed by
``clinibox model install`` on a box's config, and run on new phantom files through that box's
runner: its lesions are found, named by the head's labels (never "background"), and a
detector's boxes are the PyTorch model's after the box's own NMS.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinibox_common.contracts.heads import parse_heads
from converters.box_input import BoxFeed, box_input
from engine.inference.box_lists import final_boxes, pairwise_iou
from phantoms.cases import read_cases, write_cases
from tests.conversion.cookbook import install, load, on_path, report_text, run_example


def _print_times(family: str, example) -> None:
    """The example's times and key figures (``pytest -s`` shows them; the page quotes them)."""
    print(f"cookbook {family}: train {example.train_s:.1f} s, convert {example.convert_s:.1f} s")
    print(example.convert_stdout[-2500:])
    for artifact in example.manifest["artifacts"]:
        v = artifact["validation"]
        print(artifact["path"], {k: v.get(k) for k in ("images", "auc", "sensitivity",
                                                        "specificity", "threshold", "boxes",
                                                        "ms_per_image", "decision_agreement")})
    print(example.manifest["thresholds"], example.manifest["provenance"].get("left_out"))


def _box_floors(manifest: dict) -> None:
    """Every artifact's final boxes against the PyTorch model's within the gate's floors."""
    assert {a["precision"] for a in manifest["artifacts"]} == {"fp32", "int8"}
    for artifact in manifest["artifacts"]:
        boxes = artifact["validation"]["boxes"]
        assert boxes["lesions"] > 0, artifact["path"]
        floor = (0.98, 0.95) if artifact["precision"] == "fp32" else (0.9, 0.8)
        assert boxes["sensitivity"] >= floor[0] and boxes["mean_iou"] >= floor[1], boxes


def _same_boxes_as_pytorch(runner, reference, cases) -> tuple[int, int]:
    """The box's lesions on each case's file against ``reference(item)`` (boxes in source
    pixels): same count, IoU >= 0.9, named 'lesion'; returns (boxes compared, truth found)."""
    compared = found = 0
    for case in cases:
        item = box_input(case.path, BoxFeed.from_manifest(runner.package.manifest))
        findings, _ = runner.run(item.frame)
        theirs = reference(item)
        mine = np.array([[b.x0, b.y0, b.x1, b.y1] for b in findings.boxes]).reshape(-1, 4)
        assert len(mine) == len(theirs), (findings.boxes, theirs)
        if len(mine):
            assert (np.diag(pairwise_iou(mine, theirs)) >= 0.9).all()
            assert {b.label for b in findings.boxes} == {"lesion"}
            compared += len(mine)
        truth = np.array(case.boxes).reshape(-1, 4)
        if len(truth) and len(mine) and pairwise_iou(truth, mine).max() >= 0.3:
            found += 1
    print(f"{compared} boxes as PyTorch's, {found} of {sum(c.label for c in cases)} phantom "
          "lesions found")
    return compared, found


@pytest.mark.slow
def test_the_yolo_style_detector_example(tmp_path, signing_key):
    example = run_example("yolo", tmp_path, signing_key, "tiny-yolo")
    _print_times("yolo", example)
    manifest = example.manifest
    assert [h["layout"] for h in manifest["heads"]] == ["yolo"]
    assert manifest["inputs"][0]["shape"] == [1, 1, 96, 96]
    _box_floors(manifest)
    assert "per-lesion sensitivity" in report_text(example)

    runner = install(example, tmp_path, signing_key, "tiny-yolo")
    with on_path(example.folder):
        model = load(example.folder, "yolo_model").tiny_yolo()
    model.load_state_dict(torch.load(example.folder / "yolo.pt"))
    model.eval()
    [head] = parse_heads(manifest["heads"])

    def reference(item) -> np.ndarray:
        with torch.no_grad():
            candidates = model(torch.from_numpy(item.x)).numpy()
        boxes, _, _ = final_boxes({"candidates": candidates}, head, (96, 96))
        return item.boxes_to_source(boxes)

    write_cases(tmp_path / "new", seed=13, count=48)
    compared, found = _same_boxes_as_pytorch(runner, reference, read_cases(tmp_path / "new"))
    assert compared >= 5 and found >= 3, (compared, found)


@pytest.mark.slow
def test_the_torchvision_ssd_example(tmp_path, signing_key):
    example = run_example("torchvision-ssd", tmp_path, signing_key, "torchvision-ssd",
                          torchvision=True)
    _print_times("torchvision-ssd", example)
    manifest = example.manifest
    assert [h["layout"] for h in manifest["heads"]] == ["boxes_scores"]
    _box_floors(manifest)

    runner = install(example, tmp_path, signing_key, "torchvision-ssd")
    with on_path(example.folder):
        ssd_model = load(example.folder, "ssd_model")
    wrapper = ssd_model.torchvision_ssd()
    wrapper.load_state_dict(torch.load(example.folder / "ssd.pt"))
    detector = wrapper.detector.eval()

    def reference(item) -> np.ndarray:
        """torchvision's own final boxes (its postprocessing and NMS), in source pixels."""
        with torch.no_grad():
            [found] = detector([torch.from_numpy(item.x[0])])
        return item.boxes_to_source(found["boxes"].numpy())

    write_cases(tmp_path / "new", seed=13, count=48)
    compared, found = _same_boxes_as_pytorch(runner, reference, read_cases(tmp_path / "new"))
    assert compared >= 5 and found >= 3, (compared, found)


@pytest.mark.slow
def test_the_lraspp_segmenter_example_names_its_lesions_lesion(tmp_path, signing_key):
    example = run_example("lraspp", tmp_path, signing_key, "lesion-lraspp", torchvision=True)
    _print_times("lraspp", example)
    manifest = example.manifest
    assert manifest["heads"] == [{"kind": "segmentation", "output": "out",
                                  "activation": "softmax", "labels": ["background", "lesion"],
                                  "background": "background"}]
    assert manifest["inputs"][0]["shape"] == [1, 3, 96, 96]
    fp32 = next(a for a in manifest["artifacts"] if a["precision"] == "fp32")
    assert max(fp32["validation"]["max_abs_delta"].values()) < 1e-3
    assert "segmentation: softmax over background, lesion" in report_text(example)

    runner = install(example, tmp_path, signing_key, "lesion-lraspp")
    write_cases(tmp_path / "new", seed=13, count=48)
    feed = BoxFeed.from_manifest(manifest)
    found = 0
    for case in read_cases(tmp_path / "new"):
        findings, _ = runner.run(box_input(case.path, feed).frame)
        assert {b.label for b in findings.boxes} <= {"lesion"}, findings.boxes
        truth = np.array(case.boxes).reshape(-1, 4)
        mine = np.array([[b.x0, b.y0, b.x1, b.y1] for b in findings.boxes]).reshape(-1, 4)
        if len(truth) and len(mine) and pairwise_iou(truth, mine).max() >= 0.3:
            found += 1
    assert found >= 3, f"{found} phantom lesions outlined"



@pytest.mark.slow
def test_the_timm_classifier_example_gets_its_heatmap_and_says_it_is_weak(tmp_path,
                                                                          signing_key):
    example = run_example("timm-classifier", tmp_path, signing_key, "lesion-mobilenet",
                          torchvision=True)
    _print_times("timm-classifier", example)
    manifest = example.manifest
    assert [h["kind"] for h in manifest["heads"]] == ["classification", "heatmap"]
    heatmap = manifest["provenance"]["steps"]["heatmap"]
    assert heatmap["added"] and heatmap["method"].startswith("Grad-CAM in the graph")
    assert heatmap["head_layers"] == ["conv_head", "norm_head", "act2", "flatten", "classifier"]
    assert heatmap["grad_cam"]["correlation"]["onnx-fp32"]["min"] >= 0.99
    # its INT8 artifact passes the gate or is left out with the reason (int8_optional)
    kept = {a["precision"] for a in manifest["artifacts"]}
    left = manifest["provenance"].get("left_out", [])
    assert "fp32" in kept and ("int8" in kept) != bool(left), (kept, left)
    assert all(e["reason"].startswith("an int8_optional INT8 artifact") for e in left), left
    # accepted below the floors, and said so where a reviewer reads it
    weakness = manifest["provenance"]["weakness"]
    assert weakness and all(w["accepted_by"].startswith("the operator") for w in weakness)
    assert "accepted by the operator" in report_text(example)

    runner = install(example, tmp_path, signing_key, "lesion-mobilenet")
    write_cases(tmp_path / "new", seed=13, count=8)
    feed = BoxFeed.from_manifest(manifest)
    for case in read_cases(tmp_path / "new"):
        findings, _ = runner.run(box_input(case.path, feed).frame)
        # the map on the last feature maps' grid (the page draws it over the image)
        assert findings.heatmap is not None, case.path
        assert list(findings.heatmap.shape) == heatmap["map"][1:] and findings.heatmap.max() > 0
