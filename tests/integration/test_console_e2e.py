"""The hospital's console end to end: a radiologist in Chromium (in Chinese) reviews an alert and
the clinic's box shows the verdict — all real parts.

One site runs for the module: Mosquitto with TLS and the ACL, PostgreSQL as the hospital's
store, ``clinibox central serve`` (receiver, downlink publisher, webhook), ``clinibox central
web`` (the console over HTTPS), a webhook sink (a local HTTPS-less HTTP server recording what it
is sent), and a box (``clinibox serve`` with its viewer) enrolled at the hospital. Canary studies
(every identifying attribute a unique value, lesion phantoms) are sent to the box with storescu.

1. The radiologist logs in to the console in Chromium and opens the worklist; a study reaches
   the box and its alert appears on the open page without a reload.
2. She reviews it: "refer the patient" with a note; the box's study page shows the verdict within
   seconds (Chromium on the box's viewer, in Chinese too).
3. The box goes down; she reviews a second alert; the box comes back and shows that verdict too.
4. The webhook fired exactly once per alert, signed with the shared secret; nothing identifying
   reached the console's pages, the webhook or the downlink.
5. The clinic's information systems (``[[records.receivers]]``) got each study's result with
   the patient as the clinic knows them, then the verdict as a corrected report: as HL7 v2
   ORU^R01 at hl7apy's MLLP server and as a FHIR transaction the FHIR models read
   (``tests/records_peers.py``), while the MQTT capture at the hospital holds no canary.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from clinibox_common import i18n
from clinibox_common.contracts import downlink
from tests.box_harness import stop
from tests.browser import ARTIFACTS, headless_chromium
from tests.canary import CanarySet, write_canary_studies
from tests.integration.conftest import (
    REPO,
    Box,
    add_viewer_account,
    send_as_modality,
    to_toml,
    wait_for,
)
from tests.mqtt_broker import Auditor, Broker, make_mqtt_pki, receiver_settings
from tests.ports import free_port
from tests.postgres_server import PostgresServer
from tests.records_peers import FhirEndpoint, MllpListener
from tests.webhook_sink import WebhookSink

pytestmark = pytest.mark.integration

CLINIC, DEVICE = "clinic-a", "box-1"
RADIOLOGIST = ("dr-li", "hospital-reads-2026")
NURSE = ("nurse-wang", "clinic-reads-2026")
SECRET = b"the-hospitals-webhook-secret"
SHOTS = ARTIFACTS.parent / "console"


def signature_ok(secret: bytes, headers: Message, body: bytes) -> bool:
    """Whether the delivery's ``X-Clinibox-Signature`` is HMAC-SHA256 of
    ``"<X-Clinibox-Timestamp>.<body>"``."""
    signed = headers.get("x-clinibox-timestamp", "").encode("ascii") + b"." + body
    expected = "sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("x-clinibox-signature", ""), expected)


def clinibox(*args: str, stdin: str | None = None) -> str:
    """Run the ``clinibox`` command line; its standard output (failing the test otherwise)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "clinibox", *args], input=stdin,
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, f"clinibox {' '.join(args)}:\n{result.stderr}"
    return result.stdout


@dataclass
class Site:
    """The hospital (broker, PostgreSQL, receiver, console, webhook sink) and the clinic's box."""

    root: Path
    database_url: str
    config: Path
    console: str
    box: Box
    box_viewer: str
    sink: WebhookSink
    canaries: CanarySet
    auditor: Auditor
    mllp: MllpListener
    fhir: FhirEndpoint

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Query the hospital's PostgreSQL database."""
        import psycopg

        with psycopg.connect(self.database_url) as conn:
            return conn.execute(sql, params).fetchall()


def _process(args: list[str], log: Path):
    import subprocess
    import sys

    handle = open(log, "a")  # noqa: SIM115 - owned by the child process
    return subprocess.Popen([sys.executable, "-m", "clinibox", *args], stdout=handle,
                            stderr=subprocess.STDOUT, cwd=REPO)


def _answers(url: str) -> bool:
    """Whether the HTTPS page at ``url`` answers (its self-signed certificate not checked)."""
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    """Everything up: broker, PostgreSQL, receiver, console, webhook sink, the box."""
    root = tmp_path_factory.mktemp("console-e2e")
    pki = make_mqtt_pki(root / "pki", [(CLINIC, DEVICE)])
    broker = Broker(root / "broker", pki).start()
    postgres = PostgresServer(root / "pg")
    postgres.start()
    url = postgres.create_database("hospital")
    clinibox("keys", "generate", "--kind", "hospital", "--out", str(root / "hospital"))
    clinibox("keys", "generate", "--kind", "hospital-signing", "--out",
             str(root / "hospital-signing"))
    (root / "webhook.secret").write_bytes(SECRET)
    sink = WebhookSink()
    console_port = free_port()
    settings = receiver_settings(broker, pki, root / "unused.db", root / "hospital.pem",
                                 "central-console-e2e")
    settings["database"] = {"url": url}
    settings["keys"]["hospital_signing_key"] = str(root / "hospital-signing.pem")
    settings["web"] = {"host": "127.0.0.1", "port": console_port,
                       "state_dir": str(root / "console")}
    settings["notify"] = {"url": sink.url, "secret_file": str(root / "webhook.secret"),
                          "retry_min_seconds": 1}
    config = root / "central.toml"
    config.write_text(to_toml(settings))
    clinibox("central", "clinic", "set", CLINIC, "--name", "青山乡卫生院", "--county", "青山县",
             "--config", str(config))
    clinibox("central", "user", "add", RADIOLOGIST[0], "--role", "radiologist",
             "--password-stdin", "--config", str(config), stdin=RADIOLOGIST[1] + "\n")
    receiver = _process(["central", "serve", "--config", str(config)], root / "serve.log")
    console = _process(["central", "web", "--config", str(config)], root / "web.log")
    base = f"https://127.0.0.1:{console_port}"
    wait_for(lambda: _answers(f"{base}/login"), 90, "the console to answer")

    identity = pki.device(CLINIC, DEVICE)
    box_root = root / "box"
    box_root.mkdir()
    mllp, fhir = MllpListener(), FhirEndpoint()
    box = Box(box_root, {
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "ca_file": str(pki.ca_cert),
                 "cert_file": str(identity.cert), "key_file": str(identity.key)},
        "telemetry": {"clinic": CLINIC, "device": DEVICE,
                      "hospital_key": str(root / "hospital.pub"),
                      "hospital_signing_key": str(root / "hospital-signing.pub"),
                      "summary_seconds": 30.0, "heartbeat_seconds": 2.0,
                      "retry_min_seconds": 0.2, "retry_max_seconds": 1.0},
        "web": {"enabled": True},
        "records": {"retry_min_seconds": 0.5, "retry_max_seconds": 2.0, "language": "zh_CN",
                    "receivers": [{"name": "his", "host": "127.0.0.1", "port": mllp.port},
                                  {"name": "emr", "protocol": "fhir", "url": fhir.url}]},
    })
    public = box_root / "device.pub"
    box.cli("identity", "--out", str(public))
    clinibox("central", "enrol", "--config", str(config), "--clinic", CLINIC, "--device", DEVICE,
             "--key", str(public))
    add_viewer_account(box, NURSE[0], NURSE[1], "clinician")
    auditor = Auditor(broker, pki)
    box.start()
    viewer = f"https://127.0.0.1:{box.web_port}"
    wait_for(lambda: _answers(f"{viewer}/login"), 90, "the box's viewer to answer")
    canaries = write_canary_studies(root / "canaries", 2, lesion=True)
    yield Site(root, url, config, base, box, viewer, sink, canaries, auditor, mllp, fhir)
    mllp.close()
    fhir.close()
    auditor.close()
    box.stop()
    for process in (console, receiver):
        stop(process)
    sink.close()
    broker.stop()
    postgres.stop()


def _login(driver, base: str, who: tuple[str, str]) -> None:
    """Log in through the form (a session still alive goes straight to the worklist)."""
    driver.get(f"{base}/login")
    if not driver.find_elements(By.ID, "name"):
        return
    driver.find_element(By.ID, "name").send_keys(who[0])
    driver.find_element(By.ID, "password").send_keys(who[1])
    driver.find_element(By.ID, "login").click()
    # the form's answer before the next page: a GET racing ahead of it lands on the login page
    WebDriverWait(driver, 60).until(lambda d: "/login" not in d.current_url)


def _zh(message: str) -> str:
    return i18n.translations(i18n.CHINESE).gettext(message)


def _review(driver, wait: WebDriverWait, site: Site, alert_id: int, note: str) -> None:
    driver.get(f"{site.console}/alerts/{alert_id}")
    wait.until(lambda d: d.find_elements(By.ID, "review"))
    driver.find_element(By.ID, f"verdict-{downlink.HospitalVerdict.REFER}").click()
    driver.find_element(By.ID, "note").send_keys(note)
    driver.find_element(By.ID, "submit-review").click()
    wait.until(lambda d: d.find_elements(By.ID, "flash"))


def _study_page_verdict(driver, wait: WebDriverWait, site: Site) -> str:
    """The box's worklist → the first study with a hospital review → its verdict line."""
    driver.get(f"{site.box_viewer}/")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.worklist a.open"))
    for row in driver.find_elements(By.CSS_SELECTOR, "table.worklist tbody tr"):
        if row.find_elements(By.CSS_SELECTOR, ".hospital-review"):
            driver.get(row.find_element(By.CSS_SELECTOR, "a.open").get_attribute("href"))
            return wait.until(lambda d: d.find_element(By.ID, "hospital-review")).text
    return ""


def test_a_radiologist_reviews_in_chinese_and_the_box_shows_the_verdict(site: Site):
    SHOTS.mkdir(parents=True, exist_ok=True)
    hospital = headless_chromium("zh-CN", accept_languages="zh-CN,zh")
    clinic = headless_chromium("zh-CN", accept_languages="zh-CN,zh")
    try:
        wait = WebDriverWait(hospital, 60)
        _login(hospital, site.console, RADIOLOGIST)
        hospital.get(f"{site.console}/alerts")
        wait.until(lambda d: d.find_elements(By.ID, "alerts"))
        assert hospital.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN"
        hospital.execute_script("window.stayedOnThePage = 'yes';")

        # 1. a study reaches the box; its alert appears on the open page without a reload
        ok, _ = send_as_modality(site.box.port, site.canaries.files[:1])
        assert ok == 1
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#alerts tr[data-alert-id]"))
        assert hospital.execute_script("return window.stayedOnThePage;") == "yes"
        notice = hospital.find_element(By.ID, "new-alerts")
        assert notice.is_displayed() and notice.text
        hospital.save_screenshot(str(SHOTS / "1-worklist-new-alert-zh.png"))
        first = int(hospital.find_element(By.CSS_SELECTOR, "#alerts tr[data-alert-id]")
                    .get_attribute("data-alert-id"))

        # 2. "refer the patient"; the box's study page shows it within seconds
        _review(hospital, wait, site, first, "请尽快转诊")
        hospital.save_screenshot(str(SHOTS / "2-alert-reviewed-zh.png"))
        wait_for(lambda: site.box.db_rows("SELECT COUNT(*) FROM hospital_reviews")[0][0] == 1,
                 60, "the verdict to reach the box")
        clinic_wait = WebDriverWait(clinic, 60)
        _login(clinic, site.box_viewer, NURSE)
        line = _study_page_verdict(clinic, clinic_wait, site)
        assert _zh("refer the patient") in line and "请尽快转诊" in line
        clinic.save_screenshot(str(SHOTS / "3-box-study-verdict-zh.png"))
        # the console says the box confirmed it (its next heartbeat's watermark)
        def confirmed() -> bool:
            hospital.get(f"{site.console}/alerts/{first}")
            return bool(hospital.find_elements(By.CSS_SELECTOR, "td.delivery-confirmed"))

        wait_for(confirmed, 60, "the console to show the box's confirmation")

        # 3. the box goes down; a second alert is reviewed; the box comes back and shows it
        ok, _ = send_as_modality(site.box.port, site.canaries.files[1:2])
        assert ok == 1
        wait_for(lambda: len(site.rows("SELECT id FROM alerts")) == 2, 90,
                 "the second alert at the hospital")
        second = max(r[0] for r in site.rows("SELECT id FROM alerts"))
        site.box.stop()
        _review(hospital, wait, site, second, "复查后转诊")
        wait_for(lambda: site.rows("SELECT sent_at FROM downlinks WHERE alert_id = %s",
                                   (second,))[0][0] is not None, 60,
                 "the verdict to be handed to the broker while the box is down")
        assert site.box.db_rows("SELECT COUNT(*) FROM hospital_reviews")[0][0] == 1
        site.box.start()
        wait_for(lambda: site.box.db_rows("SELECT COUNT(*) FROM hospital_reviews")[0][0] == 2,
                 90, "the verdict to reach the box after its outage")
        wait_for(lambda: _answers(f"{site.box_viewer}/login"), 90, "the box's viewer")
        _login(clinic, site.box_viewer, NURSE)
        clinic.get(f"{site.box_viewer}/")
        clinic_wait.until(lambda d: len(d.find_elements(
            By.CSS_SELECTOR, "table.worklist .hospital-review")) == 2)
        clinic.save_screenshot(str(SHOTS / "4-box-worklist-two-verdicts-zh.png"))
        results = site.box.cli_json("results", "--studies")
        reviews = [s["hospital_review"] for s in results if s.get("hospital_review")]
        assert sorted(r["verdict"] for r in reviews) == ["refer", "refer"]
        assert {r["note"] for r in reviews} == {"请尽快转诊", "复查后转诊"}
    finally:
        hospital.quit()
        clinic.quit()

    # 4. the webhook fired once per alert, signed; nothing identifying went anywhere
    wait_for(lambda: len(site.sink.requests) >= 2, 60, "the webhook deliveries")
    bodies = [json.loads(request.body) for request in site.sink.requests]
    assert sorted(b["alert_id"] for b in bodies) == sorted(
        r[0] for r in site.rows("SELECT id FROM alerts"))
    assert all(signature_ok(SECRET, request.headers, request.body)
               for request in site.sink.requests)
    seen = b"".join(request.body for request in site.sink.requests)
    seen += b"".join(m.topic.encode() + m.payload for m in site.auditor.messages())
    seen += "".join(json.dumps(r) for r in site.rows("SELECT payload FROM downlinks")).encode()
    assert site.canaries.found_in(seen) == []

    # 5. the clinic's records: each study's result, then the verdict as a correction
    wait_for(lambda: len(site.mllp.received) >= 4 and len(site.fhir.bundles) >= 4, 60,
             "two results and two verdicts at the clinic's records systems")
    messages = site.mllp.messages()
    statuses = [next(s for s in m.children if s.name == "OBR").obr_25.value for m in messages]
    assert sorted(statuses) == ["C", "C", "F", "F"]
    held = "".join(site.mllp.received).encode()
    patients = {m.pid.pid_3.to_er7().split("^")[0] for m in messages}
    assert len(patients) == 2 and all(site.canaries.found_in(p.encode()) for p in patients)
    assert "请尽快转诊" in held.decode() and "复查后转诊" in held.decode()
    reports = site.fhir.resources("DiagnosticReport")
    assert sorted(r["status"] for r in reports) == ["amended", "amended", "final", "final"]
    assert not site.fhir.refused
    people = site.fhir.resources("Patient")
    assert {p["identifier"][0]["value"] for p in people} == patients
    # the identity went to the clinic's systems only: the hospital's capture still has none
    assert site.canaries.found_in(b"".join(m.topic.encode() + m.payload
                                           for m in site.auditor.messages())) == []


def test_check_box_proves_the_link_both_ways_and_the_console_shows_it(site: Site):
    """``central check-box`` through the real broker and the running box: the signed test goes
    down, the box keeps it and answers with a status at once; the box's page on the console
    says so, and the box's event log has it. A box nobody enrolled is refused with the fix."""
    import subprocess
    import sys

    wait_for(lambda: _answers(f"{site.box_viewer}/login"), 90, "the box (back after test 3)")
    done = subprocess.run([sys.executable, "-m", "clinibox", "central", "check-box",
                           f"{CLINIC}/{DEVICE}", "--config", str(site.config), "--timeout", "60",
                           "--as", "it-zhao"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "the link works both ways" in done.stdout
    [(kind,)] = site.rows("SELECT kind FROM downlinks WHERE seq = (SELECT MAX(seq) FROM"
                          " downlinks)")
    assert kind == downlink.KIND_LINK_CHECK
    assert site.box.db_rows("SELECT COUNT(*) FROM link_checks")[0][0] == 1
    assert site.box.db_rows("SELECT COUNT(*) FROM events WHERE code = 'downlink_link_check'"
                            )[0][0] == 1
    done = subprocess.run([sys.executable, "-m", "clinibox", "central", "check-box",
                           f"{CLINIC}/box-9", "--config", str(site.config), "--timeout", "5"],
                          capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**__import__("os").environ, "LANG": "zh_CN.UTF-8"})
    assert done.returncode == 2
    from central import link_check

    assert _zh(link_check.PROBLEM_WORDS["not_enrolled"]) % link_check.LITERALS in done.stderr
    assert "此设备尚未在本院登记" in done.stderr
