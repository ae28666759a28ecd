"""pynetdicom's association server, bounded against peers that do not play fair.

pynetdicom reads a whole PDU into memory before it looks at it, keeps a data
set's fragments until the last one, lets one address take every association
slot, and (with TLS) shakes hands on the thread that accepts connections. On
a clinic LAN any of these lets one misbehaving or hostile peer grow the
receiver by gigabytes or lock the modalities out. Here:

* ``BoundedSocket`` refuses a PDU longer than ``max_pdu_bytes`` before reading
  its body (a peer must not send more than the maximum length we advertised),
  and counts each C-STORE data set's bytes as they arrive: past
  ``max_object_bytes`` the connection is dropped at once. (The data set itself
  goes to a file as it arrives: ``STORE_RECV_CHUNKED_DATASET``.)
* ``BoundedAssociationServer`` refuses a connection from an address that
  already holds ``max_per_peer`` associations, and does the TLS handshake on
  the association's own thread (a silent TLS client cannot stall the others).
* It also counts the box's slots (``max_associations``) itself and keeps them
  fair: when only one slot is free, it goes only to an address that holds no
  association. Over the limit, or for the last slot from an address that holds
  some, the association request is answered A-ASSOCIATE-RJ rejected transient,
  local limit exceeded (``BusyACSE``; the modality retries later), as the native
  receiver answers it.

Timeouts (a silent connection, an idle association, a stalled transfer) are
pynetdicom's own: ``acse_timeout``, ``network_timeout``, ``dimse_timeout``.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from typing import Any

from pynetdicom import evt
from pynetdicom.acse import ACSE
from pynetdicom.transport import (
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)

from clinibox_common.errors import CliniboxError

log = logging.getLogger(__name__)

P_DATA_TF = 0x04
#: association negotiation PDUs are not bound by the negotiated maximum; this is ample
NEGOTIATION_PDU_BYTES = 64 * 1024


class PeerRefused(CliniboxError, OSError):
    """A peer broke a bound; the connection is dropped (the sender sees it closed)."""

    kind = "peer refused"


class BoundedSocket(AssociationSocket):
    """An acceptor's socket that bounds PDU length and each C-STORE data set's size."""

    max_pdu_bytes = NEGOTIATION_PDU_BYTES
    max_object_bytes = 2**30
    _pdu_type: int | None = None
    _object_bytes = 0

    @classmethod
    def bound(cls, sock: AssociationSocket, max_pdu_bytes: int,
              max_object_bytes: int) -> BoundedSocket:
        """Turn pynetdicom's socket into a bounded one (``max_pdu_bytes``: longest PDU
        accepted, at least what negotiation needs; ``max_object_bytes``: largest data set)."""
        sock.__class__ = cls
        assert isinstance(sock, BoundedSocket)
        sock.max_pdu_bytes = max(max_pdu_bytes, NEGOTIATION_PDU_BYTES)
        sock.max_object_bytes = max_object_bytes
        return sock

    def recv(self, nr_bytes: int) -> bytearray:
        """Read like pynetdicom, refusing oversized PDUs and data sets."""
        if self._pdu_type is None and nr_bytes == 6:  # a PDU header
            header = super().recv(6)
            if len(header) == 6:
                pdu_type, _, length = struct.unpack(">BBL", bytes(header))
                if length > self.max_pdu_bytes:
                    raise PeerRefused(f"PDU of {length} bytes, over the {self.max_pdu_bytes} "
                                      "byte maximum")
                self._pdu_type = pdu_type
            return header
        body = super().recv(nr_bytes)
        pdu_type, self._pdu_type = self._pdu_type, None
        if pdu_type == P_DATA_TF:
            self._count(bytes(body))
        return body

    def _count(self, body: bytes) -> None:
        """Add a P-DATA-TF's data-set fragments to the object's size; reset at its end."""
        at = 0
        while at + 6 <= len(body):
            length = struct.unpack(">L", body[at:at + 4])[0]
            control = body[at + 5]
            if not control & 0x01:  # a data-set fragment (bit 0 clear)
                self._object_bytes += max(0, length - 2)
                if self._object_bytes > self.max_object_bytes:
                    raise PeerRefused(
                        f"object passed {self.max_object_bytes // 2**20} MB while arriving; "
                        "over the object limit")
                if control & 0x02:  # its last fragment
                    self._object_bytes = 0
            at += 4 + length


class BusyACSE(ACSE):
    """The ACSE of an association the box has no slot for: it reads the request and
    answers A-ASSOCIATE-RJ rejected transient, service provider (presentation), local
    limit exceeded (PS3.8 9.3.4), as pynetdicom answers a full AE."""

    def _negotiate_as_acceptor(self) -> None:
        self.requestor.ae_title = self.requestor.primitive.calling_ae_title
        self.send_reject(0x02, 0x03, 0x02)
        evt.trigger(self.assoc, evt.EVT_REJECTED, {})
        self.assoc.kill()


class BoundedRequestHandler(RequestHandler):
    """pynetdicom's handler, with a ``BoundedSocket`` for the association (and a
    ``BusyACSE`` where the server found no slot for it)."""

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        server: BoundedAssociationServer = self.server  # type: ignore[assignment]
        BoundedSocket.bound(assoc.dul.socket, server.ae.maximum_pdu_size or 0,
                            server.max_object_bytes)
        if server.take_busy(self.request):
            assoc.acse.__class__ = BusyACSE
            assoc.clinibox_busy = True  # released as such (BoundedAssociationServer)
        return assoc


class BoundedAssociationServer(ThreadedAssociationServer):
    """A threaded association server with fair association slots, a per-address limit
    and a deferred TLS handshake.

    Connections are counted per address when accepted (on the accepting thread, so
    a burst cannot slip past the count) and released when they close. One that gets
    no slot is let in only to be answered "rejected, busy" (``BusyACSE``), at most
    ``max_associations`` of those at once (beyond that the connection is closed).
    """

    #: the listen backlog (socketserver's default of 5 drops a burst of connections)
    request_queue_size = 64
    #: set by the SCP before serving
    max_associations: int = 8
    max_per_peer: int = 4
    max_object_bytes: int = 2**30

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As pynetdicom's, plus the per-address connection count."""
        self._held: dict[str, int] = {}
        self._to_refuse: set[Any] = set()  # accepted sockets that got no slot
        self._refusing = 0  # connections being answered "rejected, busy"
        self._held_lock = threading.Lock()
        super().__init__(*args, **kwargs)
        self.bind(evt.EVT_CONN_CLOSE, self._released)

    def take_busy(self, request: Any) -> bool:
        """Whether the connection ``request`` got no slot (it is to be rejected)."""
        with self._held_lock:
            if request not in self._to_refuse:
                return False
            self._to_refuse.discard(request)
            return True

    def _released(self, event: evt.Event) -> None:
        host = event.assoc.requestor.address
        with self._held_lock:
            if getattr(event.assoc, "clinibox_busy", False):
                self._refusing -= 1
            elif self._held.get(host, 0) > 1:
                self._held[host] -= 1
            else:
                self._held.pop(host, None)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept; a TLS socket shakes hands later, on the association's thread."""
        client, address = self.socket.accept()  # type: ignore[union-attr]
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True,
                                                  do_handshake_on_connect=False)
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Refuse (close) a connection from an address that already holds ``max_per_peer``
        associations; mark one busy (``take_busy``) when no slot is free, or when only one
        is and the address already holds some: the last slot waits for a new address."""
        host = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        with self._held_lock:
            held = self._held.get(host, 0)
            if held >= self.max_per_peer:
                why = f"it already holds {held} associations"
            else:
                taken = sum(self._held.values())
                full = taken >= self.max_associations
                if not full and not (taken == self.max_associations - 1 and held > 0):
                    self._held[host] = held + 1
                    return True
                if self._refusing < self.max_associations:
                    self._refusing += 1
                    self._to_refuse.add(request)
                    log.warning("association from %s rejected: %s", host,
                                "every association slot is taken" if full else
                                "the last free slot is kept for an address that holds "
                                f"none; it holds {held}")
                    return True
                why = "every association slot is taken"
        log.warning("connection from %s refused: %s", host, why)
        return False
