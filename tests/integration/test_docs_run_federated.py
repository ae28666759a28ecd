"""The hospital's federated run page (docs/hospital/federated-run.md) runs as written, and a
wrong set-up is refused at the command that causes it, saying the fix. Its Chinese page's
blocks and directives are this page's byte for byte (``tests/unit/test_docs_zh.py``), so
this run stands for both.

``tests/docs_run.py`` runs the page's blocks in one shell in namespaces of its own: the IT
person issues the SuperLink's certificate with the hospital CA (made by the broker page's own
block, the test's hook ``hospital-server``, which also lays the demo package where the page
says), starts ``clinibox central superlink`` and, once three boxes have joined, runs
``clinibox central federated-run``. The boxes (the hook ``boxes-join``) are three SuperNodes
started as a box's learning service starts them (``supernode_command`` in the box's
environment, whose ClientApps check the run's bundle), each over a case file the test writes
(random maps of the demo model's shape; a canary in its path), joining
``federation.hospital.example:9092`` and checking it against the hospital CA.

Then: the run's record is the page's run (3 rounds of 3 boxes, from the package's own head),
the command said so, the SuperLink's database and log hold no canary; and in the same shell,
a key that is not the certificate's, a CA that did not issue the SuperLink's certificate,
a certificate that does not name 127.0.0.1 (where the SuperLink's own ServerApp reaches
it), settings the boxes refuse, a port where nothing answers and a finished run's folder are each
refused with the fix, exit status 2; and a run asking for more boxes than joined ends after its
wait for them, saying what to check on the boxes.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from clinibox_common.contracts.federated import FederatedRun
from clinibox_common.contracts.run_claim import claimed_by
from converters.learning_artifact import package_head
from firmware_app.learning.bundle_check import supernode_environment
from firmware_app.learning.cases import LabelledCases, write_cases
from firmware_app.learning.node import supernode_command
from tests.box_harness import wait_for
from tests.docs_run import REPO, DocShell, run_pages

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGE = REPO / "docs" / "hospital" / "federated-run.md"
PACKAGE = REPO / "models" / "clinibox-demo-lesion" / "1.0.0"
SUPERLINK = "federation.hospital.example:9092"
FILES = "/etc/clinibox-central/federated"
RUNS = "/var/lib/clinibox-central/federated/runs"
RUN = f"{RUNS}/first"
BOXES = 3
CANARY = "CANARY-CLINIC-4d1e"


def _box_cases(seed: int) -> LabelledCases:
    rng = np.random.default_rng(seed)
    labels = (np.arange(12) % 2).astype(np.int8)
    maps = rng.random((12, 24, 8, 8)).astype(np.float32)
    maps[labels == 1, seed % 24, 2:4, 2:4] += 1.5
    return LabelledCases(maps, labels)


def _hospital_server(shell: DocShell) -> None:
    """The hospital CA as the broker page makes it (its first block), and the package the
    boxes run, where the page says."""
    broker = (REPO / "docs" / "hospital" / "broker.md").read_text()
    first = re.search(r"```sh\n(.*?)```", broker, re.S)
    assert first is not None and "ca.key" in first.group(1)
    shell.run(f"( {first.group(1)} )", what="the broker page's CA")
    shell.run(f"mkdir -p ~/packages && cp -r {shlex.quote(str(PACKAGE))}"
              " ~/packages/clinibox-demo-lesion-1.0.0", what="the package the boxes run")


def _boxes_join(folder: Path):
    """Three boxes' SuperNodes, each as its learning service starts it."""

    def hook(shell: DocShell) -> None:
        ca = shell.home / "hospital-ca" / "ca.pem"
        probe = ("from central.federated.superlink import superlink_problem as p; "
                 f"print('answers' if p({SUPERLINK!r}, {str(ca)!r}) is None else 'not yet')")
        wait_for(lambda: "answers" in shell.run(f"python -c {shlex.quote(probe)}",
                                                check=False), 120, "the SuperLink answering")
        for i in range(BOXES):
            box = folder / f"{CANARY}-box-{i}"
            cases = write_cases(box / "cases.npz", _box_cases(i))
            env = supernode_environment(box / "bin", {"PATH": "/usr/bin:/bin"})
            command = supernode_command(SUPERLINK, ca, cases, 9100 + i)
            shell.run(f"setsid env PATH={shlex.quote(env['PATH'])} {shlex.join(command)}"
                      f" < /dev/null > {shlex.quote(str(box / 'supernode.log'))} 2>&1 &",
                      what=f"box {i}'s SuperNode")

    return hook


def _refused(shell: DocShell, command: str) -> str:
    """``command``'s output; it must end with exit status 2."""
    output = shell.run(f"{command}; echo \"exit $?\"", check=False)
    assert output.rstrip().endswith("exit 2"), output
    return output


def test_the_federated_run_page_runs_as_written_and_refuses_a_wrong_set_up(tmp_path):
    shell = DocShell(tmp_path / "docs", hooks={"hospital-server": _hospital_server,
                                               "boxes-join": _boxes_join(tmp_path / "boxes")})
    try:
        ran = run_pages(shell, [PAGE])
        assert ran == {"docs/hospital/federated-run.md": 3}, ran
        said = "".join(p.read_text(errors="replace") for p in sorted(shell.logs.glob("*.log")))
        assert f"boxes summed in each round: {BOXES}, {BOXES}, {BOXES}" in said, said[-3000:]
        assert "no differential-privacy guarantee" in said
        out = shell.path(RUN)
        record = FederatedRun.read(out / "run.json")
        head, package = package_head(PACKAGE)
        assert record.package == package and record.rounds == 3
        assert record.boxes_per_round == [BOXES] * 3
        assert record.cases_per_round == [12 * BOXES] * 3
        assert record.initial_head == pytest.approx(list(head.as_vector()))
        assert not np.allclose(np.load(out / "head.npy"), head.as_vector())
        # the folder was claimed for the run Flower started, the one the record names
        assert record.run_id > 0 and claimed_by(out) == record.run_id
        assert f"run {record.run_id} of {package} started at {SUPERLINK}" in said
        # the hospital holds no box's canary (a case file's path) in its SuperLink's state
        held = shell.path("/var/lib/clinibox-central/federated/superlink.db").read_bytes()
        held += "".join(p.read_text(errors="replace") for p in shell.logs.glob("*-background.log")
                        ).encode()
        assert CANARY.encode() not in held and len(held) > 10_000

        # a wrong set-up, refused at its step with the fix
        said = _refused(shell, f"clinibox central superlink --certificate {FILES}/superlink.pem"
                               f" --key ~/hospital-ca/server.key --ca {FILES}/ca.pem --port 9200")
        assert "is not the key of" in said and "issued together" in said
        said = _refused(shell, f"clinibox central superlink --certificate {FILES}/superlink.pem"
                               f" --key {FILES}/superlink.key --ca ~/hospital-ca/superlink.pem"
                               " --port 9200")
        assert "was not issued by" in said
        # the broker's certificate names its host alone: the SuperLink's ServerApp would hang
        said = _refused(shell, "clinibox central superlink --certificate ~/hospital-ca/server.pem"
                               " --key ~/hospital-ca/server.key --ca ~/hospital-ca/ca.pem"
                               " --port 9200")
        assert "does not name IP:127.0.0.1" in said and "--host 0.0.0.0" in said
        run = (f"clinibox central federated-run --package ~/packages/clinibox-demo-lesion-1.0.0"
               f" --ca {FILES}/ca.pem")
        said = _refused(shell, f"{run} --superlink {SUPERLINK} --out {RUNS}/r2 --boxes 2")
        assert "at least 3 boxes" in said
        said = _refused(shell, f"{run} --superlink {SUPERLINK} --out {RUNS}/r2 --boxes 6"
                               " --secagg-threshold 3")
        assert "--secagg-threshold must be more than half" in said
        said = _refused(shell, f"{run} --superlink {SUPERLINK} --out ~/r2")
        assert f"--out must be a folder directly in {RUNS}" in said
        said = _refused(shell, f"{run} --superlink {SUPERLINK} --out {RUNS}/first/head.npy")
        assert f"--out must be a folder directly in {RUNS}" in said
        said = _refused(shell, f"{run} --superlink federation.hospital.example:9300"
                               f" --out {RUNS}/r2")
        assert "start the SuperLink first" in said
        shell.run("openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
                  " -keyout ~/other.key -out ~/other-ca.pem -days 30 -subj /CN=other"
                  " 2> /dev/null")
        said = _refused(shell, f"clinibox central federated-run --package"
                               f" ~/packages/clinibox-demo-lesion-1.0.0 --ca ~/other-ca.pem"
                               f" --superlink {SUPERLINK} --out {RUNS}/r2")
        assert "did not issue" in said
        said = _refused(shell, f"{run} --superlink {SUPERLINK} --out {RUN}")
        assert "already holds a finished run" in said
        said = _refused(shell, f"{run} --superlink {SUPERLINK} --out {RUNS}/r2 --package ~/r2")
        assert "cannot be read: --package must be the folder of a package" in said
        assert not shell.path(f"{RUNS}/r2").exists()
        # a run whose boxes do not all come ends after its wait, saying what to check on them
        said = shell.run(f"{run} --superlink {SUPERLINK} --out {RUNS}/r3 --boxes 4"
                         " --boxes-wait-hours 0.003; echo \"exit $?\"", check=False)
        assert said.rstrip().endswith("exit 1"), said
        assert "fewer than 4 boxes were connected within 0.003 h" in said, said
        assert "clinibox-learning" in said
        assert not shell.path(f"{RUNS}/r3/head.npy").exists()
    except BaseException:
        for log in [*sorted(shell.logs.glob("*.log"))[-6:],
                    *sorted((tmp_path / "boxes").glob("*/supernode.log"))]:
            print(f"--- {log}\n{log.read_text(errors='replace')[-2000:]}")
        raise
    finally:
        shell.close()
