"""The config: defaults, validation messages that name the key, the example file."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinibox_common.bundled import DEMO_PUBLIC_KEY
from clinibox_common.settings_loader import ConfigError
from firmware_app.settings import box as cfg


def test_embedded_defaults_serve_a_single_box():
    config = cfg.load(None)
    assert config.dicom.port == 11112
    assert config.web.port == 8080
    assert config.mqtt.host == ""  # disabled until configured
    assert config.state_dir == Path("var").resolve()
    assert config.import_dir == Path("var").resolve() / "import"
    assert config.trusted_key_paths == [DEMO_PUBLIC_KEY]


def test_script_keys_are_settable(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text(
        '[storage]\nstate_dir = "{}"\n[dicom]\nport = 4242\nae_title = "RURAL1"\n'
        '[web]\nport = 9090\n[usb]\nwatch_dir = "{}"\n'.format(tmp_path / "state", tmp_path / "usb")
    )
    config = cfg.load(path)
    assert config.dicom.port == 4242
    assert config.dicom.ae_title == "RURAL1"
    assert config.web.port == 9090
    assert config.state_dir == tmp_path / "state"
    assert config.import_dir == tmp_path / "usb"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[dicom]\nprot = 1\n", "unknown key [dicom] prot (did you mean 'port'?)"),
        ("[dicomm]\nport = 1\n", "unknown section [dicomm] (did you mean 'dicom'?)"),
        ("[dicom]\nport = 0\n", "[dicom] port: must be between 1 and 65535, got 0"),
        ("[dicom]\nport = \"x\"\n", "[dicom] port: must be an integer"),
        ("[dicom]\nport = true\n", "[dicom] port: must be an integer"),
        ("[dicom]\nae_title = \"WAY-TOO-LONG-AE-TITLE\"\n", "[dicom] ae_title"),
        ("[runtime]\nbackend = \"cuda\"\n", "[runtime] backend: must be one of"),
        ("[dicom]\nallowed_calling_aets = \"CT1\"\n", "allowed_calling_aets: must be a list"),
        ("[dicom]\ntls_enabled = true\n", "[dicom] tls_cert"),
        ("[usb]\nsettle_seconds = -1\n", "[usb] settle_seconds"),
        ("dicom = 3\n", "[dicom] must be a table"),
        ("[dicom\n", "not valid TOML"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as excinfo:
        cfg.load(path)
    assert message in str(excinfo.value)


def test_example_config_is_the_defaults_and_loads(tmp_path):
    example = Path(__file__).resolve().parents[3] / "config.example.toml"
    assert example.read_text() == cfg.describe_defaults() + "\n"
    assert cfg.load(example) == cfg.Config()


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        cfg.load(tmp_path / "nope.toml")
