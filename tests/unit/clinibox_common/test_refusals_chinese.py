"""A wrong configuration or enrolment bundle refused in the reader's language (issue 54).

Under ``LANG=zh_CN.UTF-8`` the refusals of a bad config file (``clinibox status``,
``clinibox config --check``, ``clinibox central report``) and of a bad enrolment bundle
(``clinibox provision``) hold no English sentence: the section, key, value, field and path
stay as the person wrote them, the rest is Chinese. Under ``LANG=C`` each reads as it always
has (the technician's journal and the other tests read the English).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clinibox.table import main
from tests.i18n_text import catalog_sentences, english_sentences, is_chinese
from tests.unit.firmware_app.test_chinese_sweep import readable

#: bad box config files: (name, the file's text, the English refusal under LANG=C)
BOX_CONFIGS = [
    ("unknown section", "[dicomm]\nport = 104\n",
     "unknown section [dicomm] (did you mean 'dicom'?)"),
    ("unknown key", '[storage]\nstate_dirr = "/tmp/x"\n',
     "unknown key [storage] state_dirr (did you mean 'state_dir'?)"),
    ("wrong type", "[storage]\nstate_dir = 5\n", "[storage] state_dir: must be a string, got 5"),
    ("not true or false", '[dicom]\nenabled = "yes"\n',
     "[dicom] enabled: must be true or false, got 'yes'"),
    ("not a list", '[dicom]\nallowed_calling_aets = "CT1"\n',
     "[dicom] allowed_calling_aets: must be a list of strings, got 'CT1'"),
    ("not a table", "dicom = 3\n", "[dicom] must be a table"),
    ("out of range", "[dicom]\nport = 0\n", "[dicom] port: must be between 1 and 65535, got 0"),
    ("not one of", '[runtime]\nbackend = "cuda"\n',
     "[runtime] backend: must be one of auto, onnxruntime, openvino, tflite; got 'cuda'"),
    ("an AE title", '[dicom]\nae_title = "WAY-TOO-LONG-AE-TITLE"\n',
     "[dicom] ae_title: must be 1-16 printable ASCII characters without backslash, got "
     "'WAY-TOO-LONG-AE-TITLE'"),
    ("an id", '[telemetry]\nclinic = "Clinic A"\n',
     "[telemetry] clinic: must be 1-32 lower-case letters, digits or dashes, got 'Clinic A'"),
    ("cross-field", "[dicom]\ntls_enabled = true\n",
     "[dicom] tls_cert: tls_enabled needs tls_cert and tls_key"),
    ("needed with the broker", '[mqtt]\nhost = "broker.example"\n',
     "[mqtt] ca_file: needed when [mqtt] host is set"),
    ("retries", "[pacs]\nretry_min_seconds = 600.0\nretry_max_seconds = 60.0\n",
     "[pacs] retry_min_seconds: larger than retry_max_seconds"),
    ("a table's key", '[[pacs.destinations]]\nname = "pacs"\nhots = "10.0.0.9"\n',
     "[pacs.destinations 1]: needs at least name and host"),
    ("a table's value", '[[pacs.destinations]]\nname = "pacs"\nhost = "10.0.0.9"\n'
     'send = ["pdf"]\n', "[pacs.destinations 1] send: must list one or more of"),
    ("a destination's TLS", '[[pacs.destinations]]\nname = "pacs"\nhost = "10.0.0.9"\n'
     'ca_file = "ca.pem"\n',
     "[pacs.destinations 1] tls: ca_file, cert_file and key_file need tls = true"),
    ("a regular expression", '[[routing.rules]]\nname = "r"\nmodel = "m"\n'
     'series_description = "chest["\n',
     "[routing.rules 1] series_description: not a regular expression (unterminated character "
     "set at position 5): 'chest['"),
    ("a live source", '[[live.sources]]\nname = "us-1"\nurl = "ftp://10.0.0.5/x"\n',
     "[live.sources 1] url: must be /dev/videoN, a path, or a URL of file, rtsp, rtsps, udp, "
     "rtp, http, https, tls; got 'ftp://10.0.0.5/x'"),
    ("a video size", '[[live.sources]]\nname = "us-1"\nurl = "/dev/video0"\n'
     'video_size = "big"\n',
     "[live.sources 1] video_size: must be WIDTHxHEIGHT (e.g. 1280x720) or empty, got 'big'"),
    ("not TOML", "[storage\n", "not valid TOML: Expected ']' at the end of a table "
     "declaration (at line 1, column 9)"),
]
#: bad hospital config files, as BOX_CONFIGS
CENTRAL_CONFIGS = [
    ("a box's section", '[storage]\nstate_dir = "/tmp/x"\n', "unknown section [storage]"),
    ("unknown key", '[mqtt]\nhots = "broker"\n', "unknown key [mqtt] hots (did you mean 'host'?)"),
    ("out of range", "[health]\ndrift_psi = 0.0\n",
     "[health] drift_psi: must be between 0.001 and 10.0, got 0.0"),
    ("a database URL", '[database]\nurl = "mysql://db/x"\n',
     "[database] url: must be sqlite:///PATH, postgresql://USER@HOST:PORT/DB or a path; got "
     "'mysql://db/x'"),
    ("a webhook", '[notify]\nurl = "ftp://x"\n',
     "[notify] url: must be empty or an http:// or https:// URL, got 'ftp://x'"),
    ("cross-field", '[notify]\nurl = "https://hook.example/x"\n',
     "[notify] secret_file: the webhook's shared secret is required when [notify] url is set"),
    ("not TOML", "[mqtt]\nhost = \n", "not valid TOML: Invalid value (at line 2, column 8)"),
]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    said = capsys.readouterr()
    return code, said.out + said.err


#: a list of names the refusal offers (options, schemes, fields), joined by the Chinese list mark
_NAMES = re.compile(r"[A-Za-z0-9_.:/-]+(?:、[A-Za-z0-9_.:/-]+)+")


def _assert_chinese(said: str, what: object) -> None:
    said = _NAMES.sub(" ", said)
    assert english_sentences(readable(said)) == [], (english_sentences(readable(said)), what,
                                                     said)
    assert catalog_sentences(said) == [], (catalog_sentences(said), what, said)
    assert is_chinese(said), (what, said)


def _commands(path: Path, central: bool) -> list[list[str]]:
    if central:
        return [["central", "report", "--config", str(path)]]
    return [["status", "--config", str(path)], ["config", "--check", str(path)]]


@pytest.mark.parametrize(("central", "name", "text", "english"),
                         [(False, *case) for case in BOX_CONFIGS]
                         + [(True, *case) for case in CENTRAL_CONFIGS],
                         ids=lambda value: value if isinstance(value, str) and len(value) < 24
                         else None)
def test_a_bad_config_is_refused_in_the_readers_language(tmp_path, capsys, monkeypatch,
                                                         central, name, text, english):
    path = tmp_path / "bad config.toml"  # a space: the path is kept as written, whole
    path.write_text(text, encoding="utf-8")
    for argv in _commands(path, central):
        monkeypatch.setenv("LANG", "C")
        code, said = _run(argv, capsys)
        assert code == 2, (argv, said)
        assert english in said, (argv, said)
        monkeypatch.setenv("LANG", "zh_CN.UTF-8")
        code, said = _run(argv, capsys)
        assert code == 2, (argv, said)
        assert "配置错误" in said, (argv, said)
        _assert_chinese(said.replace(str(path), " "), (argv, name))


def test_an_unreadable_config_is_said_in_chinese(tmp_path, capsys, monkeypatch):
    missing, folder = tmp_path / "missing.toml", tmp_path / "a-folder.toml"
    folder.mkdir()
    for path, english, chinese in (
            (missing, f"cannot read config {missing}: No such file or directory",
             f"无法读取配置文件 {missing}：文件或文件夹不存在"),
            (folder, f"cannot read config {folder}: Is a directory",
             f"无法读取配置文件 {folder}：")):
        for argv in (*_commands(path, False), *_commands(path, True)):
            monkeypatch.setenv("LANG", "C")
            assert _run(argv, capsys) == (2, f"clinibox{' central' * (argv[0] == 'central')}: "
                                             f"config error: {english}\n"), argv
            monkeypatch.setenv("LANG", "zh_CN.UTF-8")
            code, said = _run(argv, capsys)
            assert code == 2 and chinese in said, (argv, said)
            _assert_chinese(said, argv)


def test_the_issues_examples_read_in_chinese_and_a_good_file_checks(tmp_path, capsys,
                                                                    monkeypatch):
    path = tmp_path / "bad.toml"
    path.write_text('[storage]\nstate_dirr = "/tmp/x"\n', encoding="utf-8")
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert _run(["status", "--config", str(path)], capsys) == (
        2, "clinibox: 配置错误: 没有这个配置项：[storage] state_dirr（是不是要写 'state_dir'？）\n")
    path.write_text("[storage]\nstate_dir = 5\n", encoding="utf-8")
    assert _run(["config", "--check", str(path)], capsys) == (
        2, "clinibox: 配置错误: [storage] state_dir：必须是加引号的文字，实际为 5\n")
    path.write_text("[runtime]\nbackend = \"cuda\"\n", encoding="utf-8")
    assert _run(["config", "--check", str(path)], capsys)[1].endswith(
        "必须是 auto、onnxruntime、openvino、tflite 之一；实际为 'cuda'\n")
    path.write_text("[storage\n", encoding="utf-8")
    assert _run(["config", "--check", str(path)], capsys)[1] == (
        f"clinibox: 配置错误: {path}：不是有效的 TOML 格式：第 1 行第 9 列有错\n")
    path.write_text("[dicom]\nport = 4242\n", encoding="utf-8")
    assert _run(["config", "--check", str(path)], capsys) == (0, f"{path}：配置正确\n")
    monkeypatch.setenv("LANG", "C")
    assert _run(["config", "--check", str(path)], capsys) == (0, f"{path}: OK\n")
    assert _run(["config"], capsys)[1].startswith("# clinibox configuration: every key")
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")  # the example file stays English
    assert _run(["config"], capsys)[1].startswith("# clinibox configuration: every key")


# -- the enrolment bundle at clinibox provision ------------------------------------------------

#: a certificate block whose body is not a certificate
GARBAGE = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, str]]:
    """Bad bundles: name → (the file's bytes, the English refusal under LANG=C)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from central.bundle import issue_client_certificate
    from clinibox_common.contracts.enrolment import EnrolmentBundle, public_key_pem
    from tests.tls_certs import CertificateAuthority

    ca = CertificateAuthority.create(tmp_path_factory.mktemp("ca"), name="hospital CA")
    other = CertificateAuthority.create(tmp_path_factory.mktemp("other"), name="other CA")
    cert, key = issue_client_certificate(ca.cert, ca.key, "clinic-a", "box-1")
    good = EnrolmentBundle(
        clinic="clinic-a", device="box-1", broker_host="mqtt.hospital.example",
        broker_port=8883, ca_cert=ca.cert_path.read_text(), client_cert=cert, client_key=key,
        hospital_key=public_key_pem(X25519PrivateKey.generate().public_key()),
        model_signing_keys=(public_key_pem(Ed25519PrivateKey.generate().public_key()),))
    another_cert, another_key = issue_client_certificate(ca.cert, ca.key, "clinic-a", "box-2")
    foreign_cert, foreign_key = issue_client_certificate(other.cert, other.key, "clinic-a",
                                                         "box-1")
    made: dict[str, tuple[bytes, str]] = {"good": (json.dumps(good.to_dict()).encode(), "")}

    def changed(name: str, english: str, change) -> None:
        data = good.to_dict()
        change(data)
        made[name] = (json.dumps(data).encode(), english)

    made["too large"] = (b" " * ((1 << 20) + 1),
                         f"not an enrolment bundle: {(1 << 20) + 1} bytes is far too large")
    made["not JSON"] = (b"PK\x03\x04 a zip file", "not an enrolment bundle: not JSON (")
    made["not an object"] = (b"[1, 2]", "not an enrolment bundle: not a JSON object")
    changed("schema", "unknown bundle schema 'clinibox.enrolment/2'; this box reads "
            "clinibox.enrolment/1", lambda d: d.update(schema="clinibox.enrolment/2"))
    changed("fields", "bundle fields: missing hospital_key, issued_at; unknown wifi_password",
            lambda d: (d.pop("hospital_key"), d.pop("issued_at"), d.update(wifi_password="x")))
    changed("tls fields", "tls: must be an object with exactly ca_cert, client_cert, client_key",
            lambda d: d["tls"].pop("client_key"))
    changed("issued_at", "issued_at: not an ISO 8601 time: 'yesterday'",
            lambda d: d.update(issued_at="yesterday"))
    changed("CN", "tls.client_cert: its CN is clinic-a/box-2, but the broker's ACL needs CN "
            "clinic-a/box-1 (clinic/device)",
            lambda d: d["tls"].update(client_cert=another_cert, client_key=another_key))
    changed("issuer", "tls.client_cert: not signed by the bundle's CA (tls.ca_cert): issued by "
            "'CN=other CA', not by the bundle's CA 'CN=hospital CA'",
            lambda d: d["tls"].update(client_cert=foreign_cert, client_key=foreign_key))
    changed("client key", "tls.client_key: the key does not match the client certificate "
            "(tls.client_cert)", lambda d: d["tls"].update(client_key=another_key))
    changed("not PEM", "tls.ca_cert: not a PEM certificate (want exactly one -----BEGIN "
            "CERTIFICATE----- block)", lambda d: d["tls"].update(ca_cert="hello"))
    changed("bad DER", "tls.ca_cert: not a readable PEM certificate (",
            lambda d: d["tls"].update(ca_cert=GARBAGE))
    changed("bad key", "tls.client_key: not a readable PEM private key",
            lambda d: d["tls"].update(client_key="-----BEGIN PRIVATE KEY-----\nAAAA\n"))
    server_cert, server_key = ca.issue_server("clinic-a/box-1", tmp_path_factory.mktemp("srv"))
    changed("a server certificate", "tls.client_cert: not usable as a TLS client certificate (its "
            "extended key usage lacks clientAuth)",
            lambda d: d["tls"].update(client_cert=server_cert.read_text(),
                                      client_key=server_key.read_text()))
    return made


#: the names a bundle's refusal gives as written (the PEM armour, a certificate's subject)
_BUNDLE_NAMES = re.compile(r"-----BEGIN [A-Z ]+-----|'CN=[^']*'")


@pytest.mark.parametrize("name", ["too large", "not JSON", "not an object", "schema", "fields",
                                  "tls fields", "issued_at", "CN", "issuer", "client key",
                                  "not PEM", "bad DER", "bad key", "a server certificate"])
def test_a_bad_bundle_is_refused_at_provision_in_the_readers_language(
        tmp_path, capsys, monkeypatch, bundles, name):
    data, english = bundles[name]
    bundle, config = tmp_path / "box-1.cbxenrol", tmp_path / "etc" / "clinibox.toml"
    bundle.write_bytes(data)
    argv = ["provision", str(bundle), "--config", str(config)]
    monkeypatch.setenv("LANG", "C")
    code, said = _run(argv, capsys)
    assert code == 1, said
    assert said.startswith(f"clinibox provision: bundle {bundle} refused: {english}"), said
    assert said.endswith("\nnothing was changed\n"), said
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    code, said = _run(argv, capsys)
    assert code == 1, said
    assert said.startswith(f"clinibox provision: 登记包 {bundle} 被拒绝：") and said.endswith(
        "\n没有做任何改动\n"), said
    _assert_chinese(_BUNDLE_NAMES.sub(" ", said), name)
    assert not config.parent.exists()


def test_provision_says_in_chinese_what_stops_it_before_the_bundle(tmp_path, capsys,
                                                                   monkeypatch, bundles):
    bundle, config = tmp_path / "missing.cbxenrol", tmp_path / "clinibox.toml"
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    monkeypatch.delenv("CLINIBOX_CONFIG", raising=False)
    code, said = _run(["provision", str(bundle), "--config", str(config)], capsys)
    assert (code, said) == (1, f"clinibox provision: 登记包 {bundle} 被拒绝：无法读取登记包 "
                               f"{bundle}：文件或文件夹不存在\n没有做任何改动\n")
    code, said = _run(["provision", str(bundle)], capsys)
    assert code == 2 and "请用 --config PATH 指定（或设置 CLINIBOX_CONFIG）" in said, said
    _assert_chinese(said.replace("--config PATH", " "), "no config")  # the option as typed
    bundle.write_bytes(bundles["CN"][0])  # a bundle refused anyway: the config is read after
    config.write_text("[dicom]\nport = 0\n", encoding="utf-8")
    from clinibox_common.contracts import enrolment

    monkeypatch.setattr(enrolment, "check_bundle", lambda bundle, now=None: None)
    code, said = _run(["provision", str(bundle), "--config", str(config)], capsys)
    assert code == 2 and said.startswith(
        "clinibox provision: 现有的配置文件有错，请先改正：[dicom] port：必须在 1 到 65535 之间，"
        "实际为 0\n"), said
    _assert_chinese(said, "a bad config")
    monkeypatch.setenv("LANG", "C")
    code, said = _run(["provision", str(bundle), "--config", str(config)], capsys)
    assert (code, said) == (2, "clinibox provision: the existing config is not valid, fix it "
                               "first: [dicom] port: must be between 1 and 65535, got 0\n"
                               "nothing was changed\n")


def test_a_provisioned_box_is_told_what_to_do_in_the_readers_language(tmp_path, capsys,
                                                                      monkeypatch, bundles):
    """Provision's report: what it wrote and what the hospital must enrol, English as it
    always was, Chinese beside it (the names, paths, keys and the hospital's command as
    they are)."""
    bundle = tmp_path / "box-1.cbxenrol"
    bundle.write_bytes(bundles["good"][0])
    said: dict[str, str] = {}
    for language in ("C", "zh_CN.UTF-8"):
        config = tmp_path / language / "clinibox.toml"
        config.parent.mkdir()
        state = (tmp_path / language / "state").as_posix()
        config.write_text(f'[storage]\nstate_dir = "{state}"\n', encoding="utf-8")
        monkeypatch.setenv("LANG", language)
        code, said[language] = _run(["provision", str(bundle), "--config", str(config)], capsys)
        assert code == 0, said[language]
    lines = said["C"].splitlines()
    assert lines[0].startswith("provisioned clinic-a/box-1 from enrolment bundle ")
    assert [line[:19] for line in lines[1:6]] == [
        "  config           ", "  hospital files   ", "  broker           ",
        "  model keys       ", "  device key       "]
    assert ", client certificate valid until " in lines[3] and "(new: " in lines[5]
    assert lines[6:9] == ["Delete the bundle from the USB stick: it holds this box's TLS key.",
                          "", "The hospital must enrol this box:"]
    assert lines[9:11] == ["  clinic  clinic-a", "  device  box-1"]
    assert lines[-1] == ("Then restart the services (systemctl restart clinibox clinibox-web) "
                         "and check the box: clinibox selftest")
    chinese = said["zh_CN.UTF-8"]
    assert chinese.startswith("已按登记包 ") and "中心医院必须登记这台设备：" in chinese
    assert "clinibox central enrol-code CBX1:CLINIC-A:BOX-1:" in chinese
    for name in ("mqtt.hospital.example", "clinic-a", "systemctl restart clinibox clinibox-web"):
        chinese = chinese.replace(name, " ")  # a host, an id and a command, as they are
    _assert_chinese(chinese, "provisioned")
