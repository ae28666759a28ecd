"""The hospital's link check (central/link_check.py, ``central check-box``), the box's keeping
of it (telemetry/downlink.py), and the bundle and receiver set-ups refused out loud."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central import link_check
from central.bundle import check_for_receiver, make_bundle
from central.config import CentralConfig
from central.downlink_publisher import claim, mark_sent
from central.store import Store
from clinibox.central_command import main as central_main
from clinibox.table import main as clinibox_main
from clinibox_common.contracts import downlink
from clinibox_common.contracts.egress import EgressRefused
from clinibox_common.contracts.enrolment import EnrolmentError
from clinibox_common.contracts.envelope import Header
from firmware_app.settings.box import Config
from firmware_app.settings.storage import StorageConfig
from firmware_app.storage import db, hospital_reviews
from firmware_app.telemetry.downlink import LINK_CHECK, DownlinkReceiver
from firmware_app.telemetry.identity import load_identity
from tests.telemetry_payloads import public_pem, status_payload
from tests.tls_certs import CertificateAuthority

BOX_KEY = X25519PrivateKey.generate()
KEY = downlink.key_text(BOX_KEY.public_key())


# -- the box keeps a link check and answers at once ------------------------------------------

def _box(tmp_path: Path) -> tuple[DownlinkReceiver, Ed25519PrivateKey, object]:
    config = Config(storage=StorageConfig(state_dir=str(tmp_path / "state")))
    config.telemetry.clinic, config.telemetry.device = "clinic-a", "box-1"
    identity = load_identity(config)
    conn = db.connect(config.database_path)
    db.initialise(conn)
    conn.close()
    hospital = Ed25519PrivateKey.generate()
    return DownlinkReceiver(config, identity, hospital.public_key()), hospital, identity


def test_the_box_keeps_a_link_check_counts_it_and_answers_every_delivery(tmp_path):
    receiver, hospital, identity = _box(tmp_path)
    answers: list[int] = []
    receiver.on_link_check = lambda: answers.append(1)
    sealed = downlink.seal_downlink("clinic-a", "box-1", 1, downlink.link_check_payload(),
                                    identity.downlink_key.public_key(), hospital,
                                    kind=downlink.KIND_LINK_CHECK)
    assert receiver.handle(sealed) == "kept"
    assert receiver.handle(sealed) == "repeat"  # the hospital asked again: answered again
    assert len(answers) == 2
    conn = db.connect(receiver.config.database_path)
    try:
        assert hospital_reviews.watermark(conn) == 1
        codes = [r[0] for r in conn.execute("SELECT code FROM events")]
        assert codes == [LINK_CHECK]
    finally:
        conn.close()
        receiver.close()
    forged = downlink.seal_downlink("clinic-a", "box-1", 2, downlink.link_check_payload(),
                                    identity.downlink_key.public_key(),
                                    Ed25519PrivateKey.generate(), kind=downlink.KIND_LINK_CHECK)
    assert receiver.handle(forged) == "bad-signature"
    assert len(answers) == 2  # a forgery gets no answer


def test_a_link_check_carries_nothing_but_its_time():
    with pytest.raises(EgressRefused):
        downlink.SCHEMAS[downlink.KIND_LINK_CHECK].check(
            {**downlink.link_check_payload(), "note": "x"}, "link_check", None)


# -- the hospital queues it, sends it, and sees the box's answer -----------------------------

@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/central.db")
    s.enrol("clinic-a", "box-1", public_pem(Ed25519PrivateKey.generate()))
    yield s
    s.close()


def _status(store: Store, message_seq: int, seq: int | None, key: str | None = KEY) -> None:
    fields = {} if key is None else {"downlink_key": key, "downlink_seq": seq}
    store.store(Header("clinic-a", "box-1", "status", message_seq), status_payload(**fields),
                time.time())


def _config(tmp_path: Path, signing: bool = True) -> CentralConfig:
    config = CentralConfig()
    if signing:
        config.keys.hospital_signing_key = str(tmp_path / "hospital-signing.pem")
    return config


def test_a_check_is_refused_before_it_is_queued_saying_why(tmp_path, store):
    db_ = store.database
    assert link_check.refusal(db_, _config(tmp_path), "clinic-a", "box-9") == "not_enrolled"
    assert link_check.refusal(db_, _config(tmp_path, signing=False), "clinic-a",
                              "box-1") == "no_signing_key"
    assert link_check.refusal(db_, _config(tmp_path), "clinic-a", "box-1") == "no_downlink_key"
    _status(store, 1, None, key=None)  # a box whose bundle had no downlink signing key
    assert link_check.refusal(db_, _config(tmp_path), "clinic-a", "box-1") == "no_downlink_key"
    _status(store, 2, 0)
    assert link_check.refusal(db_, _config(tmp_path), "clinic-a", "box-1") is None
    store.revoke("clinic-a", "box-1")
    assert link_check.refusal(db_, _config(tmp_path), "clinic-a", "box-1") == "revoked"
    for problem in link_check.LinkCheckProblem:
        assert link_check.problem_words(problem)


def test_a_check_goes_queued_sent_confirmed_and_is_audited(store):
    _status(store, 1, 0)
    seq = link_check.queue(store.database, "clinic-a", "box-1", account="it-wang")
    found = link_check.progress(store.database, "clinic-a", "box-1", seq)
    assert found is not None and found.state == "queued"
    assert link_check.diagnosis(found) == "not_sent"
    [pending] = claim(store.database, now=time.time(), resend_seconds=1800)
    assert (pending.kind, pending.seq) == (downlink.KIND_LINK_CHECK, seq)
    sealed = downlink.seal_downlink("clinic-a", "box-1", seq, pending.payload,
                                    BOX_KEY.public_key(), Ed25519PrivateKey.generate(),
                                    kind=pending.kind)
    assert sealed
    mark_sent(store.database, pending, time.time())
    found = link_check.progress(store.database, "clinic-a", "box-1", seq)
    assert found is not None and found.state == "sent"
    assert link_check.diagnosis(found) == "not_confirmed"
    _status(store, 2, seq)  # the box's answer: its watermark covers the check
    found = link_check.latest(store.database, "clinic-a", "box-1")
    assert found is not None and found.state == "confirmed" and found.seq == seq
    assert link_check.diagnosis(found) is None
    with store.database.transaction(write=False) as tx:
        rows = tx.execute("SELECT account, action, target, detail FROM console_audit"
                          " WHERE action = ?", (link_check.AUDIT_ACTION,)).fetchall()
    assert [tuple(r) for r in rows] == [("it-wang", "link_check", "box:clinic-a/box-1",
                                         str(seq))]


def test_check_box_says_what_to_fix_when_the_box_never_took_the_downlink(tmp_path, store,
                                                                        capsys):
    (tmp_path / "hospital-signing.pem").touch()
    config = tmp_path / "central.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/central.db"\n'
                      f'[keys]\nhospital_signing_key = "{tmp_path}/hospital-signing.pem"\n')
    status = central_main(["check-box", "--config", str(config), "clinic-a/box-1",
                           "--timeout", "1"])
    err = capsys.readouterr().err
    assert status == 2
    assert "--hospital-signing-key" in err and "provision" in err
    _status(store, 1, 0)
    status = central_main(["check-box", "--config", str(config), "clinic-a/box-1",
                           "--timeout", "1"])
    err = capsys.readouterr().err
    assert status == 1  # queued, never sent: no central serve runs here
    assert "clinibox central serve is not running" in err


# -- a bundle that would build a box nobody can answer is refused ----------------------------

@pytest.fixture
def keys(tmp_path):
    """The hospital's CA, its X25519 and downlink signing keys and its model-signing key."""
    ca = CertificateAuthority.create(tmp_path)
    ca_cert, ca_key = ca.cert_path, tmp_path / "ca.key"
    ca_key.write_bytes(ca.key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    for kind, name in (("hospital", "hospital"), ("hospital-signing", "hospital-signing"),
                       ("signing", "models"), ("hospital-signing", "other"),
                       ("hospital", "other-hospital")):
        assert clinibox_main(["keys", "generate", "--kind", kind, "--out",
                              str(tmp_path / name)]) == 0
    return {"ca_cert": ca_cert, "ca_key": ca_key, "dir": tmp_path}


def _bundle(keys, signing: str | None = "hospital-signing"):
    d = keys["dir"]
    return make_bundle(ca_cert_path=keys["ca_cert"], ca_key_path=keys["ca_key"],
                       clinic="clinic-a", device="box-1", broker_host="mqtt.example",
                       broker_port=8883, hospital_key_path=d / "hospital.pub",
                       signing_key_paths=[d / "models.pub"],
                       hospital_signing_key_path=d / f"{signing}.pub" if signing else None)


def test_the_bundle_command_names_the_boxs_model_and_provisioning_takes_it(keys, tmp_path,
                                                                           capsys):
    """``clinibox central bundle --model NAME``: the box provisioned from it runs that package
    by name, so the hospital's rollouts of it reach a box nobody configured by hand."""
    d = keys["dir"]
    out = tmp_path / "box-1.bundle"
    assert central_main(["bundle", "--ca-cert", str(keys["ca_cert"]), "--ca-key",
                         str(keys["ca_key"]), "--clinic", "clinic-a", "--device", "box-1",
                         "--broker-host", "mqtt.example", "--hospital-key",
                         str(d / "hospital.pub"), "--hospital-signing-key",
                         str(d / "hospital-signing.pub"), "--signing-key",
                         str(d / "models.pub"), "--model", "clinic-lesion",
                         "--out", str(out)]) == 0
    assert "the box runs the model package clinic-lesion" in capsys.readouterr().out
    config = tmp_path / "box" / "clinibox.toml"
    config.parent.mkdir()
    config.write_text(f'[storage]\nstate_dir = "{tmp_path / "box" / "state"}"\n')
    from firmware_app.ops.provision import provision
    done = provision(out, config)
    assert done.config.models.name == "clinic-lesion"
    assert 'name = "clinic-lesion"' in config.read_text()
    assert central_main(["bundle", "--ca-cert", str(keys["ca_cert"]), "--ca-key",
                         str(keys["ca_key"]), "--clinic", "clinic-a", "--device", "box-2",
                         "--broker-host", "mqtt.example", "--hospital-key",
                         str(d / "hospital.pub"), "--hospital-signing-key",
                         str(d / "hospital-signing.pub"), "--signing-key",
                         str(d / "models.pub"), "--model", "Clinic Lesion",
                         "--out", str(tmp_path / "bad.bundle")]) != 0
    assert not (tmp_path / "bad.bundle").exists()


def test_a_bundle_without_the_downlink_key_is_refused_unless_that_is_meant(keys):
    with pytest.raises(EnrolmentError, match=r"--hospital-signing-key is missing.*--no-downlink"):
        check_for_receiver(_bundle(keys, None), downlink=True)
    check_for_receiver(_bundle(keys, None), downlink=False)
    check_for_receiver(_bundle(keys), downlink=True)
    with pytest.raises(EnrolmentError, match="contradict"):
        check_for_receiver(_bundle(keys), downlink=False)


def test_a_bundle_whose_keys_do_not_pair_with_the_receivers_is_refused(keys):
    d = keys["dir"]
    ours = {"hospital_signing_key": str(d / "hospital-signing.pem"),
            "hospital_key": str(d / "hospital.pem"), "rollout_keys": (str(d / "models.pub"),)}
    check_for_receiver(_bundle(keys), downlink=True, **ours)
    with pytest.raises(EnrolmentError, match="would refuse every verdict"):
        check_for_receiver(_bundle(keys, "other"), downlink=True, **ours)
    with pytest.raises(EnrolmentError, match="could not read a single message"):
        check_for_receiver(_bundle(keys), downlink=True,
                           **{**ours, "hospital_key": str(d / "other-hospital.pem")})
    with pytest.raises(EnrolmentError, match="refuse every package"):
        check_for_receiver(_bundle(keys), downlink=True,
                           **{**ours, "rollout_keys": (str(d / "other.pub"),)})


def test_central_bundle_writes_nothing_without_the_downlink_key(keys, capsys):
    d = keys["dir"]
    out = d / "box-1.bundle"
    argv = ["bundle", "--ca-cert", str(keys["ca_cert"]), "--ca-key", str(keys["ca_key"]),
            "--clinic", "clinic-a", "--device", "box-1", "--broker-host", "mqtt.example",
            "--hospital-key", str(d / "hospital.pub"), "--signing-key", str(d / "models.pub"),
            "--out", str(out)]
    assert central_main(argv) != 0
    assert "--hospital-signing-key is missing" in capsys.readouterr().err
    assert not out.exists()
    assert central_main([*argv, "--hospital-signing-key", str(d / "hospital-signing.pub")]) == 0
    printed = capsys.readouterr().out
    assert "check-box clinic-a/box-1" in printed
    assert json.loads(out.read_text())["hospital_signing_key"]


def test_serve_refuses_to_start_without_its_signing_key_while_boxes_expect_verdicts(
        tmp_path, store, capsys):
    _status(store, 1, 0)
    (tmp_path / "hospital.pem").write_bytes(b"")
    assert clinibox_main(["keys", "generate", "--kind", "hospital", "--out",
                          str(tmp_path / "hospital"), "--force"]) == 0
    config = tmp_path / "central.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/central.db"\n'
                      f'[keys]\nhospital_key = "{tmp_path}/hospital.pem"\n')
    assert central_main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "clinic-a/box-1" in err and "hospital_signing_key" in err
    assert "keys generate --kind hospital-signing" in err


# -- the console's "test the link" --------------------------------------------------------

def test_the_box_page_tests_the_link_or_says_why_it_cannot(tmp_path):
    from central_console.accounts import ConsoleAccounts
    from central_console.app import create_app
    from tests.unit.central_console.test_console_web import ConsoleClient
    from tests.web_client import csrf_token

    config = CentralConfig()
    config.database.url = f"sqlite:///{tmp_path}/db/central.db"
    config.web.state_dir = str(tmp_path / "state")
    store = Store(config.database.url)
    try:
        ConsoleAccounts(store.database).add("it1", "Battery-Staple-72", "admin")
        ConsoleAccounts(store.database).add("rad1", "Correct-Horse-91", "radiologist")
        store.enrol("clinic-a", "box-1", public_pem(Ed25519PrivateKey.generate()))
        _status(store, 1, 0)
        app = create_app(config, store)
        admin = ConsoleClient(app)
        assert admin.login("it1", "Battery-Staple-72").status_code == 302
        page = admin.get("/fleet/clinic-a/box-1").get_data(as_text=True)
        # no [keys] hospital_signing_key: no button, the fix instead
        assert 'id="link-refusal"' in page and "link-check-button" not in page
        assert "keys generate --kind hospital-signing" in page
        config.keys.hospital_signing_key = str(tmp_path / "hospital-signing.pem")
        page = admin.get("/fleet/clinic-a/box-1").get_data(as_text=True)
        assert "link-check-button" in page and "link-refusal" not in page
        answer = admin.post("/fleet/clinic-a/box-1/link-check", {}, token=csrf_token(page))
        assert answer.status_code == 302 and answer.headers["Location"].endswith("#link-check")
        page = admin.get("/fleet/clinic-a/box-1").get_data(as_text=True)
        assert "data-reload-seconds" in page
        assert ('waiting to be sent: the receiver (<code translate="no">clinibox central '
                'serve</code>) sends it within seconds') in page
        [row] = [d for d in store.downlinks("clinic-a", "box-1")]
        assert row["kind"] == downlink.KIND_LINK_CHECK
        _status(store, 2, row["seq"])
        page = admin.get("/fleet/clinic-a/box-1").get_data(as_text=True)
        assert "the link works both ways" in page and "data-reload-seconds" not in page
        radiologist = ConsoleClient(app)
        assert radiologist.login("rad1", "Correct-Horse-91").status_code == 302
        token = radiologist.token()
        assert radiologist.post("/fleet/clinic-a/box-1/link-check", {},
                                token=token).status_code == 403
    finally:
        store.close()
