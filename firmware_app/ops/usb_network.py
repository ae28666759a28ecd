"""The box's wired network from a USB stick: a fixed address where the clinic has no DHCP.

The appliance image takes an address by DHCP on every wired port
(``image/overlay/etc/systemd/network/20-wired.network``). A clinic without a DHCP server, or
one whose scanners need the box at a known address, gives it one on a stick: a file named
``clinibox-network.toml`` at the stick's top (``docs/technician/flash.md``)::

    address = "192.168.1.50/24"   # the box's address and its network's prefix length
    gateway = "192.168.1.1"       # optional: the router towards the hospital
    dns = ["192.168.1.1"]         # optional: up to three name servers

or ``address = "dhcp"`` to go back to DHCP. The stick's root step (``clinibox usb-import
--step provision``) reads it through the medium's opened folder, checks every value, writes
``/etc/systemd/network/10-clinibox-stick.network`` (which systemd-networkd prefers to the
image's DHCP file for the same ports) and has systemd reload systemd-networkd. A file that does
not hold is refused whole, with its reason, and the box's network stays as it was; the
outcome goes to ``/run/clinibox-usb-network.json`` for the screen's banner.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import tomllib

from clinibox_common.errors import CliniboxError
from clinibox_common.fs import read_regular, write_bytes_atomically
from firmware_app.ops import stick_outcome

log = logging.getLogger(__name__)

FILE_NAME = "clinibox-network.toml"
MAX_BYTES = 4096
NETWORK_FILE = Path("/etc/systemd/network/10-clinibox-stick.network")
OUTCOME_PATH = Path("/run/clinibox-usb-network.json")
#: the ports the setting is for: every wired one, as the image's DHCP file
WIRED_PORTS = "en* eth*"
MAX_DNS = 3
#: the shortest prefix a clinic's network has, by IP version (a /0 is every address)
SHORTEST_PREFIX = {4: 8, 6: 16}
KEYS = frozenset({"address", "gateway", "dns"})
NETWORKD = "systemd-networkd.service"
#: how long the step waits for systemd-networkd to start (a stick in the box at power-on)
NETWORKD_WAIT_SECONDS = 120.0


class NetworkOutcome(str, Enum):
    """What a stick's network setting came to (the console's banner reads it)."""

    NONE = "none"
    FIXED = "fixed"
    DHCP = "dhcp"
    REFUSED = "refused"


class NetworkRefusal(str, Enum):
    """Why a stick's network setting was refused."""

    UNREADABLE = "unreadable"
    TOO_BIG = "too_big"
    NOT_TOML = "not_toml"
    UNKNOWN_KEY = "unknown_key"
    BAD_ADDRESS = "bad_address"
    BAD_GATEWAY = "bad_gateway"
    BAD_DNS = "bad_dns"
    NOT_APPLIED = "not_applied"
    NOT_MANAGED = "not_managed"


class NetworkSettingError(CliniboxError):
    """A network setting that does not hold: its refusal code and the reason in words."""

    def __init__(self, refusal: NetworkRefusal, reason: str) -> None:
        super().__init__(reason)
        self.refusal = refusal


@dataclass(frozen=True)
class NetworkSetting:
    """A fixed address with its prefix, an optional gateway and name servers."""

    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    dns: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()

    def summary(self) -> str:
        """The setting in one line, as the screen shows it."""
        words = str(self.address)
        if self.gateway is not None:
            words += f" via {self.gateway}"
        if self.dns:
            words += f", DNS {', '.join(str(server) for server in self.dns)}"
        return words

    def network_file(self, source: str) -> str:
        """systemd-networkd's ``.network`` file for every wired port."""
        lines = [f"# Written by clinibox from {source}: the box's fixed address.",
                 "# Another stick's clinibox-network.toml with address = \"dhcp\" (or removing",
                 "# this file) gives the wired ports back to DHCP (20-wired.network).",
                 "[Match]", f"Name={WIRED_PORTS}", "", "[Network]",
                 f"Address={self.address}"]
        if self.gateway is not None:
            lines.append(f"Gateway={self.gateway}")
        lines.extend(f"DNS={server}" for server in self.dns)
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class NetworkResult:
    """The outcome, the setting in words, why it was refused (code and words), and when."""

    outcome: NetworkOutcome
    setting: str = ""
    refusal: str = ""
    reason: str = ""
    at: str = ""


def _address(value: object, key: str, refusal: NetworkRefusal,
             ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(value, str):
        raise NetworkSettingError(refusal, f"{key} must be an address in quotes")
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        raise NetworkSettingError(refusal, f"{key} {value!r} is not an IP address") from None


def _usable(address: ipaddress.IPv4Address | ipaddress.IPv6Address
            | ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> bool:
    # an IPv6 scope ("fe80::1%eth0") is free text, newlines included: never into the file
    return not (address.is_loopback or address.is_multicast or address.is_unspecified
                or address.is_link_local or address.is_reserved
                or getattr(address, "scope_id", None) is not None)


def parse(text: str) -> NetworkSetting | None:
    """The setting a stick's file holds; None for ``address = "dhcp"``. NetworkSettingError
    says what does not hold."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise NetworkSettingError(NetworkRefusal.NOT_TOML,
                                  f"{FILE_NAME} is not TOML: {exc}") from None
    except RecursionError:  # "a=[[[[…" nested thousands deep
        raise NetworkSettingError(NetworkRefusal.NOT_TOML,
                                  f"{FILE_NAME} is not TOML: nested too deeply") from None
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise NetworkSettingError(NetworkRefusal.UNKNOWN_KEY,
                                  f"unknown key {', '.join(map(repr, unknown))} (known: "
                                  "address, gateway, dns)")
    raw = data.get("address")
    if isinstance(raw, str) and raw.strip().lower() == "dhcp":
        if set(data) != {"address"}:
            raise NetworkSettingError(NetworkRefusal.UNKNOWN_KEY,
                                      "address = \"dhcp\" takes no gateway or dns")
        return None
    if not isinstance(raw, str) or "/" not in raw:
        raise NetworkSettingError(NetworkRefusal.BAD_ADDRESS,
                                  "address must be \"dhcp\" or an address with its prefix "
                                  "length, e.g. \"192.168.1.50/24\"")
    try:
        address = ipaddress.ip_interface(raw.strip())
    except ValueError:
        raise NetworkSettingError(NetworkRefusal.BAD_ADDRESS,
                                  f"address {raw!r} is not an address with its prefix "
                                  "length") from None
    network = address.network
    # an IPv4 network's first and last addresses name it and reach all of it (but a /31 or
    # /32 has no such addresses: RFC 3021)
    ends = ((network.network_address, network.broadcast_address)
            if address.version == 4 and network.num_addresses > 2 else ())
    if not _usable(address.ip) or address.ip in ends or not _usable(address):
        raise NetworkSettingError(NetworkRefusal.BAD_ADDRESS,
                                  f"address {raw!r} cannot be a box's address on the clinic's "
                                  "network")
    if network.prefixlen < SHORTEST_PREFIX[address.version]:
        raise NetworkSettingError(NetworkRefusal.BAD_ADDRESS,
                                  f"address {raw!r}: /{network.prefixlen} is not a clinic's "
                                  f"network (at least /{SHORTEST_PREFIX[address.version]})")
    gateway = None
    if "gateway" in data:
        gateway = _address(data["gateway"], "gateway", NetworkRefusal.BAD_GATEWAY)
        if (gateway not in network or gateway == address.ip or gateway in ends
                or not _usable(gateway)):
            raise NetworkSettingError(NetworkRefusal.BAD_GATEWAY,
                                      f"gateway {gateway} is not another address on the "
                                      f"network {network}")
    servers = data.get("dns", [])
    if isinstance(servers, str):
        servers = [servers]
    if not isinstance(servers, list) or len(servers) > MAX_DNS:
        raise NetworkSettingError(NetworkRefusal.BAD_DNS,
                                  f"dns must be a list of at most {MAX_DNS} addresses")
    dns = tuple(_address(server, "dns", NetworkRefusal.BAD_DNS) for server in servers)
    unusable = [str(server) for server in dns if not _usable(server)]
    if unusable:
        raise NetworkSettingError(NetworkRefusal.BAD_DNS,
                                  f"dns {unusable[0]!r} cannot be a name server's address")
    return NetworkSetting(address, gateway, dns)


def read_from(folder: Path) -> str | None:
    """The text of ``clinibox-network.toml`` at the top of the medium's folder, or None when
    there is none; a link, another kind of file or one over 4 KiB is refused."""
    try:
        data = read_regular(folder / FILE_NAME, MAX_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NetworkSettingError(NetworkRefusal.UNREADABLE,
                                  f"{FILE_NAME} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise NetworkSettingError(NetworkRefusal.TOO_BIG,
                                  f"{FILE_NAME} is over {MAX_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise NetworkSettingError(NetworkRefusal.NOT_TOML,
                                  f"{FILE_NAME} is not UTF-8 text") from None


def _systemctl(verb: str) -> bool:
    try:
        shown = subprocess.run(["systemctl", verb, "--quiet", NETWORKD], check=False,
                               capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False  # no systemctl, or it hangs: not a box whose network it runs
    return shown.returncode == 0


def networkd_manages_the_network() -> bool:
    """Whether systemd-networkd is enabled here (the appliance image): a box installed on
    another system (NetworkManager, ifupdown) sets its address there instead."""
    return _systemctl("is-enabled")


def reload_networkd(wait_seconds: float = NETWORKD_WAIT_SECONDS) -> None:
    """Have systemd-networkd read its files again: the wired ports take the new setting. A
    stick in the box at power-on is read before systemd-networkd has started, and a reload
    then fails: the step waits for it (it reads the new file when it starts anyway)."""
    deadline = time.monotonic() + wait_seconds
    while not _systemctl("is-active") and time.monotonic() < deadline:
        time.sleep(1.0)
    # systemd runs the service's own reload (networkctl reload) in its network namespace:
    # the stick's unit has a private one, where networkctl refuses to run
    done = subprocess.run(["systemctl", "reload", NETWORKD], check=False, capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        last = said[-1] if said else f"exit status {done.returncode}"
        raise NetworkSettingError(NetworkRefusal.NOT_APPLIED,
                                  f"systemd-networkd did not reload: {last}")


def take_from(folder: Path, *, network_file: Path = NETWORK_FILE,
              reload: Callable[[], None] = reload_networkd,
              managed: Callable[[], bool] = networkd_manages_the_network) -> NetworkResult:
    """Apply the medium's network setting, if it has one: write or remove the box's fixed
    address file and reload systemd-networkd. Nothing is changed when the file is refused."""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    try:
        text = read_from(folder)
        if text is None:
            return NetworkResult(NetworkOutcome.NONE, at=now)
        setting = parse(text)
        if not managed():
            raise NetworkSettingError(NetworkRefusal.NOT_MANAGED,
                                      "this box's network is not run by systemd-networkd "
                                      "(the appliance image's): set its address in its own "
                                      "system's settings")
    except NetworkSettingError as exc:
        return NetworkResult(NetworkOutcome.REFUSED, refusal=exc.refusal.value,
                             reason=str(exc), at=now)
    try:
        before: bytes | None = network_file.read_bytes()
    except FileNotFoundError:
        before = None
    except OSError as exc:
        return NetworkResult(NetworkOutcome.REFUSED, refusal=NetworkRefusal.NOT_APPLIED.value,
                             reason=f"the setting could not be applied: {exc}", at=now)
    try:
        _write(network_file, None if setting is None
               else setting.network_file(f"a USB stick at {now}").encode("utf-8"))
        reload()
    except (OSError, subprocess.SubprocessError, NetworkSettingError) as exc:
        _restore(network_file, before, reload)
        return NetworkResult(NetworkOutcome.REFUSED, refusal=NetworkRefusal.NOT_APPLIED.value,
                             reason=f"the setting could not be applied: {exc}", at=now)
    if setting is None:
        return NetworkResult(NetworkOutcome.DHCP, setting="DHCP", at=now)
    return NetworkResult(NetworkOutcome.FIXED, setting=setting.summary(), at=now)


def _write(network_file: Path, content: bytes | None) -> None:
    if content is None:
        network_file.unlink(missing_ok=True)
    else:
        write_bytes_atomically(network_file, content, 0o644)


def _restore(network_file: Path, before: bytes | None, reload: Callable[[], None]) -> None:
    """Put the file back as it was, so the next boot does not take a half-applied setting."""
    try:
        _write(network_file, before)
        reload()
    except (OSError, subprocess.SubprocessError, NetworkSettingError) as exc:
        log.error("%s could not be put back as it was: %s", network_file, exc)


def record(result: NetworkResult, path: Path = OUTCOME_PATH) -> None:
    """Keep the outcome where the console's banner reads it (root's, readable by all)."""
    stick_outcome.record(result, path)


def read_outcome(path: Path | None = None) -> NetworkResult | None:
    """The last stick's network setting since the boot (at ``OUTCOME_PATH``), or None."""
    return stick_outcome.read(path or OUTCOME_PATH, NetworkResult, NetworkOutcome)


def banner_line(result: NetworkResult | None) -> str | None:
    """What the screen says about the last stick's network setting."""
    if result is None or result.outcome is NetworkOutcome.NONE:
        return None
    if result.outcome is NetworkOutcome.REFUSED:
        return f"network setting on the USB stick refused: {result.reason}"
    if result.outcome is NetworkOutcome.DHCP:
        return "network: DHCP on every wired port (set from a USB stick)"
    return f"network: fixed address {result.setting} (set from a USB stick)"
