"""The enrolment bundle: a round trip, every refusal with its message, and the enrolment code."""

from __future__ import annotations

import datetime as dt
import json
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central.bundle import issue_client_certificate, load_ca, make_bundle
from clinibox_common.bundled import DEMO_PUBLIC_KEY
from clinibox_common.contracts.enrolment import (
    SCHEMA,
    EnrolmentBundle,
    EnrolmentCode,
    EnrolmentError,
    parse_bundle,
    parse_code,
    public_key_pem,
    read_bundle,
    write_bundle,
)
from clinibox_common.contracts.signing import key_id
from tests.tls_certs import CertificateAuthority

NOW = dt.datetime.now(dt.timezone.utc)


def _pem(key: Ed25519PrivateKey | X25519PrivateKey) -> str:
    return public_key_pem(key.public_key())


def _private_pem(key: Any) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """The hospital's CA."""
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"), name="hospital CA")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """An unrelated CA."""
    return CertificateAuthority.create(tmp_path_factory.mktemp("other"), name="other CA")


@pytest.fixture(scope="module")
def good(ca: CertificateAuthority) -> EnrolmentBundle:
    """A valid bundle for clinic-a/box-1."""
    cert, key = issue_client_certificate(ca.cert, ca.key, "clinic-a", "box-1")
    return EnrolmentBundle(
        clinic="clinic-a", device="box-1", broker_host="mqtt.hospital.example", broker_port=8883,
        ca_cert=ca.cert_path.read_text(), client_cert=cert, client_key=key,
        hospital_key=_pem(X25519PrivateKey.generate()),
        model_signing_keys=(_pem(Ed25519PrivateKey.generate()),))


def _data(bundle: EnrolmentBundle) -> dict[str, Any]:
    return bundle.to_dict()


def _refused(data: dict[str, Any] | bytes, now: dt.datetime | None = None) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    with pytest.raises(EnrolmentError) as caught:
        parse_bundle(raw, now)
    return str(caught.value)


def test_a_bundle_round_trips_through_its_file(good: EnrolmentBundle, tmp_path: Path) -> None:
    path = tmp_path / "box-1.clinibox-enrol"
    write_bundle(good, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the TLS key
    back = read_bundle(path)
    assert back == good
    assert back.fingerprint == good.fingerprint and len(good.fingerprint) == 16
    assert json.loads(path.read_text())["schema"] == SCHEMA
    assert back.certificate().subject.rfc4514_string() == "CN=clinic-a/box-1"
    with pytest.raises(EnrolmentError, match="exists; refusing to overwrite"):
        write_bundle(good, path)
    write_bundle(replace(good, broker_port=1883), path, overwrite=True)
    assert read_bundle(path).broker_port == 1883
    assert read_bundle(path).fingerprint != good.fingerprint


def test_a_bundle_may_name_the_boxs_model(good: EnrolmentBundle, tmp_path: Path) -> None:
    """The hospital names the package the box runs (its ``[models] name``): it travels in the
    file and counts in the fingerprint; a bundle that names none has no such field, so an
    older bundle's fingerprint holds; a name no package can have is refused."""
    named = replace(good, model_name="clinic-lesion")
    path = tmp_path / "named.bundle"
    write_bundle(named, path)
    assert json.loads(path.read_text())["model"] == "clinic-lesion"
    assert read_bundle(path).model_name == "clinic-lesion"
    assert named.fingerprint != good.fingerprint
    assert "model" not in good.to_dict()
    for bad in ("Clinic Lesion", "../x", "", "a" * 65):
        data = {**named.to_dict(), "model": bad}
        assert "model" in _refused(data), bad
    assert "model" in _refused({**named.to_dict(), "model": 7})


def test_the_writer_refuses_a_bad_bundle(good: EnrolmentBundle, tmp_path: Path) -> None:
    with pytest.raises(EnrolmentError, match="device must be"):
        write_bundle(replace(good, device="Box 1"), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_a_client_certificate_from_another_ca_is_refused(
        good: EnrolmentBundle, other_ca: CertificateAuthority) -> None:
    cert, key = issue_client_certificate(other_ca.cert, other_ca.key, "clinic-a", "box-1")
    message = _refused(_data(replace(good, client_cert=cert, client_key=key)))
    assert "tls.client_cert: not signed by the bundle's CA" in message
    assert "'CN=other CA'" in message


def test_a_ca_of_the_same_name_with_another_key_is_refused(
        good: EnrolmentBundle, tmp_path: Path) -> None:
    impostor = CertificateAuthority.create(tmp_path, name="hospital CA")
    cert, key = issue_client_certificate(impostor.cert, impostor.key, "clinic-a", "box-1")
    message = _refused(_data(replace(good, client_cert=cert, client_key=key)))
    assert "not signed by the bundle's CA" in message
    assert "signature does not verify" in message


def test_an_expired_certificate_is_refused(good: EnrolmentBundle,
                                           ca: CertificateAuthority) -> None:
    cert, key = issue_client_certificate(ca.cert, ca.key, "clinic-a", "box-1", days=1,
                                         now=NOW - dt.timedelta(days=10))
    message = _refused(_data(replace(good, client_cert=cert, client_key=key)))
    assert message.startswith("tls.client_cert: the certificate expired on")
    assert "new bundle" in message


def test_a_certificate_not_yet_valid_is_refused(good: EnrolmentBundle,
                                                ca: CertificateAuthority) -> None:
    message = _refused(_data(good), now=NOW - dt.timedelta(days=3))  # the CA is newer too
    assert message.startswith("tls.ca_cert: the certificate is not valid before")
    cert, key = issue_client_certificate(ca.cert, ca.key, "clinic-a", "box-1", days=1,
                                         now=NOW + dt.timedelta(hours=12))
    message = _refused(_data(replace(good, client_cert=cert, client_key=key)))
    assert message.startswith("tls.client_cert: the certificate is not valid before")
    assert "if this clock is wrong, set it first" in message


def test_a_key_that_does_not_match_the_certificate_is_refused(
        good: EnrolmentBundle, ca: CertificateAuthority) -> None:
    _, other_key = issue_client_certificate(ca.cert, ca.key, "clinic-a", "box-1")
    message = _refused(_data(replace(good, client_key=other_key)))
    assert message == ("tls.client_key: the key does not match the client certificate "
                       "(tls.client_cert)")


def test_a_certificate_for_another_device_is_refused(good: EnrolmentBundle,
                                                     ca: CertificateAuthority) -> None:
    cert, key = issue_client_certificate(ca.cert, ca.key, "clinic-a", "box-2")
    message = _refused(_data(replace(good, client_cert=cert, client_key=key)))
    assert message == ("tls.client_cert: its CN is clinic-a/box-2, but the broker's ACL needs "
                       "CN clinic-a/box-1 (clinic/device)")


def test_a_server_certificate_is_not_a_client_certificate(good: EnrolmentBundle,
                                                          ca: CertificateAuthority,
                                                          tmp_path: Path) -> None:
    cert_path, key_path = ca.issue_server("clinic-a/box-1", tmp_path)
    message = _refused(_data(replace(good, client_cert=cert_path.read_text(),
                                     client_key=key_path.read_text())))
    assert "lacks clientAuth" in message


def test_a_leaf_certificate_is_not_a_ca(good: EnrolmentBundle) -> None:
    assert _refused(_data(replace(good, ca_cert=good.client_cert))) == (
        "tls.ca_cert: not a CA certificate (no basicConstraints CA:TRUE)")


def test_an_encrypted_client_key_is_refused(good: EnrolmentBundle) -> None:
    key = serialization.load_pem_private_key(good.client_key.encode(), None)
    locked = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.BestAvailableEncryption(b"secret")).decode()
    assert "the key is encrypted" in _refused(_data(replace(good, client_key=locked)))


GARBAGE = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["tls"].update(ca_cert="hello"), "tls.ca_cert: not a PEM certificate"),
    (lambda d: d["tls"].update(ca_cert=GARBAGE), "tls.ca_cert: not a readable PEM certificate"),
    (lambda d: d["tls"].update(client_cert="x" * 40), "tls.client_cert: not a PEM certificate"),
    (lambda d: d["tls"].update(client_key="-----BEGIN PRIVATE KEY-----\nAAAA\n"),
     "tls.client_key: not a readable PEM private key"),
    (lambda d: d.update(hospital_key="garbage"), "hospital_key: not a readable PEM public key"),
    (lambda d: d["model_signing_keys"].append("garbage"),
     "model_signing_keys[1]: not a readable PEM public key"),
], ids=["ca-not-pem", "ca-bad-der", "client-cert", "client-key", "hospital-key", "signing-key"])
def test_garbage_pem_is_named(good: EnrolmentBundle, change: Callable[[dict], None],
                              expected: str) -> None:
    data = _data(good)
    change(data)
    assert _refused(data).startswith(expected)


def test_wrong_key_types_are_named(good: EnrolmentBundle, ca: CertificateAuthority) -> None:
    ed = _pem(Ed25519PrivateKey.generate())
    x = _pem(X25519PrivateKey.generate())
    ec = public_key_pem(ca.key.public_key())
    assert _refused(_data(replace(good, hospital_key=ed))).startswith(
        "hospital_key: is an Ed25519 key, not an X25519 public key")
    assert _refused(_data(replace(good, hospital_key=ec))).startswith(
        "hospital_key: is an EC key, not an X25519 public key")
    message = _refused(_data(replace(good, model_signing_keys=(ed, x))))
    assert message.startswith("model_signing_keys[1]: is an X25519 key, not an Ed25519")
    assert _refused(_data(replace(good, model_signing_keys=()))).startswith(
        "model_signing_keys: empty")


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("clinic", "Clinic A", "clinic must be 1-32 lower-case letters"),
    ("device", "-box", "device must be 1-32 lower-case letters"),
    ("device", "x" * 33, "device must be 1-32 lower-case letters"),
    ("clinic", 7, "clinic: missing or not a text"),
])
def test_bad_ids_are_refused(good: EnrolmentBundle, field: str, value: Any,
                             expected: str) -> None:
    data = _data(good)
    data[field] = value
    assert expected in _refused(data)


def test_the_schema_and_shape_are_checked(good: EnrolmentBundle) -> None:
    data = _data(good)
    data["schema"] = "clinibox.enrolment/2"
    assert _refused(data) == ("unknown bundle schema 'clinibox.enrolment/2'; this box reads "
                              "clinibox.enrolment/1")
    assert _refused(b"PK\x03\x04 a zip file").startswith("not an enrolment bundle: not JSON")
    assert _refused(b"[1, 2]") == "not an enrolment bundle: not a JSON object"
    data = _data(good)
    del data["hospital_key"]
    data["wifi_password"] = "x"
    assert _refused(data) == "bundle fields: missing hospital_key; unknown wifi_password"
    data = _data(good)
    data["broker"]["port"] = 0
    assert _refused(data) == "broker.port: must be between 1 and 65535, got 0"
    data = _data(good)
    data["broker"]["host"] = "mqtt://x"
    assert _refused(data).startswith("broker.host: must be a host name")
    data = _data(good)
    data["issued_at"] = "yesterday"
    assert _refused(data) == "issued_at: not an ISO 8601 time: 'yesterday'"


def test_the_hospital_side_issues_a_matching_certificate(ca: CertificateAuthority,
                                                         tmp_path: Path) -> None:
    ca_key = tmp_path / "ca.key"
    ca_key.write_text(_private_pem(ca.key))
    hospital, signer = tmp_path / "hospital.pub", tmp_path / "signer.pub"
    hospital.write_text(_pem(X25519PrivateKey.generate()))
    signing_key = Ed25519PrivateKey.generate()
    signer.write_text(_pem(signing_key))
    bundle = make_bundle(ca_cert_path=ca.cert_path, ca_key_path=ca_key, clinic="clinic-b",
                         device="box-9", broker_host="10.0.0.5", broker_port=8884,
                         hospital_key_path=hospital, signing_key_paths=[signer], days=3650)
    assert bundle.signing_key_ids() == [key_id(signing_key.public_key())]
    # a certificate never outlives the CA that issued it
    assert bundle.certificate().not_valid_after_utc == ca.cert.not_valid_after_utc
    write_bundle(bundle, tmp_path / "b.json")
    assert read_bundle(tmp_path / "b.json").device == "box-9"
    other = tmp_path / "other.key"
    other.write_text(_private_pem(Ed25519PrivateKey.generate()))
    with pytest.raises(EnrolmentError, match="is not the key of the CA certificate"):
        load_ca(ca.cert_path, other)
    with pytest.raises(EnrolmentError, match="DEMO-ONLY key cannot be a clinic's"):
        make_bundle(ca_cert_path=ca.cert_path, ca_key_path=ca_key, clinic="clinic-b",
                    device="box-9", broker_host="h", broker_port=1, hospital_key_path=hospital,
                    signing_key_paths=[signer, DEMO_PUBLIC_KEY])
    signer.write_bytes(b"\xff\xfe")
    with pytest.raises(EnrolmentError, match=r"public key .*signer\.pub is not PEM text"):
        make_bundle(ca_cert_path=ca.cert_path, ca_key_path=ca_key, clinic="clinic-b",
                    device="box-9", broker_host="h", broker_port=1, hospital_key_path=hospital,
                    signing_key_paths=[signer])


def test_the_enrolment_code_round_trips_and_catches_typos() -> None:
    key = Ed25519PrivateKey.generate()
    code = EnrolmentCode("clinic-a", "box-1", key.public_key())
    text = code.text()
    assert text.startswith("CBX1:CLINIC-A:BOX-1:") and text == text.upper()
    assert len(text) < 100  # a small QR code
    back = parse_code(f"  {text.lower()}\n")  # typed in lower case, pasted with blanks
    assert (back.clinic, back.device, back.key_id) == ("clinic-a", "box-1", code.key_id)
    assert back.public_key_pem == _pem(key)
    typo = text[:25] + ("A" if text[25] != "A" else "B") + text[26:]
    with pytest.raises(EnrolmentError, match="check digits do not match"):
        parse_code(typo)
    with pytest.raises(EnrolmentError, match="not a clinibox enrolment code"):
        parse_code("CBX2:" + text[5:])
    with pytest.raises(EnrolmentError, match="not a clinibox enrolment code"):
        parse_code(text.rsplit(":", 1)[0])


def test_an_encrypted_ca_key_says_how_to_give_its_password(ca, tmp_path, monkeypatch):
    """Without a terminal or CLINIBOX_CA_KEY_PASSWORD the hospital is told how to give the
    CA key's password (not that the key is unreadable); with it, the key is read; a wrong
    one is refused as such."""
    locked = tmp_path / "ca-locked.key"
    locked.write_bytes(ca.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"correct horse")))
    monkeypatch.delenv("CLINIBOX_CA_KEY_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", open("/dev/null"))  # noqa: SIM115 - not a terminal
    with pytest.raises(EnrolmentError, match="is encrypted: run this on a terminal, or set "
                                             "CLINIBOX_CA_KEY_PASSWORD"):
        load_ca(ca.cert_path, locked)
    monkeypatch.setenv("CLINIBOX_CA_KEY_PASSWORD", "correct horse")
    assert load_ca(ca.cert_path, locked)[0] == ca.cert
    monkeypatch.setenv("CLINIBOX_CA_KEY_PASSWORD", "wrong")
    with pytest.raises(EnrolmentError, match="or the password is wrong"):
        load_ca(ca.cert_path, locked)
