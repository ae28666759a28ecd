"""The DICOM Storage SCP: C-ECHO and C-STORE on pynetdicom.

The C-STORE handler is deliberately thin: take the encoded dataset exactly as
received, check its header against the command (``store_checks``: UIDs present,
valid and the command's), land it durably (spool + queue commit) and only then
answer Success. Anything that stops the object from being stored answers a
DICOM failure status, so the modality keeps it and retries. Inference never
runs on an association thread.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, dimse_messages, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification

from firmware_app.ingest.bounded_server import BoundedAssociationServer, BoundedRequestHandler
from firmware_app.ingest.landing import Lander
from firmware_app.ingest.store_answer import answer_store
from firmware_app.settings.dicom import DicomConfig
from firmware_app.storage.spool import RECEIVING_PREFIX

log = logging.getLogger(__name__)

#: the Implementation Version Name this receiver announces (with pynetdicom's Implementation
#: Class UID), so that ``clinibox selftest`` can tell it from another program on the port
IMPLEMENTATION_VERSION_NAME = "CLINIBOX"

#: Transfer syntaxes accepted; compressed ones are decoded by pylibjpeg's plugins.
ACCEPTED_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]
assert set(ACCEPTED_TRANSFER_SYNTAXES) <= set(ALL_TRANSFER_SYNTAXES)

def receive_data_sets_into(folder: Path) -> None:
    """Make pynetdicom write each C-STORE data set to a file in ``folder`` as it arrives
    (not into memory): on the spool's disk, named so that start-up removes leftovers."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = functools.partial(
        tempfile.NamedTemporaryFile, dir=folder, prefix=RECEIVING_PREFIX)


def remove_partial_data_set(event: evt.Event) -> None:
    """When a connection closes mid-transfer, remove the data set it left half written."""
    message = getattr(getattr(event.assoc, "dimse", None), "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is not None:
        with contextlib.suppress(OSError):
            partial.close()
            Path(partial.name).unlink(missing_ok=True)


class StorageSCP:
    """Listens for associations and lands every stored object through a Lander."""

    def __init__(
        self,
        config: DicomConfig,
        lander: Lander,
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.lander = lander
        self.on_stored = on_stored
        self.server: BoundedAssociationServer | None = None

    def _build_ae(self) -> AE:
        cfg = self.config
        ae = AE(ae_title=cfg.ae_title)
        ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        # the server counts the slots (fairly, bounded_server); pynetdicom's own count
        # also holds the connections being told "busy", so it gets room for those
        ae.maximum_associations = 2 * cfg.max_associations
        ae.acse_timeout = cfg.acse_timeout
        ae.dimse_timeout = cfg.dimse_timeout
        ae.network_timeout = cfg.network_timeout
        ae.maximum_pdu_size = cfg.max_pdu_kb * 1024
        ae.require_called_aet = True
        if cfg.allowed_calling_aets:
            ae.require_calling_aet = list(cfg.allowed_calling_aets)
        # Every storage SOP class is accepted so that non-image objects arrive
        # and are quarantined with a reason instead of vanishing at negotiation.
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        return ae

    def _ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.config
        if not cfg.tls_enabled:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        if cfg.tls_ca:
            context.load_verify_locations(cfg.tls_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def handle_store(self, event: evt.Event) -> int:
        """C-STORE: check the object against its command, land it durably, then (and only
        then) answer Success (``store_answer``).

        The data set is already on disk in the spool's ``tmp`` folder (written as it
        arrived); landing renames it into place.
        """
        request = event.request
        sop_uid = str(request.AffectedSOPInstanceUID or "") or None
        sop_class = str(request.AffectedSOPClassUID or "") or None
        return answer_store(self.lander, Path(event.dataset_path), sop_instance_uid=sop_uid,
                            sop_class_uid=sop_class, calling=event.assoc.requestor.ae_title,
                            on_stored=self.on_stored)

    def start(self) -> None:
        """Start listening (non-blocking)."""
        receive_data_sets_into(self.lander.spool.tmp)
        handlers = [(evt.EVT_C_STORE, self.handle_store),
                    (evt.EVT_CONN_CLOSE, remove_partial_data_set)]
        ae = self._build_ae()
        server = ae.make_server((self.config.host, self.config.port),
                                evt_handlers=handlers, ssl_context=self._ssl_context(),
                                server_class=BoundedAssociationServer,
                                request_handler=BoundedRequestHandler)
        server.max_associations = self.config.max_associations
        server.max_per_peer = self.config.max_associations_per_peer
        server.max_object_bytes = self.lander.max_object_bytes
        ae._servers.append(server)  # as ae.start_server does: shutdown() removes it
        threading.Thread(target=server.serve_forever, name="dicom-acceptor",
                         daemon=True).start()
        self.server = server
        log.info(
            "DICOM SCP %s listening on %s:%d", self.config.ae_title, self.config.host,
            self.config.port,
        )

    def stop(self) -> None:
        """Stop listening and close open associations."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
