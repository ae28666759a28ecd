"""Model-package verification: signature, trusted keys, hashes, schema, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clinibox.table import main as cli_main
from clinibox_common.contracts import signing
from clinibox_common.contracts.manifest import PackageError, sha256_file
from engine.model_package import find_package, list_packages, load_package


def _manifest(version: str = "1.0.0") -> dict:
    return {
        "schema": "clinibox.model-package/1",
        "name": "test-model",
        "version": version,
        "task": "lesion-detection",
        "inputs": [{"name": "image", "shape": [1, 1, 64, 64], "dtype": "float32",
                    "layout": "NCHW", "normalisation": {"mean": 0.5, "std": 0.25}}],
        "outputs": [{"name": "lesion_logit", "meaning": "image-level logit"}],
        "labels": ["lesion"],
        "thresholds": {"finding": 0.5, "alert": 0.9, "box": 0.3},
        "preprocessing": {"name": "letterbox_grey", "params": {}},
        "postprocessing": {"name": "centre_heatmap_boxes", "params": {}},
        "artifacts": [],
    }


@pytest.fixture
def keys(tmp_path):
    signing.generate_key_pair(tmp_path / "k1.pem", tmp_path / "k1.pub")
    signing.generate_key_pair(tmp_path / "k2.pem", tmp_path / "k2.pub")
    return tmp_path


def make_package(root: Path, key: Path, version: str = "1.0.0") -> Path:
    """A signed package with one artifact file."""
    root.mkdir(parents=True)
    (root / "model.onnx").write_bytes(b"not really a model, but hashed like one")
    manifest = _manifest(version)
    manifest["artifacts"] = [{
        "format": "onnx", "precision": "fp32", "path": "model.onnx",
        "files": {"model.onnx": sha256_file(root / "model.onnx")},
    }]
    signed = signing.sign_document(manifest, signing.load_private_key(key))
    (root / "manifest.json").write_text(json.dumps(signed, indent=2))
    return root


def test_signed_package_loads(keys, tmp_path):
    root = make_package(tmp_path / "models" / "test-model" / "1.0.0", keys / "k1.pem")
    package = load_package(root, [keys / "k1.pub"])
    assert package.model_id == "test-model@1.0.0"
    assert package.input.shape == (1, 1, 64, 64)
    assert package.input.mean == 0.5
    assert package.artifacts[0].label == "onnx/fp32"


def test_untrusted_key_is_refused(keys, tmp_path):
    root = make_package(tmp_path / "p", keys / "k1.pem")
    with pytest.raises(PackageError, match="does not trust"):
        load_package(root, [keys / "k2.pub"])


def test_tampered_artifact_is_refused(keys, tmp_path):
    root = make_package(tmp_path / "p", keys / "k1.pem")
    (root / "model.onnx").write_bytes(b"swapped model")
    with pytest.raises(PackageError, match="corrupted or altered"):
        load_package(root, [keys / "k1.pub"])


def test_edited_manifest_breaks_the_signature(keys, tmp_path):
    root = make_package(tmp_path / "p", keys / "k1.pem")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["thresholds"]["finding"] = 0.99
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="signature does not match"):
        load_package(root, [keys / "k1.pub"])


def test_unsigned_package_is_refused(keys, tmp_path):
    root = make_package(tmp_path / "p", keys / "k1.pem")
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["signature"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="not signed"):
        load_package(root, [keys / "k1.pub"])


def test_artifact_path_outside_package_is_refused(keys, tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    (tmp_path / "evil.onnx").write_bytes(b"x")
    manifest = _manifest()
    manifest["artifacts"] = [{"format": "onnx", "precision": "fp32", "path": "../evil.onnx",
                              "files": {"../evil.onnx": sha256_file(tmp_path / "evil.onnx")}}]
    signed = signing.sign_document(manifest, signing.load_private_key(keys / "k1.pem"))
    (root / "manifest.json").write_text(json.dumps(signed))
    with pytest.raises(PackageError, match="outside the package"):
        load_package(root, [keys / "k1.pub"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(schema="other/9"), "unknown manifest schema"),
        (lambda m: m.pop("inputs"), "missing 'inputs'"),
        (lambda m: m.update(version="1.0-beta"), "not dotted numbers"),
        (lambda m: m["artifacts"][0].update(format="caffe"), "artifact format"),
        (lambda m: m.update(artifacts=[]), "lists no artifacts"),
        (lambda m: m["artifacts"][0].update(thresholds={"finding": 1.5}), "between 0 and 1"),
        (lambda m: m["artifacts"][0].update(thresholds={"verdict": 0.2}), "unknown threshold"),
    ],
)
def test_schema_errors_are_named(keys, tmp_path, edit, message):
    root = make_package(tmp_path / "p", keys / "k1.pem")
    manifest = json.loads((root / "manifest.json").read_text())
    edit(manifest)
    resigned = signing.sign_document(manifest, signing.load_private_key(keys / "k1.pem"))
    (root / "manifest.json").write_text(json.dumps(resigned))
    with pytest.raises(PackageError, match=message):
        load_package(root, [keys / "k1.pub"])


def test_an_artifact_runs_at_its_own_thresholds_in_place_of_the_packages(keys, tmp_path):
    root = make_package(tmp_path / "p", keys / "k1.pem")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest.pop("signature")
    (root / "model.int8.onnx").write_bytes(b"an int8 artifact")
    manifest["artifacts"].append({
        "format": "onnx", "precision": "int8", "path": "model.int8.onnx",
        "files": {"model.int8.onnx": sha256_file(root / "model.int8.onnx")},
        "thresholds": {"finding": 0.42}})
    signed = signing.sign_document(manifest, signing.load_private_key(keys / "k1.pem"))
    (root / "manifest.json").write_text(json.dumps(signed))
    package = load_package(root, [keys / "k1.pub"])
    fp32, int8 = package.artifacts
    assert package.thresholds_for(fp32) == {"finding": 0.5, "alert": 0.9, "box": 0.3}
    assert package.thresholds_for(int8) == {"finding": 0.42, "alert": 0.9, "box": 0.3}


def test_find_package_picks_newest_version(keys, tmp_path):
    models = tmp_path / "models"
    for version in ("1.2.0", "1.10.0", "1.9.3"):
        make_package(models / "test-model" / version, keys / "k1.pem", version)
    assert find_package(models, "test-model").name == "1.10.0"
    assert find_package(models, "test-model", "1.2.0").name == "1.2.0"
    assert len(list_packages(models)) == 3
    with pytest.raises(PackageError, match="no model package"):
        find_package(models, "other")


def test_cli_model_verify(keys, tmp_path, capsys):
    root = make_package(tmp_path / "models" / "test-model" / "1.0.0", keys / "k1.pem")
    config = tmp_path / "box.toml"
    config.write_text(f'[models]\ndir = "{tmp_path / "models"}"\nname = "test-model"\n'
                      f'trusted_keys = ["{keys / "k1.pub"}"]\n')
    assert cli_main(["model", "verify", "--config", str(config)]) == 0
    assert "OK test-model@1.0.0" in capsys.readouterr().out
    (root / "model.onnx").write_bytes(b"tampered")
    assert cli_main(["model", "verify", "--config", str(config)]) == 1
    assert "REFUSED" in capsys.readouterr().err


@pytest.mark.parametrize("trainable", [False, True])
def test_a_changed_golden_case_or_trainable_model_is_refused(tmp_path, trainable):
    """Every file the manifest lists is checked: the golden cases' inputs, and the trainable
    model when there is one, with or without the other."""
    from clinibox_common.bundled import DEMO_PUBLIC_KEY
    from tests.model_packages import make_package

    root = make_package(tmp_path, "1.4.0", trainable=trainable)
    load_package(root, [DEMO_PUBLIC_KEY])
    manifest = json.loads((root / "manifest.json").read_text())
    targets = [root / manifest["golden_cases"][0]["input"]]
    if trainable:
        targets.append(root / manifest["learning"]["path"])
    for target in targets:
        original = target.read_bytes()
        target.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
        with pytest.raises(PackageError) as refused:
            load_package(root, [DEMO_PUBLIC_KEY])
        assert refused.value.code == "tampered" and target.name in str(refused.value)
        target.write_bytes(original)


@pytest.mark.parametrize("learning", [{"path": [], "files": {}}, {"path": "m.onnx",
                         "files": {"m.onnx": "ab"}, "maps_output": "x", "score_output": "y",
                         "sharpness": 4.0, "channels": "24"}])
def test_a_malformed_learning_section_is_refused_not_a_crash(learning):
    from clinibox_common.contracts.manifest import check_schema
    from tests.model_packages import DEMO

    manifest = json.loads((DEMO / "manifest.json").read_text())
    manifest["learning"] = learning
    with pytest.raises(PackageError, match="learning"):
        check_schema(manifest)
