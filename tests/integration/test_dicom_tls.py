"""DICOM over TLS: storescu with a client certificate gets in, without one it does not."""

from __future__ import annotations

import pytest

from tests.integration.conftest import storescu, wait_for
from tests.integration.test_dicom_ingest import phantom_dicoms
from tests.tls_certs import make_pki

pytestmark = pytest.mark.integration


def test_tls_with_client_certificates(box_factory, tmp_path, receiver):
    pki = make_pki(tmp_path / "pki")
    box = box_factory(dicom={"receiver": receiver, "tls_enabled": True,
                             "tls_cert": str(pki.server_cert), "tls_key": str(pki.server_key),
                             "tls_ca": str(pki.ca_cert)},
                      start=False)
    box.start(wait=False)
    files = phantom_dicoms(tmp_path / "phantoms", 2)
    tls = ["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca_cert)]

    def accepted() -> bool:
        return storescu(box.port, files, extra=tls).returncode == 0

    wait_for(accepted, 120, "a TLS C-STORE to succeed")
    box.wait_idle(2)

    plain = storescu(box.port, files)  # no TLS at all
    assert plain.returncode != 0
    anonymous = storescu(box.port, files, extra=["+tla", "+cf", str(pki.ca_cert)])
    assert anonymous.returncode != 0  # TLS without a client certificate
    status = box.cli_json("status")
    assert status["received"] == 2 and status["processed"] == 2
