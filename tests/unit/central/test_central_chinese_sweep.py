"""Chinese everywhere a person reads (issue 54), the hospital's half: every ``clinibox central``
command a hospital IT person or a radiologist reads, run with ``LANG=zh_CN.UTF-8`` against a
real hospital database (``tests/console_scene.py``'s day, plus a drifting box with a full disk
and a model rolled back, a revoked box, a dead letter, a rollout started and rolled back, a
console account), its refusals included: a bundle without the downlink key and one whose keys
do not pair with the receiver's, a broker whose key only root may read and whose ACL lacks
the downlink lines.

Each output fails on a run of English words or a catalog sentence (``tests/i18n_text.py``,
as ``test_chinese_sweep.py`` reads the box's commands), and must hold Chinese. Identifiers,
paths, keys, the command lines the output tells a person to run and the broker's
configuration lines to add stay as they are. Commands left out are named below, each with why;
``test_every_hospital_command_is_run_or_named`` fails on a new command named nowhere.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import broker_check
from clinibox.central_command import build_parser
from clinibox.central_command import main as central_main
from clinibox.table import main as clinibox_main
from tests.i18n_text import catalog_sentences, english_sentences, is_chinese
from tests.unit.firmware_app.test_chinese_sweep import readable

#: ``clinibox central`` commands not run here, each with why
HOSPITAL_COMMANDS_SKIPPED = {
    "serve": "a service: its records are the journal's, English (central_command.SERVICE_COMMANDS)",
    "web": "a service: its records are the journal's, English (central_command.SERVICE_COMMANDS)",
    "superlink": "a service (Flower's SuperLink): its records are the journal's, English "
                 "(central_command.SERVICE_COMMANDS)",
    "config": "prints the default configuration file for the IT person's editor, English "
              "like the box's 'clinibox config'",
}
#: the broker's configuration lines a finding tells a person to add: a file's lines, as names
_CONF_LINES = sorted({*broker_check.BOX_LINES, *broker_check.RECEIVER_LINES,
                      "user central-receiver", "listener 8883"}, key=len, reverse=True)
#: the command lines a finding tells a person to run (``chgrp … && chmod …``)
_SHELL = ("chgrp", "chmod")
#: a command's option, named as the person types it (``--hospital-signing-key``)
_OPTION = re.compile(r"--[a-z][a-z-]*")
#: a field of a bundle file, named as the file names it (``broker.host``, ``tls.ca_cert``)
_FIELD = re.compile(r"\b[a-z_]+(?:\.[a-z_]+)+\b")


def _runs(site: dict[str, Path], scene) -> list[list[str]]:
    """Every hospital command a person reads, with real arguments (``{config}``: the site's
    configuration; refusals after the command that does it)."""
    from tests import console_scene

    keys, out = site["keys"], site["out"]
    box = f"{console_scene.CLINIC}/{console_scene.DEVICE}"
    bundle = ["bundle", "{config}", "--ca-cert", str(site["ca_cert"]), "--ca-key",
              str(site["ca_key"]), "--clinic", console_scene.CLINIC, "--device", "box-7",
              "--broker-host", "10.20.0.2", "--hospital-key",
              str(keys / "hospital.pub"), "--signing-key", str(keys / "models.pub")]
    code = site["code"].read_text().strip()
    return [
        ["enrol", "{config}", "--clinic", console_scene.CLINIC, "--device", "box-5", "--key",
         str(keys / "box-5.pub")],
        ["enrol", "{config}", "--clinic", console_scene.CLINIC, "--device", "box-5", "--key",
         str(keys / "models.pub")],  # refused: another key without --replace
        ["enrol-code", "{config}", code],
        ["enrol-code", "{config}", code[:-1] + ("0" if code[-1] != "0" else "1")],  # mistyped
        [*bundle, "--out", str(out / "box-7.bundle")],  # refused: no downlink key
        [*bundle, "--hospital-signing-key", str(keys / "other.pub"), "--out",
         str(out / "box-7.bundle")],  # refused: not the receiver's downlink key
        [*("mqtt host" if word == "10.20.0.2" else word for word in bundle),
         "--hospital-signing-key", str(keys / "hospital-signing.pub"), "--out",
         str(out / "box-7.bundle")],  # refused: not a host name
        [*bundle, "--hospital-signing-key", str(keys / "hospital-signing.pub"), "--out",
         str(out / "box-7.bundle")],
        ["revoke", "{config}", "--clinic", console_scene.CLINIC, "--device", "box-5"],
        ["revoke", "{config}", "--clinic", console_scene.CLINIC, "--device", "box-9"],
        ["report", "{config}"],
        ["alerts", "{config}"], ["alerts", "{config}", "--waiting"],
        ["review", "{config}", str(scene.alert_id), "--verdict", "follow_up", "--months", "6",
         "--as", "dr-wang"],
        ["review", "{config}", "99999", "--verdict", "refer"],  # no such alert
        ["review", "{config}", str(scene.alert_id), "--verdict", "follow_up"],  # no months
        ["clinic", "set", "{config}", "baishui-2", "--name", "白水村卫生室", "--county", "河西县"],
        ["clinic", "list", "{config}"],
        ["dead-letters", "{config}"],
        ["dead-letters", "{config}", "--save", "1", str(out / "letter.bin")],
        ["audit-heads", "{config}"],
        ["audit-heads", "{config}", "--device", box, "--witness-file", str(out / "w.json")],
        ["check-box", "{config}", f"{console_scene.CLINIC}/box-9", "--timeout", "1"],
        ["check-broker", "{config}", "--conf", str(site["broker"] / "good.conf")],
        ["check-broker", "{config}", "--conf", str(site["broker"] / "mosquitto.conf")],
        ["rollout", "{config}", str(site["package"]), "--to", box, "--canary", "1"],
        ["rollout", "{config}", str(site["package"]), "--group", "nowhere"],
        ["rollouts", "{config}"], ["rollouts", "{config}", str(scene.rollout_id)],
        ["rollouts", "{config}", "--hold", str(scene.rollout_id)],
        ["rollouts", "{config}", "--resume", str(scene.rollout_id)],
        ["rollouts", "{config}", "--resume", str(scene.rollout_id)],  # refused: not paused
        ["rollback", "{config}", "--rollout", str(scene.rollout_id)],
        ["rollback", "{config}"],  # refused: neither --to nor --rollout
        ["user", "add", "{config}", "li", "--role", "radiologist", "--password-stdin"],
        ["user", "add", "{config}", "li", "--role", "admin", "--password-stdin"],  # exists
        ["user", "list", "{config}"],
        ["user", "passwd", "{config}", "li", "--password-stdin"],
        ["user", "remove", "{config}", "li"],
        ["user", "remove", "{config}", "li"],  # refused: no such account
        ["federated-run", "{config}", "--package", str(site["package"]), "--superlink",
         "127.0.0.1:9", "--ca", str(site["ca_cert"]), "--runs", str(out), "--out",
         str(out / "run"), "--boxes", "2"],  # refused: too few boxes
        ["federated-run", "{config}", "--package", str(site["package"]), "--superlink",
         "127.0.0.1:9", "--ca", str(site["ca_cert"]), "--runs", str(out), "--out",
         str(out / "run")],  # refused: no SuperLink answers
        ["federated-run", "{config}", "--package", str(site["package"]), "--superlink",
         "127.0.0.1:9", "--ca", str(site["ca_cert"])],  # the defaults; refused: no SuperLink
    ]


def _subcommands() -> set[str]:
    subparsers = next(a for a in build_parser()._actions
                      if isinstance(a, argparse._SubParsersAction))
    return set(subparsers.choices)


def test_every_hospital_command_is_run_or_named(tmp_path):
    from types import SimpleNamespace

    site = {name: tmp_path / name for name in ("keys", "out", "ca_cert", "ca_key", "broker",
                                               "package")}
    site["code"] = tmp_path / "code"
    site["code"].write_text("CBX1:A:B:C:D\n")
    run = {argv[0] for argv in _runs(site, SimpleNamespace(alert_id=1, rollout_id=1))}
    commands = _subcommands()
    assert run | set(HOSPITAL_COMMANDS_SKIPPED) == commands, commands - run - set(
        HOSPITAL_COMMANDS_SKIPPED)
    assert not run & set(HOSPITAL_COMMANDS_SKIPPED)


# -- the hospital's site -----------------------------------------------------------------------


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _broker(folder: Path) -> None:
    """Two broker set-ups: ``good.conf`` as the docs make it, ``mosquitto.conf`` with a key only
    root may read, no client certificates required and an ACL without the downlink lines."""
    from tests.tls_certs import CertificateAuthority

    ca = CertificateAuthority.create(folder)
    cert, key = ca.issue_server("mqtt.hospital.example", folder, stem="server")
    shutil.chown(key, group="mosquitto")
    key.chmod(0o640)
    good_acl = "\n".join([*broker_check.BOX_LINES, "", "user central-receiver",
                          *broker_check.RECEIVER_LINES]) + "\n"
    (folder / "good.acl").write_text(good_acl)
    (folder / "bad.acl").write_text("\n".join(broker_check.BOX_LINES[:4]) + "\n")
    listener = f"listener 8883\ncafile {ca.cert_path}\ncertfile {cert}\n"
    (folder / "good.conf").write_text(
        f"allow_anonymous false\nacl_file {folder}/good.acl\n{listener}keyfile {key}\n"
        "require_certificate true\nuse_identity_as_username true\n")
    root_key = folder / "root.key"
    shutil.copy(key, root_key)
    root_key.chmod(0o600)
    (folder / "mosquitto.conf").write_text(
        f"allow_anonymous false\nacl_file {folder}/bad.acl\n{listener}keyfile {root_key}\n")


@pytest.fixture
def site(tmp_path):
    """A hospital: its keys and CA, a broker folder, a signed package, a configuration, and a
    database holding the console scene's day, a drifting box and a dead letter."""
    from central.config import load
    from central.receiver import Receiver
    from central.store import Store
    from clinibox_common.contracts.enrolment import EnrolmentCode
    from clinibox_common.contracts.envelope import Header, load_x25519_private
    from clinibox_common.contracts.package_archive import pack
    from tests import console_scene
    from tests.model_packages import make_package
    from tests.telemetry_payloads import Box, status_payload, summary_payload
    from tests.tls_certs import CertificateAuthority

    keys, out = tmp_path / "keys", tmp_path / "out"
    keys.mkdir()
    out.mkdir()
    for kind, name in (("hospital", "hospital"), ("hospital-signing", "hospital-signing"),
                       ("signing", "models"), ("hospital-signing", "other")):
        assert clinibox_main(["keys", "generate", "--kind", kind, "--out",
                              str(keys / name)]) == 0
    (keys / "box-5.pub").write_bytes(_pem(Ed25519PrivateKey.generate()))
    ca = CertificateAuthority.create(tmp_path)
    ca_key = tmp_path / "ca.key"
    ca_key.write_bytes(ca.key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    broker = Path(tempfile.mkdtemp(prefix="central-zh-broker-", dir="/tmp"))
    broker.chmod(0o755)  # the broker's user walks it (a pytest tmp_path's parents are root's)
    _broker(broker)
    package = make_package(tmp_path / "packages", "2.2.0", key=keys / "models.pem")
    archive = pack(package, tmp_path / "clinibox-demo-lesion-2.2.0.tar.gz").path
    config = tmp_path / "central.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/central.db"\n'
        f'[keys]\nhospital_key = "{keys}/hospital.pem"\n'
        f'hospital_signing_key = "{keys}/hospital-signing.pem"\n'
        f'[rollouts]\ntrusted_keys = ["{keys}/models.pub"]\n'
        '[health]\nbaseline_summaries = 3\nrecent_summaries = 2\n')
    store = Store(load(str(config)).database.url)
    scene = console_scene.build(store)
    now = time.time()
    # a third box that drifts, whose disk is nearly full and whose model was rolled back
    drifting = Ed25519PrivateKey.generate()
    store.enrol(console_scene.CLINIC, "box-3", _pem(drifting).decode(), now=now - 86400)
    reversed_bins = [1, 2, 4, 6, 8, 10, 20, 30, 40, 50]
    for seq in range(1, 6):
        changes = {"confidence_histogram": reversed_bins} if seq > 3 else {}
        assert store.store(Header(console_scene.CLINIC, "box-3", "summary", seq),
                           summary_payload(created_at=int(now) - 600 + seq, disk_used_pct=96.0,
                                           disk_free_mb=800, outbox_dropped=3, **changes),
                           now - 600 + seq)
    assert store.store(Header(console_scene.CLINIC, "box-3", "event", 6), {
        "schema": 1, "created_at": int(now) - 100, "event": "model_rolled_back",
        "reason": "golden_cases_failed", "unit": "clinibox",
        "subject_model": console_scene.MODEL, "model": "chest-lesion@2.0.0"}, now - 100)
    assert store.store(Header(console_scene.CLINIC, "box-3", "status", 7),
                       status_payload("heartbeat", created_at=int(now) - 50, queue_depth=900),
                       now - 50)
    # a dead letter: a box not enrolled yet sent its status
    hospital_private = load_x25519_private(keys / "hospital.pem")
    receiver = Receiver(load(str(config)), store, hospital_private)
    receiver.handle(f"clinibox/{console_scene.CLINIC}/box-8/status", b"\x00" * 40, now - 30)
    assert store.dead_letters()
    # box-6, provisioned before the hospital enrolled it, sent its first status: kept until
    # enrol-code takes it in
    early = Box(console_scene.CLINIC, "box-6", hospital_private.public_key())
    receiver.handle(*early.envelope("status"), now - 20)
    code = tmp_path / "code"
    code.write_text(EnrolmentCode(console_scene.CLINIC, "box-6",
                                  early.key.public_key()).text() + "\n")
    store.close()
    yield {"config": config, "keys": keys, "out": out, "ca_cert": ca.cert_path,
           "ca_key": ca_key, "broker": broker, "package": archive, "code": code}, scene
    shutil.rmtree(broker)


@pytest.mark.slow
def test_every_hospital_command_speaks_chinese(site, capsys, monkeypatch):
    import io

    paths, scene = site
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LANGUAGE", raising=False)
    capsys.readouterr()
    codes: dict[str, list[int]] = {}
    outputs: list[str] = []
    for argv in _runs(paths, scene):
        if argv[0] == "user":
            monkeypatch.setattr("sys.stdin", io.StringIO("a-long-enough-pass-phrase-1\n"))
        code = central_main([part for word in argv for part in (
            ("--config", str(paths["config"])) if word == "{config}" else (word,))])
        said = capsys.readouterr()
        words = said.out + said.err
        shown = _FIELD.sub(" ", _OPTION.sub(" ", readable(words)))
        for line in _CONF_LINES:
            shown = shown.replace(line, " ")
        shown = " ".join(part for part in shown.split("&&")
                         if not part.strip().startswith(_SHELL))
        assert english_sentences(shown) == [], (english_sentences(shown), argv, code, said)
        assert catalog_sentences(words) == [], (catalog_sentences(words), argv, said)
        assert is_chinese(words), (argv, code, said)
        codes.setdefault(argv[0], []).append(code)
        outputs.append(words)
    # the refusals refused, the rest done
    assert codes["enrol"] == [0, 2] and codes["enrol-code"] == [0, 2]
    assert "已接收 qingshan-1/box-6 在登记之前发来的 1 条消息" in outputs[2], outputs[2]
    assert codes["bundle"] == [1, 1, 1, 0] and (paths["out"] / "box-7.bundle").exists()
    assert codes["check-broker"] == [0, 2] and codes["check-box"] == [2]
    assert codes["rollout"] == [0, 2] and codes["rollouts"] == [0, 0, 0, 0, 1]
    assert codes["rollback"] == [0, 2] and codes["review"] == [0, 1, 2]
    assert not [words for words in outputs if "已审阅 0" in words]  # only the refusal
    assert codes["user"] == [0, 2, 0, 0, 0, 2] and codes["revoke"] == [0, 1]


def test_the_report_in_chinese_names_its_warnings(site, capsys, monkeypatch):
    """The health table: Chinese headings and states, and the drift, disk and event warnings in
    words (the codes stay English in ``--json``)."""
    import json

    paths, _scene = site
    config = str(paths["config"])
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert central_main(["report", "--config", config]) == 0
    table = capsys.readouterr().out
    assert table.startswith("诊所"), table
    assert "模型置信度已偏离基线（PSI" in table and "磁盘已用 96%（剩余 800 MB）" in table
    assert "模型 chest-lesion@2.1.0 已退回到 chest-lesion@2.0.0" in table
    assert central_main(["report", "--config", config, "--json"]) == 0
    rows = {row["device"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["box-3"]["health"] == "warning"
    assert rows["box-3"]["drift"][0].startswith("model confidence has shifted")


def test_a_chinese_command_leaves_the_log_lines_to_the_journal(tmp_path, capsys, caplog,
                                                                monkeypatch):
    """A Chinese command says in words what its English log lines would (here: the box's
    early messages stay refused, the hospital's key unreadable); in English the log line is
    as it was."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from central.config import load
    from central.receiver import Receiver
    from central.store import Store
    from clinibox_common.contracts.enrolment import EnrolmentCode
    from tests.telemetry_payloads import Box

    config = tmp_path / "central.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/central.db"\n'
                      f'[keys]\nhospital_key = "{tmp_path}/missing.pem"\n')
    store = Store(load(str(config)).database.url)
    early = Box("clinic-a", "box-6", X25519PrivateKey.generate().public_key())
    Receiver(load(str(config)), store, X25519PrivateKey.generate()).handle(
        *early.envelope("status"), time.time())
    store.close()
    code = EnrolmentCode("clinic-a", "box-6", early.key.public_key()).text()
    caplog.set_level("INFO")
    caplog.clear()
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert central_main(["enrol-code", "--config", str(config), code]) == 0
    said = capsys.readouterr()
    assert "已登记 clinic-a/box-6" in said.out
    assert "box-6 在登记之前发来的消息仍被拒收" in said.err, said.err
    assert not [r for r in caplog.records if r.name == "clinibox.central"], caplog.records
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert central_main(["enrol-code", "--config", str(config), code]) == 0
    assert "stay refused" in caplog.text and not capsys.readouterr().err


def test_a_database_that_cannot_be_opened_is_said_in_chinese(tmp_path, capsys, monkeypatch):
    """Where the database is and why it cannot be opened, in words (the store's English text
    in English)."""
    config = tmp_path / "central.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/no-such-folder/x/central.db"\n')
    (tmp_path / "no-such-folder").write_text("a file where the folder should be")
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    for argv in (["report"], ["user", "list"]):
        assert central_main([*argv, "--config", str(config)]) != 0
        err = capsys.readouterr().err
        assert "无法打开数据库" in err and english_sentences(readable(err)) == [], err
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert central_main(["report", "--config", str(config)]) != 0
    assert "cannot open the database: database" in capsys.readouterr().err
