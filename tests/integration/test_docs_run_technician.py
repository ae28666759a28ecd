"""The hospital's and the technician's pages together, run as written: a box installed from the
offline bundle, provisioned, enrolled, proven, given a hospital-signed package, and its
study's verdict back from the console.

In one shell in namespaces of its own (``tests/docs_run.py``): the hospital's IT person runs
the broker, receiver, console and enrolment pages; between the bundle and its enrolment the
technician (``docs/technician/install.md``, ``provision.md``) unpacks the offline bundle and
runs its ``install.sh`` (the real installer: ``/opt/clinibox``, the service user, the units),
provisions the box from the USB stick and restarts its services (Debian's and clinibox's own
unit lines, through the ``systemctl`` stand-in, as the user ``clinibox``); the hospital enrols
the code (what the box sent meanwhile is taken in) and proves the link with ``check-box``.
Then the technician's rehearsal (``docs/technician/model.md``): a maker key, two trial
packages, the hospital's signature, both installed from the stick and one rolled back; and
the live page (``docs/technician/live.md``): the live extra installed, the demonstration video
made and added as a source, and the box's status saying it is live. A study then reaches the
installed box, its alert the console, and the radiologist's verdict the box's study page.

``make wheelhouse``'s bundle is made out here beforehand by its own script: it needs the
package registry, which the pages' namespace has no network to reach.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib

from clinibox_common.contracts.statuses import LiveState
from tests.box_harness import wait_for
from tests.canary import write_canary_studies
from tests.docs_run import REPO, DocShell, browser, central_rows, run_page, run_pages

pytestmark = pytest.mark.integration

HOSPITAL = [REPO / "docs" / "hospital" / name
            for name in ("broker.md", "receiver.md", "console.md", "enrolment.md")]
TECHNICIAN = [REPO / "docs" / "technician" / name for name in ("install.md", "provision.md")]
REHEARSAL = REPO / "docs" / "technician" / "model.md"
LIVE = REPO / "docs" / "technician" / "live.md"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
RADIOLOGIST_PASSWORD = "reads-every-alert-2026"
NURSE = ("nurse-wang", "clinic-reads-2026")
NOTE = "请尽快转诊"


def _logs(shell: DocShell) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(shell.logs.glob("*.log")))


def _technician_visit(offline_bundle: Path):
    """The technician at the clinic, between the hospital's bundle and its enrolment."""

    def bundle_reaches_the_box(shell: DocShell) -> None:
        shell.run(f"cp {offline_bundle} .", what="the offline bundle, off the stick")

    def hook(shell: DocShell) -> None:
        shell.hooks["the-offline-bundle-reaches-the-box"] = bundle_reaches_the_box
        shell.run("mkdir -p /media/usb && cp ~/hospital-ca/box-1.bundle /media/usb/ "
                  "&& mkdir -p ~/at-the-box && cd ~/at-the-box", what="the USB stick")
        run_pages(shell, TECHNICIAN)
        codes = re.findall(r"clinibox central enrol-code (CBX1:\S+)", _logs(shell))
        assert codes, _logs(shell)[-3000:]
        shell.inputs["enrolment-code"] = codes[-1] + "\n"
        shell.run("cd ~/hospital-ca", what="back at the hospital")

    return hook


def _installed_box_runs(shell: DocShell) -> None:
    """The installed box's services run (the provision page restarted them), and the
    hospital has its status (taken in when it was enrolled)."""
    assert shell.run("systemctl is-active clinibox clinibox-web").split() == ["active",
                                                                               "active"]
    wait_for(lambda: central_rows(
        shell, "SELECT downlink_key FROM box_state WHERE clinic = 'clinic-a'"
               " AND device = 'box-1' AND downlink_key IS NOT NULL"), 60,
             "the installed box's status at the hospital")


def _live_source_starts(shell: DocShell) -> None:
    """Wait until the restarted box reads the demonstration video: its live process's state
    (``running``, said "Live") in the state file under the service's runtime folder."""
    seen = {"state": ""}

    def running() -> bool:
        text = shell.run("cat /run/clinibox/live/demo/state.json 2>&1 || true", check=False)
        try:
            seen["state"] = json.loads(text)["state"]
        except (ValueError, KeyError):
            seen["state"] = text[:300]
        return seen["state"] == LiveState.RUNNING

    deadline = time.monotonic() + 180
    while not running():
        assert time.monotonic() < deadline, f"the demonstration source is not live: {seen}"
        time.sleep(2)


@pytest.fixture(scope="module")
def offline_bundle(tmp_path_factory) -> Path:
    """``make wheelhouse EXTRAS=live``'s ``.tar.gz``, made by its own script (the install
    page installs it plain, the live page again with ``--extras live``)."""
    out = tmp_path_factory.mktemp("wheelhouse") / f"clinibox-{VERSION}-offline"
    done = subprocess.run([str(REPO / "scripts" / "build-wheelhouse.sh"), "--python",
                           sys.executable, "--extras", "live", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tarball = out.with_name(out.name + ".tar.gz")
    assert tarball.is_file()
    return tarball


@pytest.mark.timeout(900)  # the installs, the rehearsal and the video: about 4 minutes
def test_a_box_installed_provisioned_and_rehearsed_from_the_pages_gets_its_verdict(
        tmp_path, offline_bundle):
    shell = DocShell(tmp_path / "docs", inputs={
        "radiologist-password": f"{RADIOLOGIST_PASSWORD}\n{RADIOLOGIST_PASSWORD}\n",
        "it-desk-password": "watches-the-fleet-2026\n",
        "endo-password": "endo-canary-2026\n"},
        hooks={"technician-provisions-the-box": _technician_visit(offline_bundle),
               "the-box-runs": _installed_box_runs})
    try:
        ran = run_pages(shell, HOSPITAL)
        assert all(ran.values()), ran
        logs = _logs(shell)
        assert re.search(r"received [1-9]\d* message\(s\) clinic-a/box-1 sent before it was "
                         r"enrolled", logs), "the box's first status was not taken in"
        assert "the box answered: the link works both ways" in logs
        # the installed box runs as its service user, its viewer too (webcore in the wheel)
        table = [line.split(None, 1) for line in shell.run("ps -eo user=,args=").splitlines()]
        running = {(user, args.split()[-1]) for user, args in table
                   if "clinibox serve --no-web" in args or args.endswith("clinibox web")}
        assert running == {("clinibox", "--no-web"), ("clinibox", "web")}, table
        assert any(shell.scratch.rglob("enrol.png"))  # --qr-png wrote the code's picture

        # the rehearsal: trial packages, the hospital's signature, install and roll back
        assert run_page(shell, REHEARSAL) == 4
        logs = _logs(shell)
        assert ("made the TRIAL package clinibox-demo-lesion@1.0.1 from "
                "clinibox-demo-lesion@1.0.0") in logs
        assert "signed clinibox-demo-lesion@1.0.2 with key" in logs
        assert ("rolled back from clinibox-demo-lesion@1.0.2 to clinibox-demo-lesion@1.0.1"
                in logs)
        statuses = [line.split()[1] for line in logs.splitlines()
                    if line.startswith("running:")]
        assert statuses[-2:] == ["clinibox-demo-lesion@1.0.2", "clinibox-demo-lesion@1.0.1"]
        manifest = json.loads((shell.home / "rehearsal" / "trial-1.0.1" / "manifest.json")
                              .read_text())
        assert manifest["provenance"]["rehearsal"]["made_from"] == "clinibox-demo-lesion@1.0.0"
        assert manifest["intended_use"].endswith("not for clinical use")

        # the live page: the live extra installed, the demonstration video made and added as a
        # source, the box's status saying it is live
        shell.hooks["the-live-bundle-reaches-the-box"] = lambda sh: sh.run("cd ~/at-the-box")
        shell.hooks["the-live-source-starts"] = _live_source_starts
        assert run_page(shell, LIVE) == 7
        # the encoder's password file, made from what the technician typed: the service's alone
        assert "600 clinibox" in shell.run("stat -c '%a %U' /etc/clinibox/endo-1.password")
        assert "demo: Live" in _logs(shell).split("live sources")[-1]
        # the frame copied to measure the image area is the page's, its size as the page says
        assert "960x540" in shell.run("file /tmp/screen.jpg", what="the copied frame")
        assert "50-live-video.conf" in _logs(shell)

        # a study reaches the installed box; its alert reaches the console
        shell.run(f"runuser -u clinibox -- clinibox user add {NURSE[0]} --role clinician "
                  f"--password-stdin <<< {NURSE[1]!r}", what="the nurse's account")
        canaries = write_canary_studies(tmp_path / "canaries", 1, lesion=True)
        files = " ".join(str(p) for p in canaries.files)
        shell.run(f"/usr/bin/storescu -aec CLINIBOX 127.0.0.1 11112 {files}",
                  what="the modality (dcmtk)")
        wait_for(lambda: central_rows(shell, "SELECT id FROM alerts"), 240,
                 "the installed box's alert at the hospital")

        # the radiologist refers the patient on the console; the box's study page shows it
        answer = browser(shell, "review", "https://127.0.0.1:8443", "wang.li",
                         RADIOLOGIST_PASSWORD, NOTE)
        assert answer["status"] == 302, answer
        page = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not page:
            found = browser(shell, "study", "https://127.0.0.1:8080", *NURSE)
            page = found["page"] if found["study"] else ""
            time.sleep(0 if page else 2)
        assert "refer the patient" in page and NOTE in page
        db = shell.path("/var/lib/clinibox-central/central.db").read_bytes()
        assert canaries.found_in(db) == []
    except BaseException:
        for log in sorted(shell.logs.glob("*.log"))[-8:]:
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-2500:]}")
        for unit in sorted((shell.scratch / "units").glob("*.log")):
            print(f"--- {unit.name}\n{unit.read_text(errors='replace')[-2500:]}")
        raise
    finally:
        shell.close()
