"""The shipped demo package: it verifies, every artifact reproduces its golden cases with its
own runtime (onnxruntime, openvino, ai_edge_litert used directly), and tampering is refused."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from clinibox_common.bundled import DEMO_PUBLIC_KEY, REPO_ROOT
from clinibox_common.contracts import signing
from clinibox_common.contracts.heads import parse_heads, parse_validated_range
from clinibox_common.contracts.manifest import PackageError
from demo.metrics import real_images
from demo.model import SEEDS
from engine.imaging.preprocess import get_preprocessor, letterbox_grey
from engine.inference.heads import decoder_for
from engine.inference.masks import axes
from engine.inference.postprocess import sigmoid
from engine.inference.validated_range import RangeGuard
from engine.model_package import load_package
from engine.model_stages import load_stage
from engine.settings import RuntimeConfig
from phantoms.images import dataset_plan, dataset_sample

PACKAGE = REPO_ROOT / "models" / "clinibox-demo-lesion" / "1.0.0"
OUTPUTS = {"lesion_logit": (1, 1), "centre_heatmap": (1, 1, 32, 32), "box_size": (1, 2, 32, 32),
           "cam": (1, 1, 32, 32), "lesion_class": (1, 2, 32, 32),
           "lesion_mask": (1, 1, 64, 64), "features": (1, 24)}


#: share of held-out lesions over 5 mm whose both measured axes are within 15 % of truth,
#: with the second stage (issue 15 asks for essentially all; the demo reaches about 0.96,
#: its first stage alone about 0.61): this guards against it getting worse
SIZES_WITHIN = 0.94


@pytest.fixture(scope="module")
def package():
    return load_package(PACKAGE, [DEMO_PUBLIC_KEY])


def run_artifact(fmt: str, path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """One inference with the artifact's own runtime, outputs by name (dequantised)."""
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == ["image"]
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(None, {"image": x}), strict=True))
    if fmt == "openvino-ir":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU")
        res = compiled([x])
        return {o.get_any_name(): np.asarray(res[o]) for o in compiled.outputs}
    assert fmt == "tflite"
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    detail = runner.get_input_details()["image"]
    if detail["dtype"] != np.float32:  # full-integer model: quantise the input
        scale, zero = detail["quantization"]
        x = np.clip(np.rint(x / scale + zero), -128, 127).astype(detail["dtype"])
    out = runner(image=x)
    for name, d in runner.get_output_details().items():
        if d["dtype"] != np.float32:
            scale, zero = d["quantization"]
            out[name] = (out[name].astype(np.float32) - zero) * scale
    return out


def test_package_loads_and_says_what_it_is(package):
    m = package.manifest
    assert package.model_id == "clinibox-demo-lesion@1.0.0"
    assert m["task"] == "lesion-detection" and m["labels"] == ["lesion"]
    assert m["intended_use"].startswith("DEMONSTRATION ONLY")
    assert "not for clinical use" in m["intended_use"]
    assert package.modalities == ["CT", "US", "MR", "CR", "DX", "MG", "OT"]
    assert package.input.shape == (1, 1, 256, 256) and package.input.name == "image"
    assert [o["name"] for o in m["outputs"]] == list(OUTPUTS)
    t = package.thresholds
    assert 0 < t["finding"] < t["alert"] < 1 and 0 < t["box"] < 1
    assert m["preprocessing"] == {"name": "letterbox_grey", "params": {}}
    assert m["postprocessing"] == {"name": "heads", "params": {"input_size": [256, 256]}}
    heads = {h.kind: h for h in parse_heads(m["heads"])}
    assert set(heads) == {"detection", "classification", "segmentation", "heatmap"}
    assert heads["classification"].outputs == {"output": "lesion_class"}
    assert heads["classification"].params["labels"] == ["benign", "malignant"]
    assert heads["classification"].params["per"] == "lesion"
    assert heads["segmentation"].outputs == {"output": "lesion_mask"}
    # the range measures the input's own statistics (the box computes them), then features
    ood = parse_validated_range(m["ood"])
    assert ood.output == "features" and ood.image_statistics is not None
    assert len(ood.mean) == ood.image_statistics.size + OUTPUTS["features"][1]
    assert m["ood"]["held_out"]["flagged"] <= 0.01
    labels = {a.label for a in package.artifacts}
    assert {"onnx/fp32", "onnx/int8", "openvino-ir/fp32", "openvino-ir/int8",
            "tflite/fp32"} <= labels
    [stage] = package.stages  # the second stage: outline and class on each lesion's crop
    assert stage.name == "clinibox-demo-lesion/lesion-crop" and stage.version == "1.0.0"
    assert stage.input.shape == (1, 1, 64, 64)
    assert {h.kind for h in parse_heads(stage.manifest["heads"])} == {"segmentation",
                                                                     "classification"}
    assert {a.label for a in stage.artifacts} == {"onnx/fp32", "tflite/fp32"}
    for art in stage.artifacts:
        assert art.validation["mask_iou_with_torch"] >= 0.98, art.label
        assert art.validation["max_class_probability_difference"] <= 0.02, art.label
    assert stage.manifest["validation"]["both_axes_within_15pct"] >= 0.8
    assert stage.manifest["validation"]["class_auc"] >= 0.9
    # one look, and the mask offset that sized most threshold-selection lesions end to end
    calibration = stage.manifest["validation"]["mask_calibration"]
    assert calibration["orientations"] == [0]
    shares = calibration["both_axes_within_15pct_by_offset"]
    assert shares[str(calibration["offset"])] == max(shares.values())
    assert set(calibration["both_axes_within_15pct_by_looks"]) == {"1", "2", "8"}
    fp32_auc = next(a for a in package.artifacts if a.label == "onnx/fp32").validation["auc"]
    for art in package.artifacts:  # the converter's fidelity gate, re-checked
        v = art.validation
        assert v["auc"] > 0.9 and abs(v["auc"] - fp32_auc) <= 0.01, art.label
        assert v["sensitivity_delta"] >= 0 and v["ms_per_image"] > 0, art.label
        assert v["decision_agreement"] >= (0.999 if art.precision != "int8" else 0.96)
        # int8: the worst single image; the converter's gate judges AUC and sensitivity
        limit = {"fp32": 1e-3, "fp16": 0.02, "int8": 0.4}[art.precision]
        assert v["max_abs_delta_probability"] < limit, art.label


def test_package_is_small_and_single_file_onnx():
    files = [f for f in PACKAGE.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 10 * 1024 * 1024
    assert not [f for f in files if f.name.endswith(".data")]
    assert (PACKAGE / "MODEL_CARD.md").read_text().startswith("# Model card")
    assert "**NOT FOR CLINICAL USE" in (PACKAGE / "MODEL_CARD.md").read_text()


def golden_phantom(package, case: dict):
    """The held-out phantom a golden case was cut from (its description names the index)."""
    index = int(re.search(r"phantom:test:(\d+)", case["description"]).group(1))
    count = package.manifest["provenance"]["data"]["rows"]["validation"]
    return dataset_sample(SEEDS["test"], index, dataset_plan(SEEDS["test"], count))


def test_golden_inputs_are_exactly_what_the_box_preprocessing_makes(package):
    prep = get_preprocessor(package.manifest["preprocessing"]["name"])
    spec = package.input
    cases = package.manifest["golden_cases"]
    assert len(cases) >= 8
    assert {c["class"] for c in cases} == {"finding", "no-finding"}
    for case in cases:
        phantom = golden_phantom(package, case)
        assert phantom.lesion == (case["class"] == "finding")
        tensor, _ = prep(phantom.image, spec.shape, spec.mean, spec.std, {})
        # the trainer keeps letterboxed planes as float16 (memory): within its rounding
        np.testing.assert_allclose(tensor, np.load(PACKAGE / case["input"]), atol=2e-3)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["model.fp32.onnx", "model.fp16.onnx", "model.int8.onnx",
                                  "model.int8-trt.onnx", "openvino/model.fp32.xml",
                                  "openvino/model.int8.xml", "model.fp32.tflite",
                                  "model.int8.tflite"])
def test_every_artifact_meets_the_golden_cases(package, path):
    art = next(a for a in package.artifacts if a.path == PACKAGE / path)
    label = art.label
    finding = package.thresholds["finding"]
    for case in package.manifest["golden_cases"]:
        x = np.load(PACKAGE / case["input"])
        out = run_artifact(art.format, art.path, x)
        for name, shape in OUTPUTS.items():
            assert tuple(out[name].shape) == shape, (label, name)
        p = float(sigmoid(out["lesion_logit"][0, 0]))
        expected = case["expected"]["probability"]
        assert abs(p - expected) <= case["tolerance"], (label, case["input"], p, expected)
        if abs(p - finding) > case["tolerance"]:  # a case within tolerance of the threshold
            assert (p >= finding) == (case["class"] == "finding"), (label, p)  # may tip


@pytest.mark.slow
def test_decoder_finds_the_golden_lesion(package):
    art = next(a for a in package.artifacts if a.label == "onnx/fp32")
    decoder = decoder_for(package.manifest)
    for case in package.manifest["golden_cases"]:
        phantom = golden_phantom(package, case)
        x, transform = letterbox_grey(phantom.image, package.input.shape, package.input.mean,
                                      package.input.std, {})
        found = decoder.decode(run_artifact("onnx", art.path, x), transform)
        h, w = phantom.image.shape
        assert found.heatmap.shape[0] * w == pytest.approx(found.heatmap.shape[1] * h, rel=0.1)
    # over held-out lesion phantoms: found, classed and measured as the box does, with the
    # second stage on ONNX Runtime, and by the first stage alone
    stage = load_stage(package, RuntimeConfig(backend="onnxruntime"), "onnxruntime")
    assert stage is not None
    plan = dataset_plan(SEEDS["test"], 1000)
    hits = total = within = measured = alone = 0
    for index in range(60):
        phantom = dataset_sample(SEEDS["test"], index, plan)
        if not phantom.lesion:
            continue
        x, transform = letterbox_grey(phantom.image, package.input.shape, package.input.mean,
                                      package.input.std, {})
        first = decoder.decode(run_artifact("onnx", art.path, x), transform).boxes
        refined = stage.refine(phantom.image, first)
        for truth in phantom.lesions:
            total += 1
            x0, y0, x1, y1 = truth.box
            overlaps = [i for i, b in enumerate(refined)
                        if b.x0 < x1 and x0 < b.x1 and b.y0 < y1 and y0 < b.y1]
            hits += bool(overlaps)
            if not overlaps or refined[overlaps[0]].mask is None or truth.long_axis_mm <= 5:
                continue
            mine = refined[overlaps[0]]
            assert set(mine.class_probabilities) == {"benign", "malignant"}
            assert sum(mine.class_probabilities.values()) == pytest.approx(1, abs=1e-3)
            measured += 1
            within += _both_within(axes(mine.mask, phantom.spacing), truth)
            if first[overlaps[0]].mask is not None:
                alone += _both_within(axes(first[overlaps[0]].mask, phantom.spacing), truth)
    stage.close()
    assert total >= 20 and hits / total >= 0.7, (hits, total)
    assert measured >= 15 and within / measured >= SIZES_WITHIN, (within, measured)
    assert within > alone + 0.1 * measured, (within, alone, measured)  # the stage earns its keep


def _both_within(size, truth) -> bool:
    return (abs(size.long_axis - truth.long_axis_mm) <= 0.15 * truth.long_axis_mm
            and abs(size.short_axis - truth.short_axis_mm) <= 0.15 * truth.short_axis_mm)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "tflite"])
def test_the_second_stage_passes_its_golden_cases_on_every_runtime(package, backend):
    """The stage runs where the first stage's runtime reads one of its artifacts (ONNX for
    ONNX Runtime and OpenVINO, TFLite for TFLite), its golden cases within tolerance."""
    stage = load_stage(package, RuntimeConfig(backend=backend), backend)
    assert stage is not None and stage.backend.key == backend
    assert stage.artifact_label == ("tflite/fp32" if backend == "tflite" else "onnx/fp32")
    stage.close()


@pytest.mark.slow
@pytest.mark.parametrize("label", ["onnx/fp32", "onnx/int8", "openvino-ir/int8", "tflite/int8"])
def test_real_ct_and_mr_are_outside_the_validated_range(package, label):
    """pydicom's real CT and MR files, decoded as the box does, are unlike every phantom
    (the guard measures the model's input and its features, as the box does)."""
    art = next(a for a in package.artifacts if a.label == label)
    guard = RangeGuard.from_manifest(package.manifest)
    rows = real_images(package.input.shape, package.input.mean, package.input.std)
    assert {name for name, _, _ in rows} >= {"CT_small.dcm", "MR_small.dcm", "emri_small.dcm"}
    for name, frame, x in rows:
        score = guard.score(run_artifact(art.format, art.path, x), x)
        assert score.outside, (label, name, frame, score.ratio)
    # and held-out phantoms are (almost all) inside it
    plan = dataset_plan(SEEDS["test"], 1000)
    inside = 0
    for index in range(40):
        phantom = dataset_sample(SEEDS["test"], index, plan)
        x, _ = letterbox_grey(phantom.image, package.input.shape, package.input.mean,
                              package.input.std, {})
        inside += not guard.score(run_artifact(art.format, art.path, x), x).outside
    assert inside >= 39, (label, inside)


def test_the_card_gives_classes_sizes_and_the_validated_range():
    card = (PACKAGE / "MODEL_CARD.md").read_text()
    for words in ("Benign/malignant AUC", "within 15 % of truth", "Validated range",
                  "CT_small.dcm", "MR_small.dcm", "emri_small.dcm"):
        assert words in card, words
    steps = json.loads((PACKAGE / "manifest.json").read_text())["provenance"]["steps"]
    assert steps["lesions"]["class_auc"] >= 0.8
    assert steps["lesions"]["sizes"]["both_within_15pct"] >= SIZES_WITHIN
    assert (steps["lesions"]["sizes"]["both_within_15pct"]
            > steps["lesions_first_stage"]["sizes"]["both_within_15pct"] + 0.1)
    assert steps["stage"]["class_auc"] >= 0.9
    assert "Second stage" in card
    # the stage that sees the whole crop
    # (docs/decisions/0023-four-scale-stage-first-stage-recovered.md)
    assert steps["stage"]["depth"] == 4 and "a small U-Net of 4 scales" in card
    # the shipped package was rebuilt from the first stage its checkpoint kept, read back
    # from the earlier package's float graph; the card names the build that trained it
    kept = steps["from_checkpoint"]
    assert f"Steps 1–3 are those of the build of {kept['package_built']}" in card
    assert f"`{kept['recovered_from']['artifact']}`" in card
    assert steps["ood"]["torch"]["real_all_flagged"] is True
    assert all(r["real_all_flagged"] for r in steps["ood"]["artifacts"].values())
    assert steps["ood"]["torch"]["phantoms_flagged"] <= 0.015


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "clinibox-demo-lesion" / "1.0.0"
    shutil.copytree(PACKAGE, target)
    return target


def test_tampered_artifact_is_refused(tmp_path):
    copy = _copy(tmp_path)
    load_package(copy, [DEMO_PUBLIC_KEY])
    victim = copy / "model.int8.onnx"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(PackageError, match=r"model\.int8\.onnx"):
        load_package(copy, [DEMO_PUBLIC_KEY])


def test_manifest_edit_breaks_the_signature(tmp_path):
    copy = _copy(tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["thresholds"]["finding"] = 0.01
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with pytest.raises(PackageError, match="does not match"):
        load_package(copy, [DEMO_PUBLIC_KEY])


def test_untrusted_key_is_refused(tmp_path):
    pub = tmp_path / "other.pub"
    signing.generate_key_pair(tmp_path / "other.pem", pub)
    with pytest.raises(PackageError, match="does not trust"):
        load_package(PACKAGE, [pub])


def test_the_card_says_what_the_clinics_may_train():
    """The card names the trainable model and its head from the signed manifest, and a
    version made from a federated run names its rounds, boxes, cases and privacy budget."""
    from demo.card import learning_section

    manifest = json.loads((PACKAGE / "manifest.json").read_text())
    card = (PACKAGE / "MODEL_CARD.md").read_text()
    assert learning_section(manifest) in card
    assert "`learning/trainable.onnx`" in card and "not fine-tuned in federated" in card
    run = {"rounds": 5, "package": "clinibox-demo-lesion 1.0.0", "boxes_per_round": [5] * 5,
           "cases_per_round": [200] * 5, "privacy": {"epsilon": 25.1, "delta": 0.001}}
    federated = {**manifest, "provenance": {**manifest["provenance"], "federated": run}}
    text = learning_section(federated)
    assert "5 federated rounds" in text and "ε = 25.1 at δ = 0.001" in text
    assert "carries no trainable model" in learning_section(
        {k: v for k, v in manifest.items() if k != "learning"})
