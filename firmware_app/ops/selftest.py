"""``clinibox selftest``: is this box ready to work? A pass/fail table and an exit code.

Checks, each giving ``(name, status, detail)``:

* **model package**: the package the box would run verifies (signature by a
  trusted key, every sha256); without one the box waits for a model (FAIL);
* **golden cases**: its golden cases reproduce within tolerance on the
  backend and artifact the service would choose;
* **DICOM echo**: a real C-ECHO to the running service on ``[dicom] port``
  (over TLS when ``[dicom] tls_enabled``), as a modality would send it, naming who
  answered: clinibox (its native or Python receiver, and the process) or another
  program (Orthanc, another receiver) that holds the port, which then FAILs;
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
* **device identity** and **hospital key**: readable (nothing is created);
* **appointment list**: (only when ``[worklist] enabled``) one real C-FIND of today's
  scheduled steps, as the poller asks it, naming why it failed in the device page's words.

Statuses: PASS, WARN (works, but look at it), SKIP (not configured), FAIL.
The exit status is 0 when nothing failed, 1 otherwise (2: the config is bad).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from clinibox_common.contracts.manifest import ModelPackage, PackageError
from clinibox_common.errors import EXIT_FAIL, EXIT_OK
from clinibox_common.i18n import ENGLISH, N_, current, gettext, ngettext, use_locale
from clinibox_common.i18n.error_words import error_words
from clinibox_common.i18n.text import display_width, ljust
from firmware_app.settings import box as config_module
from firmware_app.settings.box import Config
from firmware_app.storage import db
from firmware_app.storage.disk import disk_figures

if TYPE_CHECKING:
    from engine.golden import GoldenReport

PASS, WARN, SKIP, FAIL = "PASS", "WARN", "SKIP", "FAIL"
_ = gettext
#: the table's words for the statuses and the checks (``--json`` keeps the English names)
STATUS_WORDS = {PASS: N_("PASS"), WARN: N_("WARN"), SKIP: N_("SKIP"), FAIL: N_("FAIL")}
CHECK_NAMES = {
    "model package": N_("model package"), "golden cases": N_("golden cases"),
    "DICOM echo": N_("DICOM echo"), "disk space": N_("disk space"), "clock": N_("clock"),
    "broker": N_("broker"), "device identity": N_("device identity"),
    "hospital key": N_("hospital key"), "signing keys": N_("signing keys"),
    # TRANSLATORS: the clinic's Modality Worklist (预约名单), not the viewer's worklist
    "appointment list": N_("appointment list"),
}
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
    from engine.model_package import load_package
    from firmware_app.models.store import resolve_package_root

    name = "model package"
    try:
        root = resolve_package_root(config)
        package = load_package(root, config.trusted_key_paths)
    except (OSError, ValueError) as exc:  # PackageError is a ValueError
        return Check(name, FAIL, _("waiting for a model: %(why)s; images are received and held "
                                   "until the hospital's rollout or `clinibox model install` "
                                   "gives one", why=error_words(exc))), None
    return Check(name, PASS, ngettext(
        "%(model)s: signed by trusted key %(key)s, %(num)d artifact matches its sha256 (%(root)s)",
        "%(model)s: signed by trusted key %(key)s, %(num)d artifacts match their sha256 "
        "(%(root)s)", len(package.artifacts), model=package.model_id, key=package.signer,
        root=root)), package


def check_signing_keys(config: Config) -> Check:
    """Which keys may sign the packages this box runs; WARN while the demo key is trusted."""
    from firmware_app.settings.models import DEMO_TRUST_WARNING

    name = "signing keys"
    count = len(config.trusted_key_paths)
    if config.trusts_demo_key:
        return Check(name, WARN, _(DEMO_TRUST_WARNING))
    if not count:
        return Check(name, FAIL, _("no key is trusted to sign model packages: list yours in "
                                   "[models] trusted_keys (clinibox provision does)"))
    return Check(name, PASS, ngettext("%(num)d key trusted; not the demo key",
                                      "%(num)d keys trusted; not the demo key", count))


def check_golden_cases(config: Config, package: ModelPackage | None) -> Check:
    """Run the package's golden cases on the backend the service would choose (and keep
    the runtime timings it measured for the service's next start)."""
    from engine.golden import check_golden
    from firmware_app.models.store import runtime_timings_path

    name = "golden cases"
    if package is None:
        return Check(name, FAIL, _("not run: the model package did not verify"))
    try:
        report = check_golden(package, config.runtime,
                              runtime_timings_path(config, package.name))
    except PackageError as exc:
        return Check(name, FAIL, error_words(exc))
    return Check(name, PASS if report.passed else FAIL, _golden_detail(report))


def _golden_detail(report: GoldenReport) -> str:
    """``GoldenReport.describe`` in the current language (the cases' own lines as they are:
    file names and numbers)."""
    if not report.results:
        return _("%(model)s has no golden cases; the box cannot check it",
                 model=report.model_id)
    good = sum(r.passed for r in report.results)
    line = _("%(good)s/%(total)s golden cases within tolerance on %(backend)s", good=good,
             total=len(report.results), backend=report.backend_label)
    failed = [r.describe() for r in report.results if not r.passed]
    if failed:
        line += _(": ") + _("; ").join(failed)
    if report.fell_back_from:
        line += " " + _("(fell back: %(labels)s failed on this box)",
                        labels=_(", ").join(report.fell_back_from))
    return line


#: ``GoldenReport.describe`` in the current language, for ``clinibox model install`` too
golden_detail = _golden_detail


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
        return _("cannot load [dicom] tls_cert/tls_key: %(error)s", error=error_words(exc))
    try:
        with socket.create_connection((host, dicom.port), timeout=timeout) as raw, \
                context.wrap_socket(raw) as tls:
            presented = tls.getpeercert(binary_form=True)
    except ConnectionRefusedError:
        return _("nothing answers on port %(port)s — is clinibox running?", port=dicom.port)
    except ssl.SSLError as exc:
        return _("TLS handshake with the DICOM listener failed: %(error)s",
                 error=exc.reason or exc)
    except OSError as exc:
        return _("cannot reach %(host)s:%(port)s: %(error)s", host=host, port=dicom.port,
                 error=error_words(exc, exc.strerror or exc))
    if presented != ours.public_bytes(Encoding.DER):
        return _("the TLS listener on port %(port)s presents another certificate than "
                 "[dicom] tls_cert: is another service on this port?", port=dicom.port)
    return ""


#: dcmtk's implementation class UIDs (the native receiver's, and storescp's, Orthanc's …)
DCMTK_UID_ROOT = "1.2.276.0.7230010.3."


class PortOwner(NamedTuple):
    """The process that listens on a TCP port."""

    pid: int
    comm: str
    argv: list[str]


def _listening_sockets(port: int) -> set[str]:
    """``socket:[inode]`` of every TCP socket listening on ``port`` (Linux /proc/net)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" \
                    and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(f"socket:[{fields[9]}]")
    return found


def port_owner(port: int) -> PortOwner | None:
    """The process listening on TCP ``port``; None when unknown (not Linux, nobody, or a
    process of another user, whose open files only root may look into)."""
    sockets = _listening_sockets(port)
    if not sockets:
        return None
    pids = sorted(int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    for pid in pids:  # the oldest first: a receiver before the children it forked
        folder = Path("/proc", str(pid))
        try:
            if not any(os.readlink(fd) in sockets for fd in (folder / "fd").iterdir()):
                continue
            argv = (folder / "cmdline").read_bytes().decode(errors="replace").split("\0")
            return PortOwner(pid, (folder / "comm").read_text().strip(), [a for a in argv if a])
        except OSError:  # not ours to look into, or gone meanwhile
            continue
    return None


def _owner_kind(owner: PortOwner | None) -> str:
    """"native" (clinibox-receiver), "python" (a clinibox command), "other" or "unknown"."""
    from firmware_app.ingest.native_receiver import RECEIVER_NAME

    if owner is None:
        return "unknown"
    names = [Path(arg).name for arg in owner.argv[:3]]
    if owner.comm == RECEIVER_NAME[:15] or RECEIVER_NAME in names[:1]:  # comm: 15 characters
        return "native"
    if "clinibox" in names or any(arg.startswith("firmware_app") for arg in owner.argv[:3]):
        return "python"
    return "other"


def _program(owner: PortOwner | None, name: str, uid: str) -> str:
    """``storescp, pid 1234, implementation OFFIS_DCMTK_367 1.2.276…``."""
    parts = [owner.comm, _("pid %(pid)s", pid=owner.pid)] if owner else [_("process unknown")]
    if name or uid:
        parts.append(_("implementation %(implementation)s",
                       implementation=" ".join(part for part in (name, uid) if part)))
    return _(", ").join(parts)


def _foreign(port: int, program: str) -> str:
    return _("port %(port)s answered by another program (%(program)s): clinibox is not "
             "receiving there; stop that program or change [dicom] port", port=port,
             program=program)


def _who_answered(port: int, name: str, uid: str, owner: PortOwner | None
                  ) -> tuple[str, str]:
    """(PASS, "native receiver, pid 1234"), (WARN, dcmtk answered, process unknown) or
    (FAIL, another program): from what the acceptor announced and who holds the port."""
    from firmware_app.ingest.dicom_scp import IMPLEMENTATION_VERSION_NAME

    kind, dcmtk = _owner_kind(owner), uid.startswith(DCMTK_UID_ROOT)
    pid = _("pid %(pid)s", pid=owner.pid) if owner else _("pid unknown")
    if kind == "native" and dcmtk:
        return PASS, _(", ").join([_("native receiver"), pid])
    if kind == "python" or (kind == "unknown" and name == IMPLEMENTATION_VERSION_NAME):
        return PASS, _(", ").join([_("Python receiver"), pid])
    if kind == "unknown" and dcmtk:
        return WARN, _("a dcmtk receiver (%(implementation)s): clinibox's native receiver or "
                       "another program; this user cannot see which process holds port "
                       "%(port)s (run the self-test as the service user or root)",
                       implementation=name or uid, port=port)
    return FAIL, _foreign(port, _program(owner, name, uid))


def check_dicom_echo(config: Config, timeout: float) -> Check:
    """A C-ECHO to the running service, with the AE titles a modality would use, naming
    whose service answered (clinibox's receiver, or another program on the port)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    name = "DICOM echo"
    dicom = config.dicom
    if not dicom.enabled:
        return Check(name, SKIP, _("the Storage SCP is off ([dicom] enabled = false)"))
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
    owner = port_owner(dicom.port)
    try:
        if assoc.is_established:
            status = assoc.send_c_echo()
            assoc.release()
            ms = f"{(time.monotonic() - started) * 1000:.0f}"
            verdict, who = _who_answered(
                dicom.port, (assoc.acceptor.implementation_version_name or "").strip(),
                (assoc.acceptor.implementation_class_uid or "").strip(), owner)
            code = getattr(status, "Status", None)
            if verdict == FAIL:
                return Check(name, FAIL, who)
            if code != 0x0000:
                return Check(name, FAIL, _("%(where)s answered C-ECHO with status %(status)s",
                                           where=where,
                                           status=_("none") if code is None else hex(code)))
            if verdict == WARN:
                return Check(name, WARN, _("%(where)s answered C-ECHO from %(calling)s in "
                                           "%(ms)s ms, but whose service is unknown: %(who)s",
                                           where=where, calling=calling, ms=ms, who=who))
            if tls_args:
                return Check(name, PASS, _("answered by clinibox (%(who)s) on %(where)s: "
                                           "C-ECHO from %(calling)s in %(ms)s ms over TLS",
                                           who=who, where=where, calling=calling, ms=ms))
            return Check(name, PASS, _("answered by clinibox (%(who)s) on %(where)s: C-ECHO "
                                       "from %(calling)s in %(ms)s ms", who=who, where=where,
                                       calling=calling, ms=ms))
        if _owner_kind(owner) == "other":  # refused or cut off by somebody else's program
            return Check(name, FAIL, _foreign(dicom.port, _program(owner, "", "")))
        if assoc.is_rejected:
            rsp = assoc.acceptor.primitive
            return Check(name, FAIL, _("%(where)s rejected the association from %(calling)s: "
                                       "%(reason)s (%(result)s)", where=where, calling=calling,
                                       reason=rsp.reason_str, result=rsp.result_str))
    finally:
        ae.shutdown()
        quiet.setLevel(level)
    if not _listening(host, dicom.port, timeout):
        return Check(name, FAIL, _("nothing answers on port %(port)s — is clinibox running?",
                                   port=dicom.port))
    if tls_args and dicom.tls_ca:
        return Check(name, WARN, _("%(where)s answers TLS with this box's certificate, but the "
                                   "association was aborted: it requires a sender certificate "
                                   "from [dicom] tls_ca, and the box's own is not one",
                                   where=where))
    if tls_args:
        return Check(name, FAIL, _("%(where)s accepted the connection but aborted the "
                                   "association", where=where))
    return Check(name, FAIL, _("%(where)s accepted the connection but aborted the association "
                               "(does it expect TLS?)", where=where))


def check_worklist(config: Config) -> Check:
    """One C-FIND to the clinic's worklist, as the poller asks it (``ingest/worklist.py``):
    PASS with today's steps, FAIL with why (``worklist_words``), the device page's words."""
    from firmware_app.ingest.worklist import WorklistDown, fetch
    from firmware_app.words import worklist_words

    settings = config.worklist
    where = f"{settings.ae_title}@{settings.host}:{settings.port}"
    try:
        items = fetch(config)
    except WorklistDown as exc:
        return Check("appointment list", FAIL,
                     f"{where}: {worklist_words.not_answering(exc.reason)}")
    except Exception:  # an answer pydicom or the poller cannot read
        return Check("appointment list", FAIL,
                     f"{where}: {worklist_words.not_answering('bad_answer')}")
    return Check("appointment list", PASS, f"{where}: {worklist_words.answering(len(items))}")


def _listening(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# -- disk and clock -----------------------------------------------------------------

def check_disk(config: Config) -> Check:
    """Free space against min_free_mb, use against max_disk_used_pct."""
    figures = disk_figures(config.state_dir)  # the device page's and status's figure
    free_mb, used_pct = figures["free_mb"], figures["used_percent"]
    least, most = config.storage.min_free_mb, config.retention.max_disk_used_pct
    detail = _("%(free)s MB free, %(used)s%% used on the disk mounted at %(where)s "
               "(min_free_mb %(least)s, max_disk_used_pct %(most)s)", free=free_mb,
               used=used_pct, where=figures["mount"], least=least, most=f"{most:g}")
    if free_mb < least:
        return Check("disk space", FAIL, _("%(detail)s: new images are refused below "
                                           "min_free_mb", detail=detail))
    if free_mb < 2 * least:
        return Check("disk space", WARN, _("%(detail)s: less than twice min_free_mb left",
                                           detail=detail))
    if used_pct > most:
        return Check("disk space", WARN, _("%(detail)s: retention is deleting the oldest images",
                                           detail=detail))
    return Check("disk space", PASS, detail)


#: the database's newest times (``db.newest_times``' "newest table.column") in words
DB_TIMES = {"newest instances.received_at": N_("the newest image received"),
            "newest results.created_at": N_("the newest result"),
            "newest events.at": N_("the newest event in the box's log")}


def _db_times(config: Config) -> list[tuple[dt.datetime, str]]:
    return [(dt.datetime.fromtimestamp(value, dt.timezone.utc),
             _(DB_TIMES[where]) if where in DB_TIMES else where)
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
            found.append((moment, _("model package %(model)s signed", model=package.model_id)
                           if what == "signed" else
                           _("model package %(model)s created", model=package.model_id)))
    if config.mqtt.cert_file:
        try:
            cert = x509.load_pem_x509_certificate(Path(config.mqtt.cert_file).read_bytes())
            found.append((cert.not_valid_before_utc, _("client certificate valid from")))
        except (OSError, ValueError):
            pass
    return found


def check_clock(config: Config, package: ModelPackage | None,
                now: dt.datetime | None = None) -> Check:
    """Refuse a clock that is obviously wrong: before the evidence, or decades after it."""
    now = now or dt.datetime.now(dt.timezone.utc)
    ceiling_of_evidence = RELEASE_DATE + CLOCK_MAX_AHEAD
    floor, why = RELEASE_DATE, _("this software's release")
    for moment, source in _evidence(config, package):
        if moment > ceiling_of_evidence:  # written while the clock was wrong: no evidence
            continue
        if moment - CLOCK_SLACK > floor:
            floor, why = moment - CLOCK_SLACK, source
    if now < floor:
        if floor != RELEASE_DATE:
            why = _("%(source)s, less a day", source=why)
        return Check("clock", FAIL, _("the clock says %(now)s, before %(floor)s (%(why)s): set "
                                      "the clock (dead RTC battery?)", now=_when(now),
                                      floor=_when(floor), why=why))
    ceiling = floor + CLOCK_SLACK + CLOCK_MAX_AHEAD
    if now > ceiling:
        return Check("clock", FAIL, _("the clock says %(now)s, absurdly far after %(floor)s "
                                      "(%(why)s): set the clock", now=_when(now),
                                      floor=_when(floor), why=why))
    return Check("clock", PASS, _("%(now)s, not before %(floor)s (%(why)s)", now=_when(now),
                                  floor=_when(floor), why=why))


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
        return _("cannot read [mqtt] cert_file %(path)s: %(error)s",
                 path=config.mqtt.cert_file, error=error_words(exc))
    if now > cert.not_valid_after_utc:
        return _("the client certificate expired on %(when)s: ask the hospital for a new "
                 "enrolment bundle", when=_when(cert.not_valid_after_utc))
    if now < cert.not_valid_before_utc:
        return _("the client certificate is not valid before %(when)s (is the clock right?)",
                 when=_when(cert.not_valid_before_utc))
    return ""


def check_broker(config: Config, timeout: float) -> Check:
    """A real MQTT CONNECT over TLS with the client certificate; the failure named."""
    import paho.mqtt.client as mqtt

    name, m = "broker", config.mqtt
    if not m.host:
        return Check(name, SKIP, _("no broker configured ([mqtt] host is empty)"))
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
        return Check(name, FAIL, _("cannot load [mqtt] ca_file/cert_file/key_file: %(error)s",
                                   error=error_words(exc)))
    started = time.monotonic()
    try:
        client.connect(m.host, m.port, keepalive=max(10, int(timeout) * 2))
    except ssl.SSLCertVerificationError as exc:
        return Check(name, FAIL, _("TLS handshake with %(where)s failed: the broker's "
                                   "certificate is not accepted (%(why)s)", where=where,
                                   why=exc.verify_message))
    except ssl.SSLError as exc:
        return Check(name, FAIL, _("TLS handshake refused by %(where)s: %(why)s", where=where,
                                   why=exc.reason or exc))
    except ConnectionRefusedError:
        return Check(name, FAIL, _("connection refused by %(where)s: no broker listens there",
                                   where=where))
    except socket.gaierror as exc:
        return Check(name, FAIL, _("cannot resolve the broker host %(host)s: %(why)s",
                                   host=repr(m.host), why=error_words(exc, exc.strerror)))
    except TimeoutError:
        return Check(name, FAIL, _("timeout: no answer from %(where)s within %(seconds)s s",
                                   where=where, seconds=f"{timeout:g}"))
    except OSError as exc:
        return Check(name, FAIL, _("cannot reach %(where)s: %(why)s", where=where,
                                   why=error_words(exc, exc.strerror or exc)))
    try:
        deadline = started + timeout
        while not seen.done.is_set() and time.monotonic() < deadline:
            if client.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
                seen.lost = True
                break
        ms = f"{(time.monotonic() - started) * 1000:.0f}"
        if seen.reason is not None and not seen.reason.is_failure:
            client.disconnect()
            return Check(name, PASS, _("%(where)s accepted CONNECT over TLS as %(who)s in "
                                       "%(ms)s ms", where=where, ms=ms,
                                       who=f"{config.telemetry.clinic}/{config.telemetry.device}"))
        if seen.reason is not None:
            if seen.reason.value in (0x86, 0x87):
                return Check(name, FAIL, _("%(where)s not authorised: CONNACK %(reason)s",
                                           where=where, reason=seen.reason))
            return Check(name, FAIL, _("%(where)s refused: CONNACK %(reason)s", where=where,
                                       reason=seen.reason))
        if seen.lost:
            alert = _tls_alert(config, timeout) or seen.socket_error()
            refused = _("TLS handshake refused by %(where)s: the broker does not accept this "
                        "box's client certificate", where=where)
            return Check(name, FAIL, f"{refused} ({alert})" if alert else refused)
        return Check(name, FAIL, _("timeout: no CONNACK from %(where)s within %(seconds)s s",
                                   where=where, seconds=f"{timeout:g}"))
    finally:
        client.loop_stop()
        if client.is_connected():
            client.disconnect()


# -- identity -------------------------------------------------------------------------

def check_device_identity(config: Config) -> Check:
    """The device signing key and study-reference secret exist and read (nothing made)."""
    from clinibox_common.contracts import signing

    name = "device identity"
    key_path, secret_path = config.device_key_path, config.device_secret_path
    if not key_path.exists():
        return Check(name, FAIL, _("no device key at %(path)s: run clinibox provision",
                                   path=key_path))
    if not secret_path.exists():
        return Check(name, FAIL, _("no study-reference secret at %(path)s: run clinibox "
                                   "provision", path=secret_path))
    try:
        key = signing.load_private_key(key_path)
        secret = secret_path.read_bytes()
    except (OSError, ValueError) as exc:
        return Check(name, FAIL, _("cannot read the identity: %(error)s",
                                   error=error_words(exc)))
    if len(secret) < 16:
        return Check(name, FAIL, _("study-reference secret %(path)s is too short",
                                   path=secret_path))
    return Check(name, PASS, _("%(who)s, key %(key)s (%(path)s)",
                               who=f"{config.telemetry.clinic}/{config.telemetry.device}",
                               key=signing.key_id(key.public_key()), path=key_path))


def check_hospital_key(config: Config) -> Check:
    """The hospital's X25519 public key, which telemetry is sealed to, reads."""
    from clinibox_common.contracts.envelope import load_x25519_public

    path = config.telemetry.hospital_key
    if not path:
        return Check("hospital key", SKIP, _("none configured ([telemetry] hospital_key): "
                                             "telemetry waits in the outbox"))
    try:
        load_x25519_public(Path(path))
    except (OSError, ValueError) as exc:
        return Check("hospital key", FAIL, _("cannot load %(path)s: %(error)s", path=path,
                                             error=error_words(exc)))
    return Check("hospital key", PASS, _("X25519 public key %(path)s", path=path))


# -- the whole --------------------------------------------------------------------------

def _guarded(name: str, check: Callable[[], Check]) -> Check:
    """Run one check; a check that crashes is a FAIL with why, never a traceback."""
    try:
        return check()
    except Exception as exc:
        return Check(name, FAIL, _("the check itself failed: %(error)s",
                                   error=error_words(exc) if current() != ENGLISH
                                   else f"{type(exc).__name__}: {exc}"))


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
    if config.worklist.enabled:  # nothing is said of a worklist the box does not ask
        steps.append(("appointment list", lambda: check_worklist(config)))
    return [_guarded(name, step) for name, step in steps]


def _check_name(name: str) -> str:
    return _(CHECK_NAMES[name]) if name in CHECK_NAMES else name


def render_table(checks: list[Check]) -> str:
    """The table people read (in the current language): one line per check, then the verdict.

    Columns are padded by their width on a terminal (a Chinese character takes two).
    """
    names = [_check_name(c.name) for c in checks]
    words = [_(STATUS_WORDS.get(c.status, c.status)) for c in checks]
    header = (_("CHECK"), _("RESULT"), _("DETAIL"))
    width = max(display_width(n) for n in (*names, header[0]))
    status_width = max(display_width(w) for w in (*words, header[1]))
    lines = [f"{ljust(header[0], width)}  {ljust(header[1], status_width)}  {header[2]}"]
    lines += [f"{ljust(name, width)}  {ljust(word, status_width)}  {c.detail}"
              for name, word, c in zip(names, words, checks, strict=True)]
    failed = [name for name, c in zip(names, checks, strict=True) if c.status == FAIL]
    counts = {s: sum(c.status == s for c in checks) for s in (PASS, WARN, SKIP, FAIL)}
    summary = _(", ").join(_("%(n)s %(status)s", n=n, status=_(STATUS_WORDS[s]).lower())
                           for s, n in counts.items() if n)
    if failed:
        lines.append(_("selftest FAILED: %(failed)s (%(summary)s)",
                       failed=_(", ").join(failed), summary=summary))
    else:
        lines.append(_("selftest passed (%(summary)s)", summary=summary))
    return "\n".join(lines) + "\n"


def cmd_selftest(args: argparse.Namespace) -> int:
    """Run every check, print the table (or JSON); 0 when nothing failed, else 1."""
    config = config_module.load(getattr(args, "config", None))
    if args.json:  # a contract: English names and details, whatever the terminal's language
        with use_locale("en"):
            checks = run_checks(config, args.timeout)
    else:
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
