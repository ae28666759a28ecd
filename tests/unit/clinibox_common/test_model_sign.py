"""``clinibox model sign``: the hospital verifies a maker's package and signs it with its own
key, keeping the maker's signature checkable; ``model status`` verifies what it would run.

Packages are signed copies of the demo package (tests/model_packages.py) with fresh keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clinibox.table import main
from clinibox_common.contracts import signing
from clinibox_common.contracts.manifest import PackageError
from clinibox_common.contracts.package_archive import describe, pack
from engine.model_package import load_package, signature_history
from firmware_app.models.resign import sign_package, verify_provenance
from tests.model_packages import DEMO, DEMO_PRIVATE_KEY, make_package


def key_pair(folder: Path, name: str) -> tuple[Path, Path, str]:
    private = folder / "keys" / f"{name}.pem"
    kid = signing.generate_key_pair(private, private.with_suffix(".pub"))
    return private, private.with_suffix(".pub"), kid


@pytest.fixture
def maker(tmp_path):
    return key_pair(tmp_path, "maker")


@pytest.fixture
def hospital(tmp_path):
    return key_pair(tmp_path, "hospital")


@pytest.fixture
def package(tmp_path, maker):
    return make_package(tmp_path / "from-maker", "1.1.0", key=maker[0])


def box_config(tmp_path: Path, trusted: Path) -> str:
    path = tmp_path / "box.toml"
    path.write_text(f'[storage]\nstate_dir = "{tmp_path / "state"}"\n'
                    f'[models]\ntrusted_keys = ["{trusted}"]\ntrust_demo_key = false\n'
                    '[runtime]\nbackend = "onnxruntime"\nprecision = "fp32"\n')
    return str(path)


def test_the_hospital_signed_package_runs_only_where_the_hospital_key_is_trusted(
        tmp_path, maker, hospital, package):
    result = sign_package(package, hospital[0], [maker[1]], out=tmp_path / "signed",
                          now=1_700_000_000)
    assert result.package.signer == hospital[2] and result.archive is None
    loaded = load_package(tmp_path / "signed", [hospital[1]])
    assert loaded.signer == hospital[2] and loaded.model_id == "clinibox-demo-lesion@1.1.0"
    with pytest.raises(PackageError, match="which this box does not trust") as refused:
        load_package(tmp_path / "signed", [maker[1]])
    assert refused.value.code == "signature"
    original = json.loads((package / "manifest.json").read_text())
    [entry] = signature_history(loaded.manifest)
    assert entry == {"key_id": maker[2], "signature": original["signature"], "role": "maker",
                     "signed_at": original["provenance"]["created"],
                     "replaced_at": "2023-11-14T22:13:20Z"}
    assert loaded.manifest["provenance"]["source"] == original["provenance"]["source"]


def test_provenance_verifies_the_makers_signature_and_each_later_one(
        tmp_path, maker, hospital, package):
    sign_package(package, hospital[0], [maker[1]], out=tmp_path / "signed")
    manifest = json.loads((tmp_path / "signed" / "manifest.json").read_text())
    keys = {name: signing.load_public_key(pair[1]) for name, pair in
            (("maker", maker), ("hospital", hospital))}
    assert verify_provenance(manifest, [keys["maker"]]) == [maker[2]]
    assert verify_provenance(manifest, [keys["hospital"]]) == []  # the current one is not kept
    forged = json.loads(json.dumps(manifest))
    forged["provenance"]["signatures"][0]["signature"]["value"] = (
        manifest["signature"]["value"])
    assert verify_provenance(forged, [keys["maker"]]) == []

    rotated = key_pair(tmp_path, "hospital-2025")  # the hospital's next key signs again
    sign_package(tmp_path / "signed", rotated[0], [hospital[1]], out=tmp_path / "again")
    again = load_package(tmp_path / "again", [rotated[1]])
    history = signature_history(again.manifest)
    assert [(e["key_id"], e["role"]) for e in history] == [(maker[2], "maker"),
                                                           (hospital[2], "hospital")]
    assert history[1]["signed_at"] == history[0]["replaced_at"]
    assert verify_provenance(again.manifest, [keys["maker"], keys["hospital"]]) == [
        maker[2], hospital[2]]


@pytest.mark.slow
def test_cli_signs_a_folder_into_an_archive_that_verify_and_install_read(
        tmp_path, maker, hospital, package, capsys):
    config = box_config(tmp_path, hospital[1])
    archive = tmp_path / "out" / "clinibox-demo-lesion-1.1.0.tar.gz"
    assert main(["model", "sign", str(package), "--key", str(hospital[0]), "--trust",
                 str(maker[1]), "--archive", str(archive), "--config", config]) == 0
    out = capsys.readouterr().out
    packed = describe(archive)
    assert f"signed clinibox-demo-lesion@1.1.0 with key {hospital[2]}" in out
    assert f"earlier signature kept: key {maker[2]} (maker)" in out
    assert f"sha256 {packed.sha256}, {packed.size} bytes" in out
    signed = package.parent / "clinibox-demo-lesion-1.1.0-signed"  # the default --out
    assert pack(signed, tmp_path / "again.tar.gz").sha256 == packed.sha256

    assert main(["model", "verify", str(signed), "--config", config]) == 0
    out = capsys.readouterr().out
    assert f"OK clinibox-demo-lesion@1.1.0: signature by key {hospital[2]}" in out
    assert f"signed by key {hospital[2]}, first signed by key {maker[2]} (maker)" in out
    assert main(["model", "install", str(archive), "--config", config]) == 0
    assert "installed clinibox-demo-lesion@1.1.0" in capsys.readouterr().out


def test_cli_signs_an_archive_from_the_maker(tmp_path, maker, hospital, package, capsys):
    config = box_config(tmp_path, hospital[1])
    from_maker = pack(package, tmp_path / "maker.tar.gz").path
    assert main(["model", "sign", str(from_maker), "--key", str(hospital[0]), "--trust",
                 str(maker[1]), "--out", str(tmp_path / "signed"), "--config", config]) == 0
    assert load_package(tmp_path / "signed", [hospital[1]]).signer == hospital[2]


def test_a_tampered_package_is_refused_before_signing(tmp_path, maker, hospital, capsys):
    tampered = make_package(tmp_path / "from-maker", "1.1.0", key=maker[0], tamper=True)
    config = box_config(tmp_path, hospital[1])
    out = tmp_path / "signed"
    assert main(["model", "sign", str(tampered), "--key", str(hospital[0]), "--trust",
                 str(maker[1]), "--out", str(out), "--archive", str(tmp_path / "a.tar.gz"),
                 "--config", config]) == 1
    assert "REFUSED (tampered)" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "a.tar.gz").exists()


def test_a_package_from_an_untrusted_maker_is_refused(tmp_path, hospital, package, capsys):
    stranger = key_pair(tmp_path, "stranger")
    assert main(["model", "sign", str(package), "--key", str(hospital[0]), "--trust",
                 str(stranger[1]), "--config", box_config(tmp_path, hospital[1])]) == 1
    assert "REFUSED (signature)" in capsys.readouterr().err
    assert not (package.parent / "clinibox-demo-lesion-1.1.0-signed").exists()


def test_the_demo_key_never_signs(tmp_path, maker, package, capsys):
    assert main(["model", "sign", str(package), "--key", str(DEMO_PRIVATE_KEY), "--trust",
                 str(maker[1]), "--out", str(tmp_path / "signed")]) == 1
    assert "is the DEMO-ONLY key: its private half is public" in capsys.readouterr().err
    assert not (tmp_path / "signed").exists()


def test_a_package_signed_with_the_demo_key_is_not_signed_again(tmp_path, hospital, capsys):
    assert main(["model", "sign", str(DEMO), "--key", str(hospital[0]), "--trust",
                 str(DEMO.parents[1] / "keys" / "DEMO-ONLY-model-signing.pub"),
                 "--out", str(tmp_path / "signed")]) == 1
    assert "signed with the DEMO-ONLY key, whose private half is public" in (
        capsys.readouterr().err)
    assert not (tmp_path / "signed").exists()


def test_the_signed_folder_may_not_lie_inside_the_package(tmp_path, maker, hospital, package):
    with pytest.raises(PackageError, match="lies inside the package"):
        sign_package(package, hospital[0], [maker[1]], out=package / "signed")
    assert not (package / "signed").exists()


def test_status_waits_for_a_model_when_the_running_one_is_refused(tmp_path, hospital, capsys):
    config = box_config(tmp_path, hospital[1])  # a provisioned box: only the demo package
    assert main(["model", "status", "--json", "--config", config]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["running"] is None
    assert status["waiting_for_model"]["reason"] == "signature"
    assert status["waiting_for_model"]["detail"].startswith(
        "clinibox-demo-lesion@1.0.0 refused: signature: ")
    assert main(["model", "status", "--config", config]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("running:") and first.split(None, 1)[1].startswith(
        "none — waiting for a model (clinibox-demo-lesion@1.0.0 refused: signature: ")
    assert main(["model", "list", "--config", config]) == 0
    assert "REFUSED" in capsys.readouterr().out  # list and status agree


def test_status_names_the_running_model_when_it_verifies(tmp_path, capsys):
    path = tmp_path / "box.toml"
    path.write_text(f'[storage]\nstate_dir = "{tmp_path / "state"}"\n')  # trusts the demo key
    assert main(["model", "status", "--json", "--config", str(path)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["running"] == "clinibox-demo-lesion@1.0.0"
    assert "waiting_for_model" not in status


def test_a_refused_install_says_the_box_keeps_waiting(tmp_path, maker, hospital, package,
                                                      capsys):
    config = box_config(tmp_path, hospital[1])
    assert main(["model", "install", str(package), "--config", config]) == 1
    err = capsys.readouterr().err
    assert "REFUSED (signature)" in err
    assert "the box runs no model: it keeps waiting for one (clinibox-demo-lesion@1.0.0" in err


def test_a_manifest_without_provenance_keeps_its_first_signature_checkable(tmp_path, maker,
                                                                            hospital):
    from firmware_app.models.resign import resign_manifest

    manifest = signing.sign_document({"name": "m", "version": "1.0"},
                                     signing.load_private_key(maker[0]))
    signed = resign_manifest(manifest, signing.load_private_key(hospital[0]), now=0)
    assert signed["provenance"]["signatures"][0]["replaced_at"] == "1970-01-01T00:00:00Z"
    assert "signed_at" not in signed["provenance"]["signatures"][0]  # not known
    assert signing.verify_document(signed, [signing.load_public_key(hospital[1])]) == hospital[2]
    assert verify_provenance(signed, [signing.load_public_key(maker[1])]) == [maker[2]]
