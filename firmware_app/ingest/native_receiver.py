"""The DICOM port in native code: ``clinibox-receiver`` in front, the box's lander behind.

``clinibox-receiver`` (``native/receiver/``, dcmtk, built by ``make install``) owns the
port: it negotiates, bounds every peer (associations in all and per address, PDU length,
object size, timeouts, TLS), handles each association in a process of its own, and writes
every C-STORE data set into the spool's ``tmp`` folder as it arrives. It decides nothing:
for each data set it asks the ``LandingServer`` here, over a private Unix socket, to land
it, and answers the sender with the status it gets back (``store_answer.answer_store``,
the same rule as the pynetdicom receiver: Success only once object and queue row are
durable). The checks of what arrived (``store_checks``: UIDs present, valid and the
command's), duplicates, conflicts, quarantine and the worker's wake-up stay in Python.

The line protocol, one line each way per C-STORE, every field from a peer hex-encoded
(its strings never reach the line as sent):
  receiver -> lander: ``<file name> \\t <hex Affected SOP Instance UID> \\t <hex calling
  AE title> \\t <hex Affected SOP Class UID> \\n``;
  lander -> receiver: ``<DICOM status, decimal> \\n``.

Why: pynetdicom costs about 3 ms a C-STORE before the box stores anything, as much as
Orthanc needs for the whole object (docs/decisions/0002-native-receiver-front.md); the
native front does the network side for a fraction of that.

``NativeStorageSCP`` has the pynetdicom ``StorageSCP``'s interface (start, stop); the
receiver runs as the service's child and ends with it, even when the service is killed.
"""

from __future__ import annotations

import logging
import math
import os
import re
import select
import shutil
import socket
import socketserver
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from clinibox_common.errors import CliniboxError
from clinibox_common.fs import owned_temp_folder
from firmware_app.ingest.landing import Lander
from firmware_app.ingest.store_answer import CANNOT_UNDERSTAND, answer_store
from firmware_app.settings.dicom import DicomConfig

log = logging.getLogger(__name__)

RECEIVER_NAME = "clinibox-receiver"
#: the only file names the receiver writes (``receiving-<its pid>-<count>.dcm``)
RECEIVED_NAME = re.compile(r"receiving-[0-9]{1,10}-[0-9]{1,20}\.dcm")
#: longest request line read from the receiver: the name and three hex fields (dcmtk bounds
#: each UID of a command to 64 characters, the AE title to 16; a longer line is refused)
REQUEST_LINE_BYTES = 1024
#: seconds the receiver has to start listening
START_SECONDS = 10.0
#: seconds between a receiver that ended unexpectedly and its restart
RESTART_SECONDS = 1.0
#: the landing socket's private folder: ``<temp>/clinibox-landing-<pid of the service>-<random>``
SOCKET_FOLDER_PREFIX = "clinibox-landing-"


class ReceiverFailed(CliniboxError):
    """The native receiver is missing or could not start listening."""

    kind = "receiver failed"


def receiver_binary() -> Path | None:
    """The built receiver: beside the interpreter (``make install`` puts it in the
    venv), else on PATH; None where it was not built (no compiler or dcmtk headers)."""
    beside = Path(sys.executable).parent / RECEIVER_NAME
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(RECEIVER_NAME)
    return Path(found) if found else None


class LandingRequest(NamedTuple):
    """One request line of the receiver: a received file and its C-STORE-RQ's fields."""

    name: str
    sop_instance_uid: str | None
    calling: str | None
    sop_class_uid: str | None


def parse_request(line: bytes) -> LandingRequest:
    """The fields of one receiver request line (``<name> \\t <hex Affected SOP Instance
    UID> \\t <hex calling AE title> \\t <hex Affected SOP Class UID> \\n``); ValueError
    for anything else (a name must be one the receiver writes)."""
    fields = line.rstrip(b"\n").split(b"\t")
    if len(fields) != 4:
        raise ValueError("a landing request has four fields")
    name = fields[0].decode("ascii")
    if not RECEIVED_NAME.fullmatch(name):
        raise ValueError(f"not a received data set's name: {name[:80]!r}")
    uid, calling, sop_class = (
        bytes.fromhex(f.decode("ascii")).decode("latin-1").strip("\x00 ") or None
        for f in fields[1:])
    return LandingRequest(name, uid, calling, sop_class)


class _LandingHandler(socketserver.StreamRequestHandler):
    """One association process's connection: a request line in, a status line out."""

    server: LandingServer

    def handle(self) -> None:
        if not self.server.trusted(self.request):
            log.error("landing socket: a process of another user connected; refused")
            return
        while line := self.rfile.readline(REQUEST_LINE_BYTES):
            try:
                request = parse_request(line)
            except (ValueError, UnicodeDecodeError) as exc:
                log.error("landing socket: bad request from the receiver: %s", exc)
                self.wfile.write(b"%d\n" % CANNOT_UNDERSTAND)
                return
            name = request.name
            status = answer_store(self.server.lander, self.server.receive_dir / name,
                                  sop_instance_uid=request.sop_instance_uid,
                                  sop_class_uid=request.sop_class_uid,
                                  calling=request.calling, on_stored=self.server.on_stored)
            try:
                self.wfile.write(b"%d\n" % status)
                self.wfile.flush()
            except OSError:  # the association ended, or gave up waiting (its sender retries)
                log.warning("landing socket: the receiver left before its answer (%s)", name)
                return


class LandingServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Lands what the receiver wrote, a thread per association process."""

    daemon_threads = True

    def __init__(self, path: Path, lander: Lander,
                 on_stored: Callable[[], None] | None) -> None:
        self.lander = lander
        self.receive_dir = lander.spool.tmp
        self.on_stored = on_stored
        super().__init__(str(path), _LandingHandler)
        os.chmod(path, 0o600)

    @staticmethod
    def trusted(connection: socket.socket) -> bool:
        """Whether the peer process runs as this service's user (SO_PEERCRED)."""
        credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                            struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", credentials)
        return uid == os.getuid()


def receiver_arguments(config: DicomConfig, receive_dir: Path, landing: Path,
                       max_object_bytes: int) -> list[str]:
    """The receiver's command line for the box's DICOM settings."""
    arguments = [
        "--host", config.host, "--port", str(config.port), "--ae-title", config.ae_title,
        "--max-associations", str(config.max_associations),
        "--max-per-peer", str(config.max_associations_per_peer),
        "--max-pdu", str(config.max_pdu_kb * 1024), "--max-object", str(max_object_bytes),
        "--acse-timeout", str(math.ceil(config.acse_timeout)),
        # dcmtk waits for a command and for a data set's next fragment with one timeout
        "--dimse-timeout", str(math.ceil(min(config.dimse_timeout, config.network_timeout))),
        "--receive-dir", str(receive_dir), "--landing", str(landing),
    ]
    for title in config.allowed_calling_aets:
        arguments += ["--allow-calling", title]
    if config.tls_enabled:
        arguments += ["--tls-cert", config.tls_cert, "--tls-key", config.tls_key]
        if config.tls_ca:
            arguments += ["--tls-ca", config.tls_ca]
    return arguments


class NativeStorageSCP:
    """The Storage SCP with ``clinibox-receiver`` on the port and a ``LandingServer``."""

    def __init__(self, config: DicomConfig, lander: Lander,
                 on_stored: Callable[[], None] | None = None,
                 binary: Path | None = None) -> None:
        self.config = config
        self.lander = lander
        self.on_stored = on_stored
        self.binary = binary or receiver_binary()
        self.process: subprocess.Popen[bytes] | None = None
        self._landing: LandingServer | None = None
        self._socket_dir: Path | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Start the landing server, then the receiver; return once it listens."""
        if self.binary is None:
            raise ReceiverFailed(f"{RECEIVER_NAME} is not built (make install builds it "
                                 "where g++ and dcmtk's headers are installed)")
        # a short private path: Unix socket paths are limited to 107 bytes; the folder a
        # SIGKILLed service left (a watchdog, a power cut with a disk-backed /tmp) goes
        self._socket_dir = owned_temp_folder(SOCKET_FOLDER_PREFIX)
        landing_path = self._socket_dir / "landing.sock"
        self._landing = LandingServer(landing_path, self.lander, self.on_stored)
        threading.Thread(target=self._landing.serve_forever, name="dicom-landing",
                         daemon=True).start()
        self._arguments = receiver_arguments(self.config, self.lander.spool.tmp,
                                             landing_path, self.lander.max_object_bytes)
        try:
            self._launch()
        except (ReceiverFailed, OSError):
            self.stop()
            raise
        threading.Thread(target=self._supervise, name="dicom-receiver", daemon=True).start()
        log.info("DICOM SCP %s listening on %s:%d (native receiver)", self.config.ae_title,
                 self.config.host, self.config.port)

    def _launch(self) -> None:
        """Start the receiver process and wait for its READY line."""
        assert self.binary is not None
        process = subprocess.Popen(
            [str(self.binary), *self._arguments], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        assert process.stdout is not None and process.stderr is not None
        threading.Thread(target=_forward_log, args=(process.stderr,), name="receiver-log",
                         daemon=True).start()
        ready, _, _ = select.select([process.stdout], [], [], START_SECONDS)
        line = process.stdout.readline() if ready else b""
        if not line.startswith(b"READY"):
            process.kill()
            process.wait()
            raise ReceiverFailed(f"{RECEIVER_NAME} did not start listening on "
                                 f"{self.config.host}:{self.config.port} (exit status "
                                 f"{process.returncode}); see the log above")
        self.process = process

    def _supervise(self) -> None:
        """Start the receiver again if it ends while the service runs."""
        while not self._stopping.is_set():
            process = self.process
            if process is None:
                return
            status = process.wait()
            if self._stopping.is_set():
                return
            log.error("%s ended (exit status %s); starting it again", RECEIVER_NAME, status)
            self._stopping.wait(RESTART_SECONDS)
            if self._stopping.is_set():
                return
            try:
                self._launch()
            except (ReceiverFailed, OSError) as exc:
                log.error("%s", exc)

    def stop(self) -> None:
        """Stop the receiver (it ends its association processes), then the landing server."""
        self._stopping.set()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self._landing is not None:
            self._landing.shutdown()
            self._landing.server_close()
            self._landing = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None


def _forward_log(stream) -> None:
    """The receiver's stderr lines ("LEVEL text") into the service's log."""
    levels = {"ERROR": logging.ERROR, "WARNING": logging.WARNING, "INFO": logging.INFO}
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip()
        level, _, text = line.partition(" ")
        if level in levels:
            log.log(levels[level], "receiver: %s", text)
        elif line:
            log.warning("receiver: %s", line)
