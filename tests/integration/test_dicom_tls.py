"""DICOM over TLS: storescu with a client certificate gets in, without one it does not; a
full box says so inside TLS; a silent peer is closed after the ACSE timeout."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from tests.integration.conftest import assert_rejected_as_busy, storescu, wait_for
from tests.integration.test_dicom_ingest import phantom_dicoms
from tests.tls_certs import make_pki

pytestmark = pytest.mark.integration


def tls_box(box_factory, tmp_path, receiver: str, count: int = 1, **dicom):
    """A box with its DICOM port on TLS (client certificates required), ``count`` phantom
    files, and storescu's TLS arguments with a client certificate; the box's first TLS
    C-STORE has succeeded (the port is up)."""
    pki = make_pki(tmp_path / "pki")
    box = box_factory(dicom={"receiver": receiver, "tls_enabled": True,
                             "tls_cert": str(pki.server_cert), "tls_key": str(pki.server_key),
                             "tls_ca": str(pki.ca_cert), **dicom},
                      start=False)
    box.start(wait=False)
    files = phantom_dicoms(tmp_path / "phantoms", count)
    tls = ["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca_cert)]
    wait_for(lambda: storescu(box.port, files, extra=tls).returncode == 0, 120,
             "a TLS C-STORE to succeed")
    return box, pki, files, tls


def test_tls_with_client_certificates(box_factory, tmp_path, receiver):
    box, pki, files, _ = tls_box(box_factory, tmp_path, receiver, count=2)
    box.wait_idle(2)

    plain = storescu(box.port, files)  # no TLS at all
    assert plain.returncode != 0
    anonymous = storescu(box.port, files, extra=["+tla", "+cf", str(pki.ca_cert)])
    assert anonymous.returncode != 0  # TLS without a client certificate
    status = box.cli_json("status")
    assert status["received"] == 2 and status["processed"] == 2


def test_a_full_tls_box_rejects_an_association_and_the_modality_learns_why(
        box_factory, tmp_path, receiver):
    """Over the association limit on the TLS port a modality still gets an A-ASSOCIATE-RJ
    it can act on (rejected transient, local limit exceeded), sent inside TLS by either
    receiver, not a dropped connection; once a slot frees, the same modality stores."""
    box, pki, files, tls = tls_box(box_factory, tmp_path, receiver, max_associations=2,
                                   max_associations_per_peer=1, acse_timeout=5,
                                   network_timeout=30)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
    client.check_hostname = False
    client.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    ae = AE(ae_title="BUSYMOD")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    # the slots are held from two other addresses (the last free slot goes only to an
    # address that holds none): the modality's own is under its peer limit
    held = [ae.associate("127.0.0.1", box.port, ae_title="CLINIBOX", tls_args=(client, None),
                         bind_address=(source, 0)) for source in ("127.0.0.2", "127.0.0.3")]
    assert all(assoc.is_established for assoc in held)
    assert_rejected_as_busy(storescu(box.port, files, extra=tls, timeout=60))
    for assoc in held:
        assoc.release()
    wait_for(lambda: storescu(box.port, files, extra=tls).returncode == 0, 30,
             "a free association slot")
    ae.shutdown()


def test_a_silent_peer_on_the_tls_port_is_closed_after_the_acse_timeout(
        box_factory, tmp_path, receiver):
    """A connection that never starts its TLS handshake holds its association slot for the
    ACSE timeout only, as on the plain port, by either receiver; a modality still stores."""
    box, _, files, tls = tls_box(box_factory, tmp_path, receiver, acse_timeout=3,
                                 network_timeout=30)
    silent = socket.create_connection(("127.0.0.1", box.port), source_address=("127.0.0.3", 0))
    silent.settimeout(20)  # the network timeout (30 s) must not be what closes it
    started = time.monotonic()
    try:
        closed = silent.recv(1) == b""
    except ConnectionResetError:
        closed = True
    waited = time.monotonic() - started
    silent.close()
    assert closed and 2 < waited < 15, waited
    assert storescu(box.port, files, extra=tls).returncode == 0
