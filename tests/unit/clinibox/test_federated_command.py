"""The hospital's federated commands' checks (``clinibox/federated_command.py``,
``central/federated/superlink.py``): the run's settings refused by the rule the boxes and
the ServerApp apply, the SuperLink's TLS files checked together, the defaults read from the
Flower App itself, and a finished run said in Chinese without an English sentence. The
commands against a real SuperLink and boxes: ``tests/integration/test_docs_run_federated.py``
and ``tests/integration/test_federated_box.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from central.federated import superlink as link
from clinibox import federated_command
from clinibox.central_command import main as central_main
from clinibox_common.contracts.federated import (
    MAX_CLIPPING_NORM,
    FederatedRun,
    PrivacyBudget,
    RunSettings,
    SecureAggregation,
)
from clinibox_common.errors import CliniboxError
from clinibox_common.i18n import use_locale
from firmware_app.learning.guard_mod import RoundRefused, check_clipping, check_setup
from tests.i18n_text import catalog_sentences, english_sentences, is_chinese
from tests.tls_certs import CertificateAuthority
from tests.unit.firmware_app.test_chinese_sweep import readable

REPO = Path(__file__).resolve().parents[3]
GOOD = RunSettings(boxes=5, rounds=5, local_steps=40, learning_rate=0.02, proximal=0.1,
                   clipping_norm=1.0, noise_multiplier=0.0, target_delta=1e-3,
                   secagg_threshold=3)


@pytest.mark.parametrize(("change", "code"), [
    ({"boxes": 2, "secagg_threshold": 2}, "too_few_boxes"),
    ({"secagg_threshold": 2}, "secagg_threshold_out_of_range"),
    ({"secagg_threshold": 5}, "secagg_threshold_out_of_range"),
    ({"clipping_norm": MAX_CLIPPING_NORM + 0.5}, "clipping_norm_out_of_bounds"),
    ({"clipping_norm": 0.0}, "clipping_norm_out_of_bounds"),
    ({"noise_multiplier": -0.1}, "noise_multiplier_out_of_range"),
    ({"noise_multiplier": float("inf")}, "setting_not_a_number"),
    ({"learning_rate": float("nan")}, "setting_not_a_number"),
    ({"rounds": 10**9}, "training_settings_out_of_range"),
    ({"proximal": 1e6}, "training_settings_out_of_range"),
    ({"target_delta": 1.0}, "target_delta_out_of_range"),
    ({"rounds": 0}, "training_settings_out_of_range"),
    ({"learning_rate": 0.0}, "training_settings_out_of_range"),
])
def test_settings_the_boxes_would_refuse_are_refused_first(change, code):
    assert GOOD.problem() is None
    assert dataclasses.replace(GOOD, **change).problem() == code


@pytest.mark.parametrize("boxes", range(3, 12))
def test_a_threshold_the_command_accepts_is_one_every_box_accepts(boxes):
    for threshold in range(1, boxes + 1):
        settings = dataclasses.replace(GOOD, boxes=boxes, secagg_threshold=threshold)
        try:
            check_setup(boxes, threshold, boxes)
            box_accepts = True
        except RoundRefused:
            box_accepts = False
        if settings.problem() is None:
            assert box_accepts, (boxes, threshold)
    with pytest.raises(RoundRefused):
        check_clipping(MAX_CLIPPING_NORM * 1.01)


def _args(**given) -> argparse.Namespace:
    keys = ("boxes", "rounds", "local_steps", "learning_rate", "proximal", "clipping_norm",
            "noise_multiplier", "target_delta", "secagg_threshold")
    return argparse.Namespace(**{k: given.get(k) for k in keys})


def test_the_defaults_are_the_flower_apps_and_the_threshold_the_smallest_majority():
    defaults = federated_command.app_defaults()
    settings = federated_command.run_settings(_args())
    assert settings.run_config() == {k: defaults[k] for k in settings.run_config()}
    assert federated_command.run_settings(_args(boxes=8)).secagg_threshold == 5
    assert federated_command.run_settings(_args(boxes=8, secagg_threshold=6)
                                          ).secagg_threshold == 6


def test_tls_files_that_do_not_belong_together_are_named(tmp_path):
    ca = CertificateAuthority.create(tmp_path / "ca")
    cert, key = ca.issue_server("federated.hospital.example", tmp_path / "ca", stem="link")
    other = CertificateAuthority.create(tmp_path / "other", name="another CA")
    stray_cert, stray_key = other.issue_server("federated.hospital.example", tmp_path / "other",
                                               stem="stray")
    assert link.tls_problem(cert, key, ca.cert_path) is None
    assert link.tls_problem(cert, stray_key, ca.cert_path) == "key_not_the_certificates"
    assert link.tls_problem(stray_cert, stray_key, ca.cert_path) == \
        "certificate_not_issued_by_ca"
    assert link.tls_problem(key, key, ca.cert_path) == "certificate_unreadable"
    assert link.tls_problem(cert, cert, ca.cert_path) == "key_unreadable"
    assert link.tls_problem(cert, key, tmp_path / "none.pem") == "file_unreadable"
    # a "CA" file that holds another CA too: the one that issued it counts
    both = tmp_path / "both.pem"
    both.write_bytes(other.cert_path.read_bytes() + ca.cert_path.read_bytes())
    assert link.tls_problem(cert, key, both) is None
    # a leaf as the CA (CA:FALSE) is no CA, whatever it signed
    assert link.tls_problem(cert, key, stray_cert) == "certificate_not_issued_by_ca"


def test_the_certificate_names_where_the_superlinks_own_serverapp_reaches_it(tmp_path):
    ca = CertificateAuthority.create(tmp_path / "ca")
    away, away_key = ca.issue_server("federated.hospital.example", tmp_path / "ca", stem="away",
                                     ip="10.20.0.5")
    assert link.tls_problem(away, away_key, ca.cert_path) == "certificate_lacks_serverapp_name"
    assert link.tls_problem(away, away_key, ca.cert_path, "10.20.0.5") is None
    assert link.tls_problem(away, away_key, ca.cert_path, "federated.hospital.example") is None
    assert link.tls_problem(away, away_key, ca.cert_path, "::") == \
        "certificate_lacks_serverapp_name"
    assert str(link.serverapp_name("0.0.0.0").value) == "127.0.0.1"
    assert str(link.serverapp_name("[::]").value) == "::1"


def test_the_hospital_installs_only_its_own_serverapps_bundle(tmp_path):
    from flwr.cli.build import build_fab_from_disk

    from central.federated.serverapp_check import check_bundle
    from clinibox_common.contracts.flower_bundle import BundleRefused

    check_bundle(build_fab_from_disk(link.FLOWER_APP))
    hostile = REPO / "tests" / "federated_hostile"
    for app, code in ((hostile / "server_code", "bundle_carries_files"),
                      (hostile / "app", "bundle_names_another_serverapp")):
        with pytest.raises(BundleRefused) as refused:
            check_bundle(build_fab_from_disk(app))
        assert str(refused.value) == code


def test_the_superlink_finds_the_checking_serverapp_first(tmp_path):
    env = link.superlink_environment(tmp_path, tmp_path / "runs", {"PATH": "/usr/bin"})
    assert env["CLINIBOX_FEDERATED_RUNS"] == str(tmp_path / "runs")
    first = env["PATH"].split(":")[0]
    assert (Path(first) / "flwr-serverapp").is_file()
    assert "central.federated.serverapp_check" in (Path(first) / "flwr-serverapp").read_text()
    assert env["FLWR_HOME"] == str(tmp_path / "flwr-home")


@pytest.mark.parametrize(("address", "parts"), [
    ("federated.hospital.example:9092", ("federated.hospital.example", 9092)),
    ("[::1]:9092", ("::1", 9092)), ("10.0.0.2", None), ("host:0", None), (":9092", None)])
def test_the_superlink_address_is_host_and_port(address, parts):
    assert link.split_address(address) == parts


def test_a_closed_port_is_said_as_no_superlink(tmp_path):
    ca = CertificateAuthority.create(tmp_path / "ca")
    assert link.superlink_problem("127.0.0.1:9", ca.cert_path, timeout=2) == \
        "superlink_not_answering"
    assert link.superlink_problem("nowhere", ca.cert_path) == "address_not_host_port"


def test_out_must_be_a_new_or_empty_folder_in_the_runs_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert federated_command._checked_out(str(tmp_path / "empty"), tmp_path) == \
        tmp_path / "empty"
    assert federated_command._checked_out(str(tmp_path / "new"), tmp_path) == tmp_path / "new"
    named = federated_command._checked_out(None, tmp_path)
    assert named.parent == tmp_path and named.name.startswith("run-")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("x")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "run.json").write_text("{}")
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    for out, words in (("used", "is not a new or empty folder"), ("file", "is not a new"),
                       ("done", "already holds a finished run"), ("link", "is not a new"),
                       ('a"b', "without quotes"), ("../elsewhere", "directly in"),
                       ("", "directly in"), ("done/head.npy", "directly in")):
        with pytest.raises(CliniboxError) as refused:
            federated_command._checked_out(str(tmp_path / out), tmp_path)
        assert words in str(refused.value), (out, refused.value)


def test_a_package_a_run_cannot_start_from_is_named_by_its_code(tmp_path):
    import json
    import shutil

    from converters.learning_artifact import PackageHeadError, package_head

    package = tmp_path / "package"
    shutil.copytree(REPO / "models" / "clinibox-demo-lesion" / "1.0.0", package)
    head, name = package_head(package)
    assert head.channels == 24 and name == "clinibox-demo-lesion 1.0.0"
    manifest = json.loads((package / "manifest.json").read_text())

    def code_of(folder) -> str:
        with pytest.raises(PackageHeadError) as refused:
            package_head(folder)
        return refused.value.code

    assert code_of(tmp_path / "nowhere") == "no_manifest"
    (package / "manifest.json").write_text(json.dumps({**manifest, "learning": {"files": []}}))
    assert code_of(package) == "no_trainable_model"
    (package / "manifest.json").write_text(json.dumps(manifest))
    trainable = package / manifest["learning"]["path"]
    trainable.write_bytes(b"not onnx")
    assert code_of(package) == "trainable_model_not_listed"
    from clinibox_common.contracts.manifest import sha256_file

    manifest["learning"]["files"][manifest["learning"]["path"]] = sha256_file(trainable)
    (package / "manifest.json").write_text(json.dumps(manifest))
    assert code_of(package) == "trainable_model_unreadable"


def test_refused_settings_write_nothing(tmp_path, capsys):
    code = central_main(["federated-run", "--package", str(tmp_path), "--superlink",
                         "127.0.0.1:9", "--ca", str(tmp_path / "ca.pem"), "--runs",
                         str(tmp_path), "--out", str(tmp_path / "run"), "--clipping-norm",
                         "9"])
    assert code == 2
    assert "--clipping-norm must be more than 0 and at most 4" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("hours", [["--boxes-wait-hours", "0"],
                                   ["--boxes-wait-hours", "25", "--timeout-hours", "48"],
                                   ["--boxes-wait-hours", "13"],  # beyond --timeout-hours 12
                                   ["--boxes-wait-hours", "11.95"]])  # no 5 min before it
def test_a_wait_for_the_boxes_the_command_cannot_see_end_is_refused(tmp_path, capsys, hours):
    """The run's wait for its boxes must end while the command still waits for the run:
    otherwise the hospital would never read that its boxes did not come."""
    code = central_main(["federated-run", "--package", str(tmp_path), "--superlink",
                         "127.0.0.1:9", "--ca", str(tmp_path / "ca.pem"), "--runs",
                         str(tmp_path), "--out", str(tmp_path / "run"), *hours])
    assert code == 2
    assert "--boxes-wait-hours must be at least 0.003" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _record(epsilon: float | None) -> FederatedRun:
    return FederatedRun(
        package="clinibox-demo-lesion 1.0.0", rounds=3, boxes_per_round=[5, 4, 5],
        local_steps=40, proximal=0.1,
        privacy=PrivacyBudget(1.0, 0.0 if epsilon is None else 1.1, 1e-3, epsilon),
        secure_aggregation=SecureAggregation("secagg+", 5, 3), started="s", ended="e",
        flower_version="1.42.0", cases_per_round=[210, 180, 211],
        initial_head=list(np.zeros(25)))


@pytest.mark.parametrize("epsilon", [None, 3.27])
def test_a_finished_run_is_said_in_chinese(tmp_path, capsys, epsilon):
    with use_locale("zh_CN"):
        federated_command._say_done(_record(epsilon), tmp_path / "federated-run")
    words = capsys.readouterr().out
    assert english_sentences(readable(words)) == [] and catalog_sentences(words) == [], words
    assert is_chinese(words)
    assert "5, 4, 5" in words and "210, 180, 211" in words
    assert ("ε 3.3" in words) == (epsilon is not None), words
    assert f"--federated-run {tmp_path / 'federated-run'}" in words


def test_flowers_json_is_read_through_colours_and_nothing_else_is_a_run():
    """Flower prints its JSON through Rich, which colours it where FORCE_COLOR is set: the
    run's number and status are read through the colours; anything else is no run."""
    coloured = ('\x1b[1m{\x1b[0m\n  \x1b[94m"success"\x1b[0m: \x1b[3;92mtrue\x1b[0m,\n'
                '  \x1b[94m"run-id"\x1b[0m: \x1b[32m"18446744073709551615"\x1b[0m\n\x1b[1m}\x1b[0m')
    assert link.started_run(coloured) == 18446744073709551615
    assert link.started_run('{"success": true, "run-id": "42"}') == 42
    for nothing in ("", "Successfully started run 42", '{"success": false, "run-id": "42"}',
                    '{"success": true, "run-id": "-4"}', '{"success": true, "run-id": "²"}',
                    '[1, 2]'):
        assert link.started_run(nothing) is None, nothing
    listed = '{"success": true, "runs": [{"run-id": "42", "status": "finished:stopped"}]}'
    assert link.run_status(listed) == "finished:stopped"
    assert link.run_status('{"success": false, "error-message": "x"}') is None
    assert link.run_status("not json") is None
    assert "FORCE_COLOR" not in link.command_environment(Path("/nowhere"))


def _flwr_stand_in(tmp_path: Path, statuses: list[str]) -> tuple[list[str], list[str]]:
    """Commands standing in for ``flwr log`` (one line, then its end) and ``flwr ls`` (the
    next of ``statuses``, one a call): what the SuperLink would answer, without one."""
    told = tmp_path / "statuses"
    told.write_text("\n".join(statuses))
    script = ("import json, pathlib, sys; p = pathlib.Path(sys.argv[1]); s = "
              "p.read_text().splitlines(); p.write_text('\\n'.join(s[1:])); print(json.dumps("
              "{'success': True, 'runs': [{'run-id': '7', 'status': s[0]}]}))")
    return ([sys.executable, "-c", "print('a line of the ServerApp')"],
            [sys.executable, "-c", script, str(told)])


def test_a_broken_log_stream_is_attached_again_and_a_stopped_run_is_said(tmp_path,
                                                                      monkeypatch):
    """``flwr log`` also ends when its connection breaks: while the SuperLink says the run
    goes on, the command attaches again; a run someone stopped is said as stopped."""
    log_command, status_command = _flwr_stand_in(tmp_path, ["running", "finished:stopped"])
    monkeypatch.setattr(link, "log_command", lambda run_id: log_command)
    monkeypatch.setattr(link, "status_command", lambda run_id: status_command)
    monkeypatch.setattr(federated_command, "REATTACH_S", 0.0)
    with (tmp_path / "server.log").open("w") as log_file:
        status = federated_command._follow(7, tmp_path, log_file, 60.0, tmp_path)
    assert status == "finished:stopped"
    said = (tmp_path / "server.log").read_text()
    assert said.count("a line of the ServerApp") == 2
    assert "stream ended while run 7 is running; attached again" in said


def test_a_superlink_that_no_longer_answers_is_said_as_such(tmp_path, monkeypatch):
    log_command, _ = _flwr_stand_in(tmp_path, [])
    monkeypatch.setattr(link, "log_command", lambda run_id: log_command)
    monkeypatch.setattr(link, "status_command",
                        lambda run_id: [sys.executable, "-c", "raise SystemExit(1)"])
    monkeypatch.setattr(federated_command, "REATTACH_S", 0.0)
    with (tmp_path / "server.log").open("w") as log_file:
        assert federated_command._follow(7, tmp_path, log_file, 60.0, tmp_path) is None


def test_a_run_still_going_at_the_deadline_is_said_to_go_on(tmp_path, monkeypatch):
    """The log's stream ends just before the deadline and the SuperLink then says the run
    goes on: the command says it stopped waiting and the run goes on, never that it ended."""
    log_command, status_command = _flwr_stand_in(tmp_path, ["running"])
    monkeypatch.setattr(link, "log_command", lambda run_id: log_command)
    monkeypatch.setattr(link, "status_command", lambda run_id: status_command)
    with (tmp_path / "server.log").open("w") as log_file, \
            pytest.raises(CliniboxError, match="no end after"):
        federated_command._follow(7, tmp_path, log_file, 0.0001, tmp_path)
