"""A Storage SCU that can lie: it writes every PDU itself, so a C-STORE-RQ's command may
name another SOP Instance UID or SOP Class UID than its data set, or UIDs no library would
let through (5,002 characters, ``../../tmp/x``). pynetdicom's ``send_c_store`` builds the
command from the data set and validates UIDs both ways (it drops a response whose UID it
finds too long), so the refusal tests speak the upper layer protocol here, as
``tests/hostile.py`` does for damaged traffic.

    with LyingSCU(port, "CLINIBOX", [CTImageStorage, MRImageStorage]) as scu:
        status = scu.store(encoded_data_set, sop_class=MRImageStorage, sop_instance=uid)
"""

from __future__ import annotations

import socket
import struct
import warnings
from collections.abc import Callable
from types import TracebackType

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context

from tests.corpus import image_dataset

A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RQ, A_ABORT = 0x02, 0x03, 0x04, 0x05, 0x07
#: data-set bytes per P-DATA-TF (below any maximum PDU length the box or Orthanc offers)
FRAGMENT = 16 * 1024


def _element(group: int, element: int, value: bytes) -> bytes:
    """An implicit-VR little-endian element (values padded to even length)."""
    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HHI", group, element, len(value)) + value


def store_command(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    """An encoded C-STORE-RQ command set with exactly these UIDs (no checks)."""
    body = (_element(0x0000, 0x0002, sop_class.encode("latin-1"))
            + _element(0x0000, 0x0100, struct.pack("<H", 0x0001))  # C-STORE-RQ
            + _element(0x0000, 0x0110, struct.pack("<H", message_id))
            + _element(0x0000, 0x0700, struct.pack("<H", 0x0000))  # medium priority
            + _element(0x0000, 0x0800, struct.pack("<H", 0x0000))  # a data set follows
            + _element(0x0000, 0x1000, sop_instance.encode("latin-1")))
    return _element(0x0000, 0x0000, struct.pack("<I", len(body))) + body


def command_status(command: bytes) -> int:
    """The Status (0000,0900) of an encoded response command set."""
    at = 0
    while at + 8 <= len(command):
        group, element, length = struct.unpack("<HHI", command[at:at + 8])
        if (group, element) == (0x0000, 0x0900):
            return struct.unpack("<H", command[at + 8:at + 10])[0]
        at += 8 + length
    raise ValueError("the response has no Status")


class LyingSCU:
    """One association, spoken by hand, from ``source`` to 127.0.0.1:``port``."""

    def __init__(self, port: int, called: str, sop_classes: list[str], *,
                 calling: str = "MODALITY", source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60,
                                             source_address=(source, 0))
        self.context_ids: dict[str, int] = {}
        self.ended = False  # the peer aborted or closed: nothing to release
        self._message_id = 0
        primitive = A_ASSOCIATE()
        primitive.application_context_name = "1.2.840.10008.3.1.1.1"
        primitive.calling_ae_title, primitive.called_ae_title = calling, called
        contexts = []
        for number, sop_class in enumerate(sop_classes):
            context = build_context(sop_class, ExplicitVRLittleEndian)
            context.context_id = 2 * number + 1
            contexts.append(context)
        primitive.presentation_context_definition_list = contexts
        length = MaximumLengthNotification()
        length.maximum_length_received = 64 * 1024
        implementation = ImplementationClassUIDNotification()
        implementation.implementation_class_uid = "1.2.826.0.1.3680043.8.498.99"
        primitive.user_information = [length, implementation]
        pdu = A_ASSOCIATE_RQ()
        pdu.from_primitive(primitive)
        self.sock.sendall(bytes(pdu.encode()))
        kind, body = self._read_pdu()
        if kind != A_ASSOCIATE_AC:
            self.sock.close()
            raise ConnectionRefusedError(f"association not accepted (PDU type {kind:#x})")
        accepted = self._accepted_ids(body)
        self.context_ids = {c.abstract_syntax: c.context_id for c in contexts
                            if c.context_id in accepted}

    @staticmethod
    def _accepted_ids(body: bytes) -> set[int]:
        """The ids of the presentation contexts an A-ASSOCIATE-AC accepted."""
        accepted, at = set(), 68  # after the fixed fields
        while at + 4 <= len(body):
            item, length = body[at], struct.unpack(">H", body[at + 2:at + 4])[0]
            if item == 0x21 and body[at + 6] == 0:
                accepted.add(body[at + 4])
            at += 4 + length
        return accepted

    def _read_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionResetError("the peer closed the connection")
            data += chunk
        return data

    def _read_pdu(self) -> tuple[int, bytes]:
        kind, _, length = struct.unpack(">BBI", self._read_exactly(6))
        return kind, self._read_exactly(length)

    def _send_pdvs(self, context_id: int, data: bytes, command: bool) -> None:
        pieces = [data[at:at + FRAGMENT] for at in range(0, len(data), FRAGMENT)] or [b""]
        for number, piece in enumerate(pieces):
            control = (0x01 if command else 0x00) | (0x02 if number == len(pieces) - 1 else 0)
            pdv = struct.pack(">IBB", len(piece) + 2, context_id, control) + piece
            self.sock.sendall(struct.pack(">BBI", P_DATA_TF, 0, len(pdv)) + pdv)

    def store(self, data_set: bytes, *, sop_class: str, sop_instance: str,
              context_class: str | None = None) -> int | None:
        """Send one C-STORE-RQ (command UIDs as given, ``data_set`` encoded explicit VR
        little endian) on the context of ``context_class`` (default ``sop_class``); the
        response's Status, or None where the peer aborted or closed instead."""
        self._message_id += 1
        context_id = self.context_ids[context_class or sop_class]
        self._send_pdvs(context_id, store_command(self._message_id, sop_class, sop_instance),
                        command=True)
        self._send_pdvs(context_id, data_set, command=False)
        command = b""
        try:
            while True:
                kind, body = self._read_pdu()
                if kind != P_DATA_TF:
                    self.ended = True
                    return None
                at = 0
                while at + 6 <= len(body):
                    length, control = struct.unpack(">I", body[at:at + 4])[0], body[at + 5]
                    if control & 0x01:
                        command += body[at + 6:at + 4 + length]
                        if control & 0x02:
                            return command_status(command)
                    at += 4 + length
        except OSError:
            self.ended = True
            return None

    def release(self) -> None:
        """A-RELEASE-RQ, wait for the reply, close (only close where the peer ended it)."""
        try:
            if self.ended:
                return
            self.sock.sendall(struct.pack(">BBI", A_RELEASE_RQ, 0, 4) + bytes(4))
            self._read_pdu()
        except OSError:
            pass
        finally:
            self.sock.close()

    def __enter__(self) -> LyingSCU:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


# -- the lying C-STOREs of issues 43 and 56 (the refusal tests and bench/hostile.py) -----

SUCCESS, OUT_OF_RESOURCES, DOES_NOT_MATCH, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xA900, 0xC000
#: what a case's C-STORE-RQ carries: (encoded data set, command SOP Class UID, command SOP
#: Instance UID)
Store = tuple[bytes, str, str]


def change(ds: Dataset, **changes: object) -> None:
    """Set each keyword of ``changes`` on ``ds`` (None deletes it), invalid values included
    (the caller silences pydicom's warnings where they are the point)."""
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)


def encoded(name: str, **changes: object) -> tuple[bytes, str]:
    """An image data set, explicit VR little endian, with ``changes`` (None deletes);
    (its bytes, its original SOP Instance UID)."""
    ds = image_dataset(f"refusal-{name}")
    uid = str(ds.SOPInstanceUID)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the invalid values are the point
        change(ds, **changes)
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, False
        write_dataset(buffer, ds)
    return buffer.getvalue(), uid


def uid_mismatch() -> Store:
    data, uid = encoded("uid-mismatch")
    return data, CTImageStorage, uid[:-1] + ("1" if uid[-1] != "1" else "2")


def class_mismatch() -> Store:
    data, uid = encoded("class-mismatch")
    return data, MRImageStorage, uid


def no_sop_instance_uid() -> Store:
    data, uid = encoded("no-sop-instance-uid", SOPInstanceUID=None)
    return data, CTImageStorage, uid


def long_uid() -> Store:
    uid = "1." + "2" * 5000
    data, _ = encoded("long-uid", SOPInstanceUID=uid)
    return data, CTImageStorage, uid


def long_uid_in_data_set() -> Store:
    data, uid = encoded("long-uid-in-data-set", SOPInstanceUID="1." + "2" * 5000)
    return data, CTImageStorage, uid


def path_uid() -> Store:
    data, _ = encoded("path-uid", SOPInstanceUID="../../tmp/x")
    return data, CTImageStorage, "../../tmp/x"


def leading_zero_study_uid() -> Store:
    data, uid = encoded("leading-zero-study", StudyInstanceUID="1.2.03")
    return data, CTImageStorage, uid


def no_study_instance_uid() -> Store:
    data, uid = encoded("no-study-instance-uid", StudyInstanceUID=None)
    return data, CTImageStorage, uid


def no_series_instance_uid() -> Store:
    data, uid = encoded("no-series-instance-uid", SeriesInstanceUID=None)
    return data, CTImageStorage, uid


#: the tag of Pixel Data as it is encoded (explicit VR little endian)
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


def pixel_data_cut_short() -> Store:
    """A Pixel Data announced 1,000 bytes longer than the bytes sent: the data set ends
    (its last fragment says so) inside the value."""
    data, uid = encoded("pixel-data-cut-short")
    return data[:-1000], CTImageStorage, uid


def pixel_data_header_cut() -> Store:
    """A data set that ends inside the Pixel Data's element header (its tag and VR sent,
    not its length)."""
    data, uid = encoded("pixel-data-header-cut")
    return data[:data.rindex(PIXEL_DATA_TAG) + 6], CTImageStorage, uid


#: case -> (what builds it, what Orthanc 1.10 answers, what the box answers);
#: None: the association ends without an answer
CASES: dict[str, tuple[Callable[[], Store], int | None, int | None]] = {
    "uid_mismatch": (uid_mismatch, DOES_NOT_MATCH, DOES_NOT_MATCH),
    "class_mismatch": (class_mismatch, DOES_NOT_MATCH, DOES_NOT_MATCH),
    "no_sop_instance_uid": (no_sop_instance_uid, CANNOT_UNDERSTAND, CANNOT_UNDERSTAND),
    "long_uid": (long_uid, None, None),
    "long_uid_in_data_set": (long_uid_in_data_set, DOES_NOT_MATCH, DOES_NOT_MATCH),
    "path_uid": (path_uid, SUCCESS, CANNOT_UNDERSTAND),
    "leading_zero_study_uid": (leading_zero_study_uid, SUCCESS, CANNOT_UNDERSTAND),
    "no_study_instance_uid": (no_study_instance_uid, OUT_OF_RESOURCES, OUT_OF_RESOURCES),
    "no_series_instance_uid": (no_series_instance_uid, OUT_OF_RESOURCES, OUT_OF_RESOURCES),
    "pixel_data_cut_short": (pixel_data_cut_short, None, CANNOT_UNDERSTAND),
    "pixel_data_header_cut": (pixel_data_header_cut, SUCCESS, CANNOT_UNDERSTAND),
}
