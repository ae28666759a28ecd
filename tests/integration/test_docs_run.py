"""The hospital's set-up pages run as written, end to end, and the loop they build works.

``tests/docs_run.py`` runs every ``sh`` block of the broker, receiver, console, enrolment,
model-signing and rollouts pages in order, in one shell in namespaces of its own (``/etc`` and
``/var`` overlays, a loopback of its own), with the real Mosquitto (started by Debian's own
unit lines), the receiver, the console and a box: the hospital's IT person makes the CA, the
broker's files, checks and starts the broker, makes the keys, writes the configuration, starts
the receiver and the console, adds the accounts, issues the bundle; a technician provisions a
box with it (the test's hook); the IT person enrols the box's code and proves the link with
``check-box``. A model maker (the test's hook: a trial package of the demo model 1.0.0 the box
runs, version 1.1.0, signed with a maker key of its own) sends a package; the IT person
verifies it, signs it with the hospital's model-signing key, sets ``[rollouts]``, restarts the
receiver and the console (the hook's Ctrl-C and start again; the console then offers the
archive), starts rollout 1 to the box as its canary, watches, holds and resumes it; the box
installs it on trial, and goes back to 1.0.0 when the rollout is rolled back (its own
``clinibox model status`` says so). Then a study reaches the box, its alert reaches the
console, the radiologist refers the patient there, and the verdict and note reach the box's
study page.

Every block of these pages runs; none is skipped but enrolment's three illustrations (a code
typed by hand, an enrolment from a key file, a revocation), which the scanned code's block and
the pages' own flow stand for.

A page that stops running as written fails here, with the block and its output.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path

import pytest

from tests.box_harness import to_toml, wait_for
from tests.canary import write_canary_studies
from tests.docs_run import REPO, DocShell, browser, central_rows, run_pages

pytestmark = pytest.mark.integration

PAGES = [REPO / "docs" / "hospital" / name
         for name in ("broker.md", "receiver.md", "console.md", "enrolment.md",
                      "model-signing.md", "rollouts.md")]
RADIOLOGIST_PASSWORD = "reads-every-alert-2026"
NURSE = ("nurse-wang", "clinic-reads-2026")
NOTE = "请尽快转诊"
IT_DESK_PASSWORD = "watches-the-fleet-2026"
CONFIG = "/etc/clinibox-central/central.toml"
CONSOLE = "https://127.0.0.1:8443"
#: the package the model maker sends, a new version of the demo package the box runs
PACKAGE, NEW_VERSION = "clinibox-demo-lesion", "1.1.0"


def pages(language: str) -> list[Path]:
    """The pages in ``language``: ``broker.zh.md`` beside ``broker.md`` is its Chinese page
    (mkdocs-static-i18n); a page not translated yet is read in English, as the site shows it."""
    if language == "en":
        return PAGES
    return [page.with_name(f"{page.stem}.{language}.md")
            if page.with_name(f"{page.stem}.{language}.md").exists() else page
            for page in PAGES]


def _provision(box: Path):
    """The technician's visit: provision the box from the bundle the enrolment page wrote,
    and hand the enrolment code it printed to the hospital (the page's scanner input)."""

    def hook(shell: DocShell) -> None:
        box.mkdir(parents=True, exist_ok=True)
        (box / "box.toml").write_text(to_toml({
            "storage": {"state_dir": str(box / "state")},
            "dicom": {"host": "127.0.0.1", "port": 11112},
            "web": {"enabled": True, "host": "127.0.0.1", "port": 8080},
            "studies": {"stable_seconds": 1.0},
            # the rollout's download at 2 Mbit/s: about 17 s for the demo's 4 MB (at the
            # default 256 kbit/s about 2 minutes, as the rollouts page says), long enough for
            # the page's --hold and --resume to find the rollout still on its way to the box
            "updates": {"max_kbps": 2048},
            "telemetry": {"heartbeat_seconds": 5.0, "retry_min_seconds": 0.2,
                          "retry_max_seconds": 2.0}}))
        output = shell.run(f"clinibox provision ~/hospital-ca/box-1.bundle --config {box}/box.toml",
                           what="the technician's clinibox provision")
        code = re.search(r"clinibox central enrol-code (CBX1:\S+)", output)
        assert code is not None, output
        shell.inputs["enrolment-code"] = code.group(1) + "\n"
        # a demonstration box: it runs the phantom-trained demo model, signed with the DEMO key,
        # which provision (rightly) stops trusting; a clinic's box gets a hospital-signed package
        config = (box / "box.toml").read_text()
        assert "trust_demo_key = false" in config
        (box / "box.toml").write_text(config.replace("trust_demo_key = false",
                                                     "trust_demo_key = true"))
        shell.run(f"clinibox user add {NURSE[0]} --role clinician --password-stdin "
                  f"--config {box}/box.toml <<< {NURSE[1]!r}", what="the nurse's account")

    return hook


def _start_box(box: Path):
    """The box runs at the clinic: ``clinibox serve`` until its status reaches the hospital."""

    def hook(shell: DocShell) -> None:
        shell.run(f"setsid clinibox serve --config {box}/box.toml > {box}/serve.log 2>&1 &",
                  what="the box's clinibox serve")
        wait_for(lambda: central_rows(
            shell, "SELECT downlink_key FROM box_state WHERE clinic = 'clinic-a'"
                   " AND device = 'box-1' AND downlink_key IS NOT NULL"), 180,
                 "the box's first status at the hospital")

    return hook


def _maker_sends_a_package(shell: DocShell) -> None:
    """The model maker, another party on its own machine: a key of its own and a package
    signed with it (a trial package: the demo's weights under 1.1.0), sent with its public key
    to the hospital's ``~/incoming`` (the model-signing page)."""
    shell.run(f"( mkdir -p ~/maker ~/incoming && cd ~/maker"
              f" && clinibox keys generate --kind signing --out maker"
              f" && clinibox model trial-package --key maker.pem --version {NEW_VERSION}"
              f" --out {PACKAGE}-{NEW_VERSION} && cp -r {PACKAGE}-{NEW_VERSION} maker.pub"
              f" ~/incoming/ )", what="the model maker's package")


def _restart_receiver_and_console(shell: DocShell) -> None:
    """The IT person stops ``clinibox central serve`` and ``web`` in their terminals (Ctrl-C:
    SIGINT to the terminal's process group) and starts them again as their pages show; the
    console then offers the archive of ``[rollouts] packages_dir``."""
    for command in ("serve", "web"):
        pattern = shlex.quote(f"clinibox central {command} --config")
        shell.run(f"kill -INT -- $(ps -o pgid= -p \"$(pgrep -o -f {pattern})\" | tr -d ' '"
                  f" | sed 's/^/-/')", what=f"Ctrl-C to clinibox central {command}")
        shell.run(f"while pgrep -f {pattern} > /dev/null; do sleep 0.2; done", timeout=60,
                  what=f"clinibox central {command} stopping")
        shell.run(f"setsid clinibox central {command} --config {CONFIG} < /dev/null"
                  f" > {shell.logs}/restarted-{command}.log 2>&1 &",
                  what=f"clinibox central {command} again")
    wait_for(lambda: shell.run("curl -sk -o /dev/null -w '%{http_code}' "
                               "https://127.0.0.1:8443/login", check=False).strip() == "200",
             60, "the console again")
    page = browser(shell, "rollouts", CONSOLE, "it-desk", IT_DESK_PASSWORD)["page"]
    assert f"{PACKAGE}-{NEW_VERSION}.tar.gz" in page, page[-3000:]


def _model_status(shell: DocShell, box: Path) -> dict:
    """What the box runs, as its ``clinibox model status --json`` says."""
    return json.loads(shell.run(f"clinibox model status --json --config {box}/box.toml",
                                what="the box's clinibox model status"))


def _box_installs_the_package(box: Path):
    """The box fetches the rollout's package, installs it and reports ``on_trial``."""

    def hook(shell: DocShell) -> None:
        wait_for(lambda: central_rows(
            shell, "SELECT step FROM rollout_targets WHERE rollout_id = 1 AND clinic ="
                   " 'clinic-a' AND device = 'box-1' AND step = 'on_trial'"), 120,
                 "the box's on_trial at the hospital")
        status = _model_status(shell, box)
        assert status["running"] == f"{PACKAGE}@{NEW_VERSION}", status
        assert status["previous"] == "1.0.0" and status["trial"], status

    return hook


def _box_goes_back(box: Path):
    """The rollback order reaches the box: it runs the model it ran before the rollout."""

    def hook(shell: DocShell) -> None:
        wait_for(lambda: central_rows(
            shell, "SELECT step FROM rollout_targets WHERE rollout_id = 1 AND step ="
                   " 'rolled_back'"), 120, "the box's rolled_back at the hospital")
        status = _model_status(shell, box)
        assert status["running"] == f"{PACKAGE}@1.0.0", status
        assert status["active"] == "1.0.0" and not status["trial"], status
        # the box reloads to run it (a modality's association meanwhile is refused, and the
        # modality sends again): the study of the next step waits for the reloaded box, ready
        # with the model it went back to, to answer

        def reloaded() -> bool:
            ready = [line for line in (box / "serve.log").read_text(errors="replace")
                     .splitlines() if "clinibox ready: model" in line]
            return bool(ready) and ready[-1].endswith(f"{PACKAGE}@1.0.0")

        wait_for(reloaded, 120, "the box ready again after its reload")
        wait_for(lambda: "answers" in shell.run(
            "/usr/bin/echoscu -aec CLINIBOX 127.0.0.1 11112 && echo answers", check=False),
            120, "the box's DICOM port after its reload")

    return hook


@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_hospitals_pages_run_as_written_and_a_verdict_reaches_the_box(tmp_path, language):
    box = tmp_path / "box"
    shell = DocShell(tmp_path / "docs", inputs={
        "radiologist-password": f"{RADIOLOGIST_PASSWORD}\n{RADIOLOGIST_PASSWORD}\n",
        "it-desk-password": f"{IT_DESK_PASSWORD}\n"},
        hooks={"technician-provisions-the-box": _provision(box),
               "the-box-runs": _start_box(box),
               "the-maker-sends-a-package": _maker_sends_a_package,
               "the-receiver-and-the-console-restart": _restart_receiver_and_console,
               "the-box-installs-the-package": _box_installs_the_package(box),
               "the-box-goes-back": _box_goes_back(box)})
    try:
        ran = run_pages(shell, pages(language))
        assert all(ran.values()), ran  # every page had blocks, and each ran
        if language == "zh":  # the Chinese pages, where there are, not their English ones
            assert [name for name in ran if name.endswith(".zh.md")], ran
        # the broker runs as Debian's unit runs it, as the user mosquitto
        assert shell.run("systemctl is-active mosquitto").strip() == "active"
        owner = shell.run("ps -o user= -C mosquitto").split()
        assert owner == ["mosquitto"], owner
        # a key the broker's user cannot read is refused before the broker is started
        shell.run("chmod 0600 /etc/mosquitto/certs/server.key")
        refused = shell.run("clinibox central check-broker || echo REFUSED", check=False)
        assert "unreadable" in refused and "REFUSED" in refused
        assert "chgrp mosquitto /etc/mosquitto/certs/server.key" in refused
        shell.run("chmod 0640 /etc/mosquitto/certs/server.key && clinibox central check-broker")
        # the rollout: held and resumed by a person, installed on trial, then rolled back
        assert central_rows(shell, "SELECT id, name, version, state FROM rollouts") == [
            (1, PACKAGE, NEW_VERSION, "rolled_back")]
        assert [row[0] for row in central_rows(
            shell, "SELECT action FROM console_audit WHERE action LIKE 'rollout%'"
                   " OR action LIKE 'rollback%' ORDER BY id")] == [
            "rollout_started", "rollout_paused", "rollout_resumed", "rollback_sent"]
        # check-box proved the link both ways
        logs = "".join(p.read_text(errors="replace") for p in sorted(shell.logs.glob("*.log")))
        assert "the box answered: the link works both ways" in logs

        # a study reaches the box; its alert reaches the console
        canaries = write_canary_studies(tmp_path / "canaries", 1, lesion=True)
        files = " ".join(str(p) for p in canaries.files)
        shell.run(f"/usr/bin/storescu -aec CLINIBOX 127.0.0.1 11112 {files}",
                  what="the modality (dcmtk)")
        wait_for(lambda: central_rows(shell, "SELECT id FROM alerts"), 180,
                 "the alert at the hospital")

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
        assert page, "the verdict never reached the box's study page"
        assert "refer the patient" in page and NOTE in page
        # nothing identifying reached the hospital's database
        db = shell.path("/var/lib/clinibox-central/central.db").read_bytes()
        assert canaries.found_in(db) == []
    except BaseException:
        for log in sorted(shell.logs.glob("*.log"))[-6:]:
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}")
        serve_log = box / "serve.log"
        if serve_log.exists():
            print(f"--- box serve.log\n{serve_log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        shell.close()
        time.sleep(0.5)
