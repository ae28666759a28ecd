"""The hospital's Flower SuperLink and the way a run reaches it (decision 0056).

The commands are Flower's own (``flower-superlink``, ``flwr run``, ``flwr log``); this module
writes their command lines in one place (``clinibox central superlink`` and ``federated-run``, the
benchmark and the tests use them) and checks, before any of them starts, what would make
them fail later with nothing said: TLS files that do not belong together, a SuperLink that
does not answer, or one whose certificate the boxes' CA does not vouch for. Problems are
codes; the command line says them in the reader's words.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import socket
import ssl
import sys
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from central.federated.serverapp_check import install_wrapper
from clinibox_common.contracts.federated import RUNS_ENV
from clinibox_common.contracts.run_claim import RUN_NUMBER

#: clinibox's Flower App (its pyproject.toml names the ServerApp and the ClientApp)
FLOWER_APP = Path(__file__).resolve().parent / "flower_app"
#: the federation's name in the ``flwr`` command's configuration
FEDERATION = "hospital"
#: the port a SuperLink serves the boxes and ``flwr run`` on unless told otherwise
DEFAULT_PORT = 9092
#: where the SuperLink's own ServerApp process reaches it when it listens on every address,
#: checking its certificate: the certificate must name it, or every run waits for ever with
#: nothing said
LOOPBACK = ipaddress.ip_address("127.0.0.1")
#: a terminal's colour and style codes, which Rich may put around Flower's JSON
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def flower_bin() -> Path:
    """The folder of Flower's commands: beside the Python that runs clinibox."""
    return Path(sys.executable).parent


def superlink_command(certificate: Path, key: Path, ca: Path, host: str, port: int,
                      database: Path) -> list[str]:
    """``flower-superlink`` over TLS with the hospital's certificate, its state in
    ``database``. It installs nothing a run's bundle asks for: clinibox's apps are installed
    with clinibox, and nothing is downloaded at run time."""
    return [str(flower_bin() / "flower-superlink"), "--ssl-ca-certfile", str(ca),
            "--ssl-certfile", str(certificate), "--ssl-keyfile", str(key), "--host", host,
            "--port", str(port), "--database", str(database),
            "--disable-runtime-dependency-installation"]


def flower_environment(home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of Flower's commands: their own home (``FLWR_HOME``) and Flower's
    other commands (``flower-superexec``, which the SuperLink starts by name) first on PATH."""
    base = dict(os.environ if base is None else base)
    return {**base, "FLWR_HOME": str(home),
            "PATH": f"{flower_bin()}{os.pathsep}{base.get('PATH', '')}"}


def superlink_environment(folder: Path, runs: Path,
                          base: dict[str, str] | None = None) -> dict[str, str]:
    """The SuperLink's environment: Flower's home in ``folder``; first on PATH, the ServerApp
    process that checks a run's bundle before Flower installs it (``serverapp_check.py``; its
    wrapper in ``folder``/bin); and the runs folder, outside which its ServerApp neither reads
    nor writes."""
    env = flower_environment(folder / "flwr-home", base)
    env["PATH"] = f"{install_wrapper(folder / 'bin')}{os.pathsep}{env['PATH']}"
    env[RUNS_ENV] = str(runs.resolve())
    return env


def write_flower_home(home: Path, address: str, ca: Path) -> Path:
    """The ``flwr`` command's configuration in ``home``: the federation ``hospital`` at
    ``address``, its certificate checked against ``ca``."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\n'
                    f"address = {_toml(address)}\nroot-certificates = {_toml(str(ca))}\n")
    return path


def run_command(app: Path, config: dict[str, object]) -> list[str]:
    """``flwr run`` of the Flower App ``app`` at the federation, with ``config`` as its run
    configuration: it returns once the SuperLink has the run, printing (as JSON) the run's
    number, which :func:`started_run` reads. The folder's claim comes next
    (``clinibox_common/contracts/run_claim.py``), then :func:`log_command` follows the run
    to its end."""
    pairs = " ".join(f"{k}={_toml(v)}" for k, v in config.items())
    return [str(flower_bin() / "flwr"), "run", str(app), FEDERATION, "--format", "json",
            "--run-config", pairs]


def _json_answer(output: str) -> dict | None:
    """The JSON object a ``flwr … --format json`` command printed, colours taken out (Flower
    prints it through Rich, which colours it where ``FORCE_COLOR`` is set), or None."""
    with contextlib.suppress(ValueError):
        answer = json.loads(ANSI_CODES.sub("", output))
        return answer if isinstance(answer, dict) else None
    return None


def started_run(output: str) -> int | None:
    """The run's number in ``flwr run --format json``'s output, or None when it started none
    (its output then says why)."""
    answer = _json_answer(output) or {}
    number = str(answer.get("run-id", ""))
    if answer.get("success") is True and RUN_NUMBER.fullmatch(number):
        return int(number)
    return None


def status_command(run_id: int) -> list[str]:
    """``flwr ls`` of the run ``run_id``, as JSON: its status (:func:`run_status`)."""
    return [str(flower_bin() / "flwr"), "ls", FEDERATION, "--run-id", str(int(run_id)),
            "--format", "json"]


def run_status(output: str) -> str | None:
    """The run's status in ``flwr ls --format json``'s output (``pending``, ``starting``,
    ``running``, ``finished:completed``, ``finished:failed``, ``finished:stopped``), or None
    when the SuperLink could not be asked."""
    answer = _json_answer(output) or {}
    runs = answer.get("runs") if answer.get("success") is True else None
    if isinstance(runs, list) and len(runs) == 1 and isinstance(runs[0], dict):
        status = runs[0].get("status")
        return status if isinstance(status, str) else None
    return None


def command_environment(home: Path) -> dict[str, str]:
    """The environment of the ``flwr`` commands whose JSON is read: Flower's home, and no
    forced colours."""
    env = flower_environment(home)
    for name in ("FORCE_COLOR", "CLICOLOR_FORCE"):
        env.pop(name, None)
    return env


def log_command(run_id: int) -> list[str]:
    """``flwr log``: the ServerApp's log of the run ``run_id``, streamed until the run ends."""
    return [str(flower_bin() / "flwr"), "log", str(int(run_id)), FEDERATION, "--stream"]


def _toml(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def split_address(address: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` too) as (host, port), or None when it is not one."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def serverapp_name(host: str) -> x509.GeneralName:
    """The name the SuperLink's own ServerApp process reaches it by when it listens on
    ``host`` (Flower's ``resolve_bind_address``: a bind-all address becomes loopback)."""
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        return x509.IPAddress(LOOPBACK)
    if host == "::":
        return x509.IPAddress(ipaddress.ip_address("::1"))
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def tls_problem(certificate: Path, key: Path, ca: Path, host: str = "0.0.0.0") -> str | None:
    """The code of what is wrong with the SuperLink's TLS files, or None: each readable, the
    key the certificate's own, the certificate valid today, naming the address its own
    ServerApp reaches it at (:func:`serverapp_name` of ``host``), and issued, through the
    intermediates in the certificate's file, by a CA of the CA file (CA:TRUE, allowed to sign
    certificates, valid today), as a box's TLS library checks it."""
    try:
        texts = certificate.read_bytes(), key.read_bytes(), ca.read_bytes()
    except OSError:
        return "file_unreadable"
    try:
        chain = x509.load_pem_x509_certificates(texts[0])
    except ValueError:
        return "certificate_unreadable"
    try:
        private = serialization.load_pem_private_key(texts[1], password=None)
    except (ValueError, TypeError):
        return "key_unreadable"
    try:
        authorities = x509.load_pem_x509_certificates(texts[2])
    except ValueError:
        return "ca_unreadable"
    leaf = chain[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(serialization.Encoding.DER, public) != \
            leaf.public_key().public_bytes(serialization.Encoding.DER, public):
        return "key_not_the_certificates"
    now = datetime.now(timezone.utc)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        return "certificate_expired"
    name = serverapp_name(host)
    if name.value not in _names(leaf, type(name)):
        return "certificate_lacks_serverapp_name"
    if not _issued_by(chain, authorities, now):
        return "certificate_not_issued_by_ca"
    return None


def _issued_by(chain: list[x509.Certificate], authorities: list[x509.Certificate],
               now: datetime) -> bool:
    """Whether ``chain[0]`` goes up to one of ``authorities`` through ``chain[1:]``, each
    issuer a CA (basic constraints CA:TRUE, allowed to sign certificates) valid ``now``."""
    current, rest = chain[0], list(chain[1:])
    while True:
        if any(_signs(authority, current, now) for authority in authorities):
            return True
        up = next((c for c in rest if _signs(c, current, now)), None)
        if up is None:
            return False
        current = up
        rest.remove(up)


def _signs(issuer: x509.Certificate, cert: x509.Certificate, now: datetime) -> bool:
    if issuer.subject != cert.issuer or \
            not issuer.not_valid_before_utc <= now <= issuer.not_valid_after_utc:
        return False
    try:
        if not issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        return False
    try:
        if not issuer.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
            return False
    except x509.ExtensionNotFound:
        pass
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _names(cert: x509.Certificate, kind: type[x509.GeneralName]) -> list[object]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(names.get_values_for_type(kind))


def superlink_problem(address: str, ca: Path, timeout: float = 10.0) -> str | None:
    """The code of why ``flwr run`` could not reach a SuperLink at ``address`` trusting
    ``ca``, or None: something must answer there, over TLS, with a certificate the CA issued
    for that host name (the boxes check the same)."""
    parts = split_address(address)
    if parts is None:
        return "address_not_host_port"
    try:
        context = ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError):
        return "ca_unreadable"
    try:
        with socket.create_connection(parts, timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=parts[0]):
            return None
    except ssl.SSLCertVerificationError:
        return "superlink_certificate_refused"
    except (OSError, ssl.SSLError):
        return "superlink_not_answering"
