"""A fixed address from a USB stick (``firmware_app/ops/usb_network.py``): what a technician's
``clinibox-network.toml`` may say, the systemd-networkd file it becomes, a refusal that changes
nothing, and the line the appliance's screen shows."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from firmware_app.cli.console_banner import banner
from firmware_app.ops import usb_network
from firmware_app.ops.usb_network import (
    FILE_NAME,
    NetworkOutcome,
    NetworkRefusal,
    NetworkSettingError,
    parse,
    take_from,
)
from firmware_app.settings import box as config_module

GOOD = 'address = "192.168.1.50/24"\ngateway = "192.168.1.1"\ndns = ["192.168.1.1", "10.0.0.53"]\n'


def _stick(tmp_path: Path, text: str | bytes | None) -> Path:
    stick = tmp_path / "stick"
    stick.mkdir()
    if text is not None:
        data = text.encode("utf-8") if isinstance(text, str) else text
        (stick / FILE_NAME).write_bytes(data)
    return stick


def _take(folder: Path, **given) -> usb_network.NetworkResult:
    """``take_from`` on a box whose network systemd-networkd runs (the image's)."""
    return take_from(folder, **{"managed": lambda: True, **given})


class Reloads:
    """systemd-networkd's reload, counted (a real networkd runs in the image's tier)."""

    def __init__(self, fail: bool = False) -> None:
        self.count = 0
        self.fail = fail

    def __call__(self) -> None:
        self.count += 1
        if self.fail and self.count == 1:
            raise subprocess.CalledProcessError(1, ["systemctl", "reload",
                                                    "systemd-networkd.service"])


def test_a_fixed_address_with_its_gateway_and_name_servers():
    setting = parse(GOOD)
    assert setting is not None
    assert setting.summary() == "192.168.1.50/24 via 192.168.1.1, DNS 192.168.1.1, 10.0.0.53"
    written = setting.network_file("a USB stick")
    assert "[Match]\nName=en* eth*\n" in written
    assert "Address=192.168.1.50/24\nGateway=192.168.1.1\nDNS=192.168.1.1\nDNS=10.0.0.53\n" \
        in written
    assert "DHCP" not in written.split("[Network]")[1]


def test_dhcp_and_the_smallest_settings():
    assert parse('address = "DHCP"') is None
    bare = parse('address = "10.1.2.3/8"')
    assert bare is not None and bare.gateway is None and bare.dns == ()
    assert parse('address = "192.168.7.1/31"\ngateway = "192.168.7.0"') is not None  # RFC 3021
    six = parse('address = "fd00::50/64"\ngateway = "fd00::1"\ndns = "fd00::53"')
    assert six is not None and str(six.dns[0]) == "fd00::53"


@pytest.mark.parametrize(("text", "refusal", "words"), [
    ('address = "192.168.1.50"', NetworkRefusal.BAD_ADDRESS, "prefix length"),
    ('address = "192.168.1.0/24"', NetworkRefusal.BAD_ADDRESS, "cannot be a box's address"),
    ('address = "192.168.1.255/24"', NetworkRefusal.BAD_ADDRESS, "cannot be a box's address"),
    ('address = "127.0.0.2/8"', NetworkRefusal.BAD_ADDRESS, "cannot be a box's address"),
    ('address = "169.254.3.4/16"', NetworkRefusal.BAD_ADDRESS, "cannot be a box's address"),
    ('address = "300.1.1.1/24"', NetworkRefusal.BAD_ADDRESS, "not an address"),
    ("address = 5", NetworkRefusal.BAD_ADDRESS, "dhcp"),
    ('gateway = "192.168.1.1"', NetworkRefusal.BAD_ADDRESS, "dhcp"),
    ('address = "192.168.1.50/24"\ngateway = "192.168.2.1"', NetworkRefusal.BAD_GATEWAY,
     "not another address on the network 192.168.1.0/24"),
    ('address = "192.168.1.50/24"\ngateway = "192.168.1.50"', NetworkRefusal.BAD_GATEWAY,
     "not another address"),
    ('address = "192.168.1.50/24"\ngateway = "router"', NetworkRefusal.BAD_GATEWAY,
     "not an IP address"),
    ('address = "192.168.1.50/24"\ndns = ["1.1.1.1", "8.8.8.8", "9.9.9.9", "1.0.0.1"]',
     NetworkRefusal.BAD_DNS, "at most 3"),
    ('address = "192.168.1.50/24"\ndns = ["ns.example"]', NetworkRefusal.BAD_DNS,
     "not an IP address"),
    # an IPv6 scope is free text: a newline there would write a line of its own
    ('address = "fd00::50%z\\n[Match]/64"', NetworkRefusal.BAD_ADDRESS,
     "cannot be a box's address"),
    ('address = "fd00::50/64"\ngateway = "fd00::1%x\\nDNS=1.2.3.4"', NetworkRefusal.BAD_GATEWAY,
     "not another address"),
    ('address = "fd00::50/64"\ndns = ["fd00::53%a\\nb"]', NetworkRefusal.BAD_DNS,
     "cannot be a name server's address"),
    ('address = "192.168.1.50/24"\ndns = ["127.0.0.53"]', NetworkRefusal.BAD_DNS,
     "cannot be a name server's address"),
    ('address = "192.168.1.50/24"\ngatway = "192.168.1.1"', NetworkRefusal.UNKNOWN_KEY,
     "unknown key 'gatway'"),
    # a key's own characters never reach the journal or the screen raw
    ('"\\u001b[2J" = 1\naddress = "dhcp"', NetworkRefusal.UNKNOWN_KEY, "unknown key '\\x1b[2J'"),
    ('address = "10.0.0.1/0"\ngateway = "99.1.2.3"', NetworkRefusal.BAD_ADDRESS,
     "/0 is not a clinic's network"),
    ('address = "10.0.0.5/24"\ngateway = "10.0.0.0"', NetworkRefusal.BAD_GATEWAY,
     "not another address"),
    ('address = "10.0.0.5/24"\ngateway = "10.0.0.255"', NetworkRefusal.BAD_GATEWAY,
     "not another address"),
    ("a = " + "[" * 2040 + "]" * 2040, NetworkRefusal.NOT_TOML, "nested too deeply"),
    ('address = "dhcp"\ndns = ["192.168.1.1"]', NetworkRefusal.UNKNOWN_KEY, "takes no"),
    ("address = 192.168.1.50/24", NetworkRefusal.NOT_TOML, "is not TOML"),
])
def test_a_setting_that_does_not_hold_is_refused_saying_why(text, refusal, words):
    with pytest.raises(NetworkSettingError) as caught:
        parse(text)
    assert caught.value.refusal is refusal
    assert words in str(caught.value)


def test_a_stick_without_the_file_changes_nothing(tmp_path):
    target = tmp_path / "10-clinibox-stick.network"
    reloads = Reloads()
    result = _take(_stick(tmp_path, None), network_file=target, reload=reloads)
    assert result.outcome is NetworkOutcome.NONE
    assert not target.exists() and reloads.count == 0


def test_the_setting_is_written_for_networkd_and_reloaded(tmp_path):
    target = tmp_path / "10-clinibox-stick.network"
    reloads = Reloads()
    result = _take(_stick(tmp_path, GOOD), network_file=target, reload=reloads)
    assert result.outcome is NetworkOutcome.FIXED
    assert result.setting.startswith("192.168.1.50/24 via 192.168.1.1")
    assert "Address=192.168.1.50/24" in target.read_text(encoding="utf-8")
    assert target.stat().st_mode & 0o777 == 0o644
    assert reloads.count == 1


def test_dhcp_on_a_later_stick_removes_the_fixed_address(tmp_path):
    target = tmp_path / "10-clinibox-stick.network"
    target.write_text("[Network]\nAddress=192.168.1.50/24\n", encoding="utf-8")
    reloads = Reloads()
    result = _take(_stick(tmp_path, 'address = "dhcp"\n'), network_file=target,
                       reload=reloads)
    assert result.outcome is NetworkOutcome.DHCP
    assert not target.exists() and reloads.count == 1


def test_a_refused_setting_leaves_the_box_as_it_was(tmp_path):
    target = tmp_path / "10-clinibox-stick.network"
    target.write_text("[Network]\nAddress=10.9.9.9/24\n", encoding="utf-8")
    before = target.read_bytes()
    reloads = Reloads()
    result = _take(_stick(tmp_path, 'address = "10.9.9.0/24"'), network_file=target,
                       reload=reloads)
    assert result.outcome is NetworkOutcome.REFUSED
    assert result.refusal == NetworkRefusal.BAD_ADDRESS.value
    assert target.read_bytes() == before and reloads.count == 0


def test_a_reload_that_fails_puts_the_old_file_back(tmp_path):
    target = tmp_path / "10-clinibox-stick.network"
    target.write_text("[Network]\nAddress=10.9.9.9/24\n", encoding="utf-8")
    before = target.read_bytes()
    reloads = Reloads(fail=True)
    result = _take(_stick(tmp_path, GOOD), network_file=target, reload=reloads)
    assert result.outcome is NetworkOutcome.REFUSED
    assert result.refusal == NetworkRefusal.NOT_APPLIED.value
    assert target.read_bytes() == before
    assert reloads.count == 2  # the new file, then the old one again


@pytest.mark.parametrize("kind", ["link", "fifo", "big", "binary"])
def test_what_is_not_a_small_text_file_is_refused(tmp_path, kind):
    stick = _stick(tmp_path, None)
    path = stick / FILE_NAME
    if kind == "link":
        (tmp_path / "elsewhere.toml").write_text(GOOD, encoding="utf-8")
        path.symlink_to(tmp_path / "elsewhere.toml")
    elif kind == "fifo":
        os.mkfifo(path)  # would block a reader that waits for a writer
    elif kind == "big":
        path.write_text(GOOD + "#" * 5000, encoding="utf-8")
    else:
        path.write_bytes(b"address = \"\xff\xfe\"")
    target = tmp_path / "10-clinibox-stick.network"
    result = _take(stick, network_file=target, reload=Reloads())
    assert result.outcome is NetworkOutcome.REFUSED
    expected = {"link": NetworkRefusal.UNREADABLE, "fifo": NetworkRefusal.UNREADABLE,
                "big": NetworkRefusal.TOO_BIG, "binary": NetworkRefusal.NOT_TOML}[kind]
    assert result.refusal == expected.value
    assert not target.exists()


def test_the_screen_says_what_the_stick_set_or_why_not(tmp_path, monkeypatch):
    config = tmp_path / "clinibox.toml"
    config.write_text(f'[storage]\nstate_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    loaded = config_module.load(str(config))
    monkeypatch.setattr(usb_network, "OUTCOME_PATH", tmp_path / "network.json")
    assert not any("network" in line for line in banner(loaded, None, ["192.0.2.7"]))

    usb_network.record(_take(_stick(tmp_path, GOOD), network_file=tmp_path / "n.network",
                                 reload=Reloads()), tmp_path / "network.json")
    lines = banner(loaded, None, ["192.168.1.50"])
    assert ("  network: fixed address 192.168.1.50/24 via 192.168.1.1, DNS 192.168.1.1, "
            "10.0.0.53 (set from a USB stick)") in lines

    refused = usb_network.NetworkResult(NetworkOutcome.REFUSED, refusal="bad_gateway",
                                        reason="gateway \x1b[2J10.0.0.1 is not another address")
    usb_network.record(refused, tmp_path / "network.json")
    lines = banner(loaded, None, [])
    assert ("  network setting on the USB stick refused: gateway ?[2J10.0.0.1 is not another "
            "address") in lines


def test_the_technicians_page_shows_a_file_the_box_takes_and_the_lines_it_shows(tmp_path):
    """docs/technician/flash.md: its ``clinibox-network.toml`` is taken as written, and the
    screen's lines it quotes are the ones the box prints."""
    page = (Path(__file__).resolve().parents[3] / "docs" / "technician" / "flash.md").read_text(
        encoding="utf-8")
    block = page.split("```toml\n", 1)[1].split("```", 1)[0]
    result = _take(_stick(tmp_path, block), network_file=tmp_path / "n.network",
                       reload=Reloads())
    assert result.outcome is NetworkOutcome.FIXED
    flat = " ".join(page.split())
    assert f"`{usb_network.banner_line(result)}`" in flat
    (tmp_path / "other").mkdir()
    refused = _take(_stick(tmp_path / "other", 'address = "192.168.1.50/24"\n'
                                                   'gateway = "192.168.2.1"'),
                        network_file=tmp_path / "n.network", reload=Reloads())
    assert f"`{usb_network.banner_line(refused)}`" in flat


def test_a_box_whose_network_networkd_does_not_run_refuses_the_setting(tmp_path):
    target = tmp_path / "10-clinibox-stick.network"
    reloads = Reloads()
    result = _take(_stick(tmp_path, GOOD), network_file=target, reload=reloads,
                   managed=lambda: False)
    assert result.outcome is NetworkOutcome.REFUSED
    assert result.refusal == NetworkRefusal.NOT_MANAGED.value
    assert "set its address in its own system's settings" in result.reason
    assert not target.exists() and reloads.count == 0


def test_why_systemd_networkd_did_not_reload_reaches_the_screen(tmp_path):
    def failing() -> None:
        raise NetworkSettingError(NetworkRefusal.NOT_APPLIED, "systemd-networkd did not "
                                  "reload: Job for systemd-networkd.service failed.")

    result = _take(_stick(tmp_path, GOOD), network_file=tmp_path / "n.network", reload=failing)
    assert result.refusal == NetworkRefusal.NOT_APPLIED.value
    assert result.reason == ("the setting could not be applied: systemd-networkd did not "
                             "reload: Job for systemd-networkd.service failed.")
    assert not (tmp_path / "n.network").exists()
