"""HL7 v2 over MLLP: one report a time, each answered by an ACK before the next.

MLLP (HL7's Minimal Lower Layer Protocol) frames a message as ``0x0B message 0x1C 0x0D``.
The box sends one message and reads the frame that answers it before the next, all within
``[records] timeout_seconds``; an answer that is not an ACK of that message (another
control ID, not HL7, a frame longer than ``MAX_ANSWER`` bytes) ends the connection and
counts as a failed try, as a closed or silent connection does.
"""

from __future__ import annotations

import contextlib
import socket
import time

from firmware_app.records import hl7
from firmware_app.records.link import Delivered, LinkFailed, Outcome, Refused
from firmware_app.storage import event_codes as codes

START, END = b"\x0b", b"\x1c\x0d"
#: the longest answer read (an ACK is a few hundred bytes)
MAX_ANSWER = 16 * 1024


def frame(message: bytes) -> bytes:
    """A message in its MLLP frame."""
    return START + message + END


class MllpLink:
    """MLLP to one listener for one pass: a TCP connection per message, as listeners that
    close after each acknowledgement (hl7apy's among them) expect; opening the first says at
    once whether the listener is there."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port = host, port
        self.peer = f"{host}:{port}"
        self.timeout = timeout
        self.sock: socket.socket | None = self._connect()

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except TimeoutError:
            raise LinkFailed(f"{self.peer}: no answer within {self.timeout:g} s",
                             codes.RECORDS_NO_ANSWER) from None
        except OSError as exc:
            raise LinkFailed(f"{self.peer}: cannot connect ({exc.strerror or exc})",
                             codes.RECORDS_UNREACHABLE) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def send(self, message: bytes, control_id: str) -> Outcome:
        """Send one message and read its ACK; LinkFailed when the connection cannot go on."""
        sock = self.sock if self.sock is not None else self._connect()
        self.sock = None
        deadline = time.monotonic() + self.timeout
        try:
            sock.settimeout(self.timeout)
            sock.sendall(frame(message))
            answer = self._read_frame(sock, deadline)
        except TimeoutError:
            raise LinkFailed(f"{self.peer}: no acknowledgement within {self.timeout:g} s",
                             codes.RECORDS_NO_ANSWER) from None
        except OSError as exc:
            raise LinkFailed(f"{self.peer}: connection lost ({exc.strerror or exc})",
                             codes.RECORDS_LOST) from None
        finally:
            with contextlib.suppress(OSError):
                sock.close()
        try:
            ack = hl7.read_acknowledgement(answer)
        except hl7.NotAnAcknowledgement as exc:
            raise LinkFailed(f"{self.peer}: {exc}", codes.RECORDS_NOT_ACK) from None
        if ack.control_id != control_id:
            raise LinkFailed(f"{self.peer}: the acknowledgement answers message "
                             f"{ack.control_id[:30]!r}, not {control_id!r}",
                             codes.RECORDS_NOT_ACK)
        if ack.accepted:
            return Delivered(ack.code)
        return Refused(ack.code, f"{self.peer} answered {ack.code}"
                       + (f": {ack.text}" if ack.text else ""))

    @staticmethod
    def _read_frame(sock: socket.socket, deadline: float) -> bytes:
        """The next MLLP frame's content (bytes before its start are skipped)."""
        data = b""
        while True:
            end = data.find(END)
            if end >= 0:
                start = data.rfind(START, 0, end)
                return data[start + 1:end] if start >= 0 else data[:end]
            if len(data) > MAX_ANSWER:
                raise OSError(f"an answer longer than {MAX_ANSWER} bytes")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(4096)
            if not chunk:
                raise OSError("closed by the receiver")
            data += chunk

    def close(self) -> None:
        """Close a connection left open."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
