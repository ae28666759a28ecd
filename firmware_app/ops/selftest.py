"""``clinibox selftest``: is this box ready to work? A pass/fail table and an exit code.

Checks, each giving ``(name, status, detail)``:

* **model package**: the package the box would run verifies (signature by a
  trusted key, every sha256);
* **golden cases**: its golden cases reproduce within tolerance on the
  backend and artifact the service would choose;
* **DICOM echo**: a real C-ECHO to the running service on ``[dicom] port``
  (over TLS when ``[dicom] tls_enabled``), as a modality would send it;
* **disk space**: free space against ``[storage] min_free_mb`` (WARN below
  twice that), use against ``[retention] max_disk_used_pct`` (WARN above);
* **clock**: not before the newest of the release date, the package's
  creation, the client certificate's start and the newest time in the box's
  database (less a day), and not absurdly far after them: a dead RTC battery
  that sends the clock back to 1970 or 2000 is the case that matters;
* **broker**: (only when ``[mqtt] host`` is set) a real MQTT CONNECT over TLS
  with the client certificate, naming what failed: the broker's certificate,
  this box's certificate refused in the handshake, connection refused, not
  authorised, or no answer in time;
* **device identity** and **hospital key**: readable (nothing is created).

Statuses: PASS, WARN (works, but look at it), SKIP (not configured), FAIL.
The exit status is 0 when nothing failed, 1 otherwise (2: the config is bad).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from firmware_app.contracts.manifest import ModelPackage, PackageError
from firmware_app.errors import EXIT_FAIL, EXIT_OK
from firmware_app.settings import box as config_module
from firmware_app.settings.box import Config
from firmware_app.storage import db

PASS, WARN, SKIP, FAIL = "PASS", "WARN", "SKIP", "FAIL"
#: no box running this software can have a clock before this day
RELEASE_DATE = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
#: evidence of "now" (rows, certificates) may be this far ahead of a good clock
CLOCK_SLACK = dt.timedelta(days=1)
#: a clock this far after all evidence is wrong too (and evidence beyond it is ignored)
CLOCK_MAX_AHEAD = dt.timedelta(days=20 * 365)
DEFAULT_TIMEOUT = 5.0
SELFTEST_AE = "SELFTEST"


class Check(NamedTuple):
    """One line of the table: ``(name, PASS|WARN|SKIP|FAIL, detail)``."""

    name: str
    status: str
    detail: str


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# -- model ------------------------------------------------------------------------

def check_package(config: Config) -> tuple[Check, ModelPackage | None]:
    """Verify the package the box would run; the package too when it passed."""
    from firmware_app.models.package import load_package
    from firmware_app.models.store import resolve_package_root

    name = "model package"
    try:
        root = resolve_package_root(config)
        package = load_package(root, config.trusted_key_paths)
    except (OSError, ValueError) as exc:  # PackageError is a ValueError
        return Check(name, FAIL, str(exc)), None
    count = len(package.artifacts)
    return Check(name, PASS, f"{package.model_id}: signed by trusted key {package.signer}, "
                             f"{count} artifact{'s' if count != 1 else ''} match their sha256 "
                             f"({root})"), package


def check_signing_keys(config: Config) -> Check:
    """Which keys may sign the packages this box runs; WARN while the demo key is trusted."""
    from firmware_app.settings.box import DEMO_TRUST_WARNING

    name = "signing keys"
    count = len(config.trusted_key_paths)
    if config.trusts_demo_key:
        return Check(name, WARN, DEMO_TRUST_WARNING)
    if not count:
        return Check(name, FAIL, "no key is trusted to sign model packages: list yours in "
                                 "[models] trusted_keys (clinibox provision does)")
    return Check(name, PASS, f"{count} key{'s' if count != 1 else ''} trusted; "
                             "not the demo key")


def check_golden_cases(config: Config, package: ModelPackage | None) -> Check:
    """Run the package's golden cases on the backend the service would choose (and keep
    the runtime timings it measured for the service's next start)."""
    from firmware_app.models.golden import check_golden
    from firmware_app.models.store import runtime_timings_path

    name = "golden cases"
    if package is None:
        return Check(name, FAIL, "not run: the model package did not verify")
    try:
        report = check_golden(package, config.runtime,
                              runtime_timings_path(config, package.name))
    except PackageError as exc:
        return Check(name, FAIL, str(exc))
    return Check(name, PASS if report.passed else FAIL, report.describe())


# -- DICOM --------------------------------------------------------------------------

def _dicom_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _tls_context(config: Config) -> ssl.SSLContext:
    """A client context for our own listener: it must present our [dicom] tls_cert."""
    dicom = config.dicom
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we compare the certificate with ours instead
    if dicom.tls_ca:  # senders need a certificate: present the box's own
        context.load_cert_chain(dicom.tls_cert, dicom.tls_key)
    return context


def _tls_probe(config: Config, host: str, timeout: float) -> str:
    """Handshake once; '' when the listener presents our certificate, else the problem."""
    dicom = config.dicom
    try:
        ours = x509.load_pem_x509_certificate(Path(dicom.tls_cert).read_bytes())
        context = _tls_context(config)
    except (OSError, ValueError, ssl.SSLError) as exc:
        return f"cannot load [dicom] tls_cert/tls_key: {exc}"
    try:
        with socket.create_connection((host, dicom.port), timeout=timeout) as raw, \
                context.wrap_socket(raw) as tls:
            presented = tls.getpeercert(binary_form=True)
    except ConnectionRefusedError:
        return f"nothing answers on port {dicom.port} — is clinibox running?"
    except ssl.SSLError as exc:
        return f"TLS handshake with the DICOM listener failed: {exc.reason or exc}"
    except OSError as exc:
        return f"cannot reach {host}:{dicom.port}: {exc.strerror or exc}"
    if presented != ours.public_bytes(Encoding.DER):
        return (f"the TLS listener on port {dicom.port} presents another certificate than "
                "[dicom] tls_cert: is another service on this port?")
    return ""


def check_dicom_echo(config: Config, timeout: float) -> Check:
    """A C-ECHO to the running service, with the AE titles a modality would use."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    name = "DICOM echo"
    dicom = config.dicom
    if not dicom.enabled:
        return Check(name, SKIP, "the Storage SCP is off ([dicom] enabled = false)")
    host = _dicom_host(dicom.host)
    calling = dicom.allowed_calling_aets[0] if dicom.allowed_calling_aets else SELFTEST_AE
    where = f"{dicom.ae_title}@{host}:{dicom.port}"
    tls_args = None
    if dicom.tls_enabled:
        problem = _tls_probe(config, host, timeout)
        if problem:
            return Check(name, FAIL, problem)
        tls_args = (_tls_context(config), None)
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    started = time.monotonic()
    quiet = logging.getLogger("pynetdicom")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the table says what went wrong
    assoc = ae.associate(host, dicom.port, ae_title=dicom.ae_title, tls_args=tls_args)
    try:
        if assoc.is_established:
            status = assoc.send_c_echo()
            assoc.release()
            code = getattr(status, "Status", None)
            if code == 0x0000:
                ms = (time.monotonic() - started) * 1000
                return Check(name, PASS, f"{where} answered C-ECHO from {calling} in {ms:.0f} ms"
                                         f"{' over TLS' if tls_args else ''}")
            return Check(name, FAIL, f"{where} answered C-ECHO with status "
                                     f"{'none' if code is None else hex(code)}")
        if assoc.is_rejected:
            rsp = assoc.acceptor.primitive
            return Check(name, FAIL, f"{where} rejected the association from {calling}: "
                                     f"{rsp.reason_str} ({rsp.result_str})")
    finally:
        ae.shutdown()
        quiet.setLevel(level)
    if not _listening(host, dicom.port, timeout):
        return Check(name, FAIL, f"nothing answers on port {dicom.port} — is clinibox running?")
    if tls_args and dicom.tls_ca:
        return Check(name, WARN, f"{where} answers TLS with this box's certificate, but the "
                                 "association was aborted: it requires a sender certificate "
                                 "from [dicom] tls_ca, and the box's own is not one")
    return Check(name, FAIL, f"{where} accepted the connection but aborted the association"
                             f"{'' if tls_args else ' (does it expect TLS?)'}")


def _listening(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# -- disk and clock -----------------------------------------------------------------

def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(config: Config) -> Check:
    """Free space against min_free_mb, use against max_disk_used_pct."""
    where = _existing(config.state_dir)
    usage = shutil.disk_usage(where)
    free_mb = usage.free // 2**20
    used_pct = 100.0 * usage.used / usage.total if usage.total else 100.0  # as retention counts
    least, most = config.storage.min_free_mb, config.retention.max_disk_used_pct
    detail = (f"{free_mb} MB free, {used_pct:.0f}% used on {where} (min_free_mb {least}, "
              f"max_disk_used_pct {most:g})")
    if free_mb < least:
        return Check("disk space", FAIL, f"{detail}: new images are refused below min_free_mb")
    if free_mb < 2 * least:
        return Check("disk space", WARN, f"{detail}: less than twice min_free_mb left")
    if used_pct > most:
        return Check("disk space", WARN, f"{detail}: retention is deleting the oldest images")
    return Check("disk space", PASS, detail)


def _db_times(config: Config) -> list[tuple[dt.datetime, str]]:
    return [(dt.datetime.fromtimestamp(value, dt.timezone.utc), where)
            for value, where in db.newest_times(config.database_path)]


def _evidence(config: Config, package: ModelPackage | None) -> list[tuple[dt.datetime, str]]:
    """Times the clock cannot be much before: (time, where it comes from)."""
    found = list(_db_times(config))
    if package is not None:
        manifest = package.manifest
        stamps = (("signed", (manifest.get("signature") or {}).get("signed_at")),
                  ("created", (manifest.get("provenance") or {}).get("created")))
        for what, stamp in stamps:
            if not isinstance(stamp, str):
                continue
            try:
                moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            except ValueError:
                continue
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.timezone.utc)
            found.append((moment, f"model package {package.model_id} {what}"))
    if config.mqtt.cert_file:
        try:
            cert = x509.load_pem_x509_certificate(Path(config.mqtt.cert_file).read_bytes())
            found.append((cert.not_valid_before_utc, "client certificate valid from"))
        except (OSError, ValueError):
            pass
    return found


def check_clock(config: Config, package: ModelPackage | None,
                now: dt.datetime | None = None) -> Check:
    """Refuse a clock that is obviously wrong: before the evidence, or decades after it."""
    now = now or dt.datetime.now(dt.timezone.utc)
    ceiling_of_evidence = RELEASE_DATE + CLOCK_MAX_AHEAD
    floor, why = RELEASE_DATE, "this software's release"
    for moment, source in _evidence(config, package):
        if moment > ceiling_of_evidence:  # written while the clock was wrong: no evidence
            continue
        if moment - CLOCK_SLACK > floor:
            floor, why = moment - CLOCK_SLACK, source
    if now < floor:
        return Check("clock", FAIL, f"the clock says {_when(now)}, before {_when(floor)} "
                                    f"({why}{', less a day' if floor != RELEASE_DATE else ''}): "
                                    "set the clock (dead RTC battery?)")
    ceiling = floor + CLOCK_SLACK + CLOCK_MAX_AHEAD
    if now > ceiling:
        return Check("clock", FAIL, f"the clock says {_when(now)}, absurdly far after "
                                    f"{_when(floor)} ({why}): set the clock")
    return Check("clock", PASS, f"{_when(now)}, not before {_when(floor)} ({why})")


# -- broker ---------------------------------------------------------------------------

class _Connack:
    """What the probe client saw: CONNACK, a lost link, and paho's log lines."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reason: Any = None
        self.lost = False
        self.log: list[str] = []

    def on_connect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any,
                   _properties: Any) -> None:
        self.reason = reason
        self.done.set()

    def on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, _reason: Any,
                      _properties: Any) -> None:
        self.lost = True
        self.done.set()

    def on_log(self, _client: Any, _userdata: Any, _level: int, text: str) -> None:
        self.log.append(text)

    def socket_error(self) -> str:
        """The socket error paho logged when the link broke, if any."""
        for line in reversed(self.log):
            if "failed to receive on socket" in line:
                return _ssl_text(line.split(":", 1)[-1].strip())
        return ""


def _ssl_text(text: str) -> str:
    """``[SSL: X] tlsv1 alert unknown ca (_ssl.c:2580)`` → ``tlsv1 alert unknown ca``."""
    return text.split("] ", 1)[-1].split(" (_ssl")[0]


def _tls_alert(config: Config, timeout: float) -> str:
    """Handshake with the client certificate and listen, sending nothing: the broker's alert.

    When the broker refuses the certificate (after the handshake, under TLS
    1.3) a client that has already sent its CONNECT may see only a reset; this
    probe sends nothing, so the alert is read before the connection closes.
    """
    m = config.mqtt
    try:
        context = ssl.create_default_context(cafile=m.ca_file)
        context.load_cert_chain(m.cert_file, m.key_file)
        with socket.create_connection((m.host, m.port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=m.host) as tls:
            tls.recv(1)
    except ssl.SSLError as exc:
        return _ssl_text(str(exc))
    except OSError:
        return ""
    return ""


def _client_cert_problem(config: Config, now: dt.datetime) -> str:
    try:
        cert = x509.load_pem_x509_certificate(Path(config.mqtt.cert_file).read_bytes())
    except (OSError, ValueError) as exc:
        return f"cannot read [mqtt] cert_file {config.mqtt.cert_file}: {exc}"
    if now > cert.not_valid_after_utc:
        return (f"the client certificate expired on {_when(cert.not_valid_after_utc)}: ask the "
                "hospital for a new enrolment bundle")
    if now < cert.not_valid_before_utc:
        return (f"the client certificate is not valid before {_when(cert.not_valid_before_utc)} "
                "(is the clock right?)")
    return ""


def check_broker(config: Config, timeout: float) -> Check:
    """A real MQTT CONNECT over TLS with the client certificate; the failure named."""
    import paho.mqtt.client as mqtt

    name, m = "broker", config.mqtt
    if not m.host:
        return Check(name, SKIP, "no broker configured ([mqtt] host is empty)")
    where = f"{m.host}:{m.port}"
    problem = _client_cert_problem(config, dt.datetime.now(dt.timezone.utc))
    if problem:
        return Check(name, FAIL, problem)
    seen = _Connack()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                         client_id=f"clinibox-{config.telemetry.clinic}-"
                                   f"{config.telemetry.device}-selftest",
                         reconnect_on_failure=False)
    client.on_connect, client.on_disconnect = seen.on_connect, seen.on_disconnect
    client.on_log = seen.on_log
    client.connect_timeout = timeout
    try:
        client.tls_set(ca_certs=m.ca_file, certfile=m.cert_file, keyfile=m.key_file,
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)
    except (OSError, ValueError, ssl.SSLError) as exc:
        return Check(name, FAIL, f"cannot load [mqtt] ca_file/cert_file/key_file: {exc}")
    started = time.monotonic()
    try:
        client.connect(m.host, m.port, keepalive=max(10, int(timeout) * 2))
    except ssl.SSLCertVerificationError as exc:
        return Check(name, FAIL, f"TLS handshake with {where} failed: the broker's certificate "
                                 f"is not accepted ({exc.verify_message})")
    except ssl.SSLError as exc:
        return Check(name, FAIL, f"TLS handshake refused by {where}: {exc.reason or exc}")
    except ConnectionRefusedError:
        return Check(name, FAIL, f"connection refused by {where}: no broker listens there")
    except socket.gaierror as exc:
        return Check(name, FAIL, f"cannot resolve the broker host {m.host!r}: {exc.strerror}")
    except TimeoutError:
        return Check(name, FAIL, f"timeout: no answer from {where} within {timeout:g} s")
    except OSError as exc:
        return Check(name, FAIL, f"cannot reach {where}: {exc.strerror or exc}")
    try:
        deadline = started + timeout
        while not seen.done.is_set() and time.monotonic() < deadline:
            if client.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
                seen.lost = True
                break
        ms = (time.monotonic() - started) * 1000
        if seen.reason is not None and not seen.reason.is_failure:
            client.disconnect()
            return Check(name, PASS, f"{where} accepted CONNECT over TLS as "
                                     f"{config.telemetry.clinic}/{config.telemetry.device} "
                                     f"in {ms:.0f} ms")
        if seen.reason is not None:
            label = "not authorised" if seen.reason.value in (0x86, 0x87) else "refused"
            return Check(name, FAIL, f"{where} {label}: CONNACK {seen.reason}")
        if seen.lost:
            alert = _tls_alert(config, timeout) or seen.socket_error()
            return Check(name, FAIL, f"TLS handshake refused by {where}: the broker does not "
                                     "accept this box's client certificate"
                                     f"{f' ({alert})' if alert else ''}")
        return Check(name, FAIL, f"timeout: no CONNACK from {where} within {timeout:g} s")
    finally:
        client.loop_stop()
        if client.is_connected():
            client.disconnect()


# -- identity -------------------------------------------------------------------------

def check_device_identity(config: Config) -> Check:
    """The device signing key and study-reference secret exist and read (nothing made)."""
    from firmware_app.contracts import signing

    name = "device identity"
    key_path, secret_path = config.device_key_path, config.device_secret_path
    for path, what in ((key_path, "device key"), (secret_path, "study-reference secret")):
        if not path.exists():
            return Check(name, FAIL, f"no {what} at {path}: run clinibox provision")
    try:
        key = signing.load_private_key(key_path)
        secret = secret_path.read_bytes()
    except (OSError, ValueError) as exc:
        return Check(name, FAIL, f"cannot read the identity: {exc}")
    if len(secret) < 16:
        return Check(name, FAIL, f"study-reference secret {secret_path} is too short")
    return Check(name, PASS, f"{config.telemetry.clinic}/{config.telemetry.device}, key "
                             f"{signing.key_id(key.public_key())} ({key_path})")


def check_hospital_key(config: Config) -> Check:
    """The hospital's X25519 public key, which telemetry is sealed to, reads."""
    from firmware_app.contracts.envelope import load_x25519_public

    path = config.telemetry.hospital_key
    if not path:
        return Check("hospital key", SKIP, "none configured ([telemetry] hospital_key): "
                                           "telemetry waits in the outbox")
    try:
        load_x25519_public(Path(path))
    except (OSError, ValueError) as exc:
        return Check("hospital key", FAIL, f"cannot load {path}: {exc}")
    return Check("hospital key", PASS, f"X25519 public key {path}")


# -- the whole --------------------------------------------------------------------------

def _guarded(name: str, check: Callable[[], Check]) -> Check:
    """Run one check; a check that crashes is a FAIL with why, never a traceback."""
    try:
        return check()
    except Exception as exc:
        return Check(name, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}")


def run_checks(config: Config, timeout: float = DEFAULT_TIMEOUT) -> list[Check]:
    """Every check, in table order."""
    package: ModelPackage | None = None

    def package_check() -> Check:
        nonlocal package
        check, package = check_package(config)
        return check

    steps: list[tuple[str, Callable[[], Check]]] = [
        ("model package", package_check),
        ("golden cases", lambda: check_golden_cases(config, package)),
        ("DICOM echo", lambda: check_dicom_echo(config, timeout)),
        ("disk space", lambda: check_disk(config)),
        ("clock", lambda: check_clock(config, package)),
        ("broker", lambda: check_broker(config, timeout)),
        ("device identity", lambda: check_device_identity(config)),
        ("hospital key", lambda: check_hospital_key(config)),
        ("signing keys", lambda: check_signing_keys(config)),
    ]
    return [_guarded(name, step) for name, step in steps]


def render_table(checks: list[Check]) -> str:
    """The table people read: one line per check, then the verdict."""
    width = max(len(c.name) for c in checks)
    lines = [f"{'CHECK':<{width}}  RESULT  DETAIL"]
    lines += [f"{c.name:<{width}}  {c.status:<6}  {c.detail}" for c in checks]
    failed = [c.name for c in checks if c.status == FAIL]
    counts = {s: sum(c.status == s for c in checks) for s in (PASS, WARN, SKIP, FAIL)}
    summary = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
    lines.append(f"selftest {'FAILED: ' + ', '.join(failed) if failed else 'passed'} "
                 f"({summary})")
    return "\n".join(lines) + "\n"


def cmd_selftest(args: argparse.Namespace) -> int:
    """Run every check, print the table (or JSON); 0 when nothing failed, else 1."""
    config = config_module.load(getattr(args, "config", None))
    checks = run_checks(config, args.timeout)
    failed = any(c.status == FAIL for c in checks)
    if args.json:
        print(json.dumps({"passed": not failed, "checks": [c._asdict() for c in checks]},
                         indent=2))
    else:
        sys.stdout.write(render_table(checks))
    return EXIT_FAIL if failed else EXIT_OK


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``selftest`` on the main parser."""
    p = with_config(sub.add_parser(
        "selftest", help="check model, DICOM, disk, clock, broker and keys; exit 1 if any fails"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"seconds each network check may take (default {DEFAULT_TIMEOUT:g})")
    p.set_defaults(func=cmd_selftest)
