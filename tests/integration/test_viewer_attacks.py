"""Attacks on the clinic viewer over real HTTPS, against `clinibox serve` (gunicorn).

An attacker on the clinic LAN (another loopback address here, 127.0.0.2, as a
second computer would be) tries open redirects through ``next``, guesses a
nurse's password until the throttle slows it, and a technician tries to record
clinical feedback. The requests are written by hand with ``http.client`` so
that the request line carries the attacker's bytes exactly as sent.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import generate
from tests.corpus import image_dataset, write
from tests.hostile import Browser
from tests.integration.conftest import (
    add_viewer_account,
    storescu,
    wait_for,
)
from tests.ports import free_port
from tests.web_client import csrf_token

pytestmark = pytest.mark.integration

NURSE = ("nadia", "the-clinic-nurse-1")
TECH = ("tomas", "the-box-technician-1")
ATTACKER = "127.0.0.2"

#: open-redirect payloads (OWASP's list, in the forms a request line can carry)
REDIRECTS = ["/%09/evil.example", "//evil.example", "/%5Cevil.example", "%5C/evil.example",
             "https:evil.example", "https://evil.example/", "/%2F%2Fevil.example",
             "%0D%0ASet-Cookie:%20x=1", "/%0D%0ASet-Cookie:%20x=1", "javascript:alert(1)",
             "/%20/evil.example", "/%EF%BC%8F%EF%BC%8Fevil.example", "evil.example",
             "/%00/evil.example", "/" + "a" * 3000]


@pytest.fixture
def viewer(box_factory):
    """A running box with its viewer, a clinician and a technician."""
    port = free_port()
    box = box_factory(web={"enabled": True, "port": port, "host": "0.0.0.0",
                           "login_free_failures": 3, "login_free_failures_per_address": 6})
    cert = box.state / "keys" / "web-cert.pem"

    def answering() -> bool:
        try:
            return cert.exists() and Browser(port, cert).request("GET", "/login")[0] == 200
        except OSError:
            return False

    wait_for(answering, 90, "the viewer to answer")
    add_viewer_account(box, *NURSE, "clinician")
    add_viewer_account(box, *TECH, "technician")
    return box, port, cert


def test_next_only_ever_leads_to_a_page_of_this_box(viewer):
    box, port, cert = viewer
    for payload in REDIRECTS:
        status, headers, _ = Browser(port, cert).request("GET", f"/login?next={payload}")
        assert status == 400, (payload, status)
        assert "Location" not in headers
        status, headers, body = Browser(port, cert).login(*NURSE, target=payload.replace(
            "%09", "\t").replace("%0D%0A", "\r\n"))
        assert status == 400, (payload, status)
        assert "Location" not in headers and "not a page of this box" in body
    status, headers, _ = Browser(port, cert).login(*NURSE, target="/device")
    assert status == 302 and headers["Location"] in ("/device",
                                                     f"https://localhost:{port}/device")
    assert "Traceback" not in box.log.read_text()


def test_an_attacker_elsewhere_slows_itself_not_the_nurse(viewer):
    _box, port, cert = viewer
    attacker = Browser(port, cert, source=ATTACKER)
    answers = [attacker.login(NURSE[0], f"guess-{n}")[0] for n in range(3)]
    assert answers == [401, 401, 401]
    waits = []
    for n in range(3):
        status, headers, body = attacker.login(NURSE[0], f"guess-more-{n}")
        if status == 401:  # the delay had passed: a counted failure, the next wait is longer
            continue
        assert status == 429 and re.search(r"Wait \d+ seconds", body)
        waits.append(int(headers["Retry-After"]))
    assert waits and all(w >= 1 for w in waits)
    # the right password from the attacker's address waits too (no guessing past the delay)
    assert attacker.login(*NURSE)[0] == 429
    # the nurse at her own computer logs in at once
    status, headers, _ = Browser(port, cert).login(*NURSE)
    assert status == 302


def test_only_clinicians_record_clinical_feedback(viewer, tmp_path):
    """On a phantom the model judges, only a clinician records a verdict; on an image it
    gives no result for (outside its validated range), nobody does: nothing to agree with."""
    box, port, cert = viewer
    phantom = ct_dataset(generate("ct", np.random.default_rng(11), lesion=True))
    unjudged = write(image_dataset("viewer-attack"), tmp_path, "ct.dcm")
    assert storescu(box.port, [write_dicom(phantom, tmp_path / "phantom.dcm"),
                               unjudged]).returncode == 0
    box.wait_idle(2)
    instance, study = box.db_rows(
        "SELECT i.id, s.id FROM instances i JOIN results r ON r.instance_id = i.id"
        " JOIN studies s ON s.study_key = i.study_instance_uid"
        " WHERE r.assessment IN ('finding', 'no_finding')")[0]
    other, other_study = box.db_rows(
        "SELECT i.id, s.id FROM instances i JOIN results r ON r.instance_id = i.id"
        " JOIN studies s ON s.study_key = i.study_instance_uid"
        " WHERE r.assessment NOT IN ('finding', 'no_finding')")[0]
    technician = Browser(port, cert)
    assert technician.login(*TECH)[0] == 302
    status, _, page = technician.request("GET", f"/study/{study}")
    assert status == 200 and "verdict-agree" not in page and "no clinician" in page
    status, _, _ = technician.request("POST", f"/instance/{instance}/feedback", {
        "csrf_token": csrf_token(page), "finding": -1, "verdict": "disagree"})
    assert status == 403
    assert box.db_rows("SELECT COUNT(*) FROM feedback")[0][0] == 0
    nurse = Browser(port, cert)
    assert nurse.login(*NURSE)[0] == 302
    status, _, page = nurse.request("GET", f"/study/{study}")
    assert "verdict-agree" in page
    status, _, _ = nurse.request("POST", f"/instance/{instance}/feedback", {
        "csrf_token": csrf_token(page), "finding": -1, "verdict": "agree"})
    assert status == 302
    assert [tuple(r) for r in box.db_rows("SELECT verdict, finding FROM feedback")] == [
        ("agree", -1)]
    status, _, page = nurse.request("GET", f"/study/{other_study}")
    assert status == 200 and "verdict-agree" not in page
    status, _, _ = nurse.request("POST", f"/instance/{other}/feedback", {
        "csrf_token": csrf_token(page), "finding": -1, "verdict": "agree"})
    assert status == 409
    assert box.db_rows("SELECT COUNT(*) FROM feedback")[0][0] == 1
