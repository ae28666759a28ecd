"""`clinibox infer`: one-shot analysis of DICOM and PNG files without the service."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clinibox.table import main
from phantoms.dicom import ct_dataset, write_dicom, write_image
from phantoms.images import generate


@pytest.mark.smoke
def test_infer_json_reports_findings_and_why_a_file_gave_none(tmp_path, capsys):
    rng = np.random.default_rng(21)
    lesion = generate("ct", rng, lesion=True)
    write_dicom(ct_dataset(lesion), tmp_path / "lesion.dcm")
    write_image(generate("us", rng, lesion=False), tmp_path / "clean.png")
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    config = tmp_path / "box.toml"
    config.write_text('[runtime]\nbackend = "onnxruntime"\nprecision = "fp32"\n')

    code = main(["infer", "--config", str(config), "--json",
                 str(tmp_path / "lesion.dcm"), str(tmp_path / "clean.png"),
                 str(tmp_path / "broken.dcm")])
    reports = {r["file"].rsplit("/", 1)[1]: r for r in json.loads(capsys.readouterr().out)}
    assert code == 1  # one file could not be analysed
    assert reports["lesion.dcm"]["status"] == "processed"
    assert reports["lesion.dcm"]["modality"] == "CT"
    # the first stage, then the second stage on each lesion (both FP32 ONNX here)
    assert reports["lesion.dcm"]["backend"] == "onnxruntime:onnx/fp32 + onnxruntime:onnx/fp32"
    assert reports["clean.png"]["modality"] == "OT"  # wrapped as Secondary Capture
    assert reports["lesion.dcm"]["probability"] > reports["clean.png"]["probability"]
    # the command line received nothing: a file it cannot decode is not "quarantined"
    assert reports["broken.dcm"]["status"] == "not_decodable"
    assert reports["broken.dcm"]["reason"]
    assert reports["lesion.dcm"]["study_key"] and reports["lesion.dcm"]["instance_uid"]


@pytest.mark.slow
def test_infer_says_not_found_and_could_not_be_read_never_quarantined(tmp_path, capsys):
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    config = tmp_path / "box.toml"
    config.write_text('[runtime]\nbackend = "onnxruntime"\n')
    code = main(["infer", "--config", str(config), str(tmp_path / "broken.dcm"),
                 str(tmp_path / "missing.dcm")])
    out = capsys.readouterr().out
    assert code == 2  # nothing could be analysed
    assert f"{tmp_path / 'broken.dcm'}: could not be read as an image: " in out
    assert f"not found: {tmp_path / 'missing.dcm'}" in out
    assert "QUARANTINED" not in out.upper()


@pytest.mark.slow
def test_infer_human_output_names_the_model_and_its_intended_use(tmp_path, capsys):
    write_dicom(ct_dataset(generate("ct", np.random.default_rng(2), lesion=True)),
                tmp_path / "a.dcm")
    config = tmp_path / "box.toml"
    config.write_text('[runtime]\nbackend = "onnxruntime"\n')
    assert main(["infer", "--config", str(config), str(tmp_path / "a.dcm")]) == 0
    out = capsys.readouterr().out
    assert "clinibox-demo-lesion@1.0.0" in out
    assert "not for clinical use" in out
    assert "lesion probability" in out
