"""``clinibox central superlink`` and ``clinibox central federated-run``: the hospital's side of
federated fine-tuning (decision 0056, docs/hospital/federated.md).

``superlink`` runs Flower's SuperLink over TLS with the hospital's certificate, after checking
that the certificate, its key and the CA the boxes trust belong together. ``federated-run``
starts a run of clinibox's Flower App: it refuses, before anything starts, settings the boxes
or the ServerApp would refuse later, a SuperLink that does not answer or shows a certificate
the boxes would refuse, and a package without a trainable model; it writes the package's head
as the run's start, runs ``flwr run`` with the ServerApp's log in a file, and says what the run
did, or why it ended without a head. The wiring of the package's head (``converters``) and the
SuperLink (``central.federated``) is here, above both.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from central.federated import superlink as link
from clinibox_common.contracts.federated import (
    BOXES_WAIT_S,
    DEFAULT_RUNS,
    MIN_BOXES,
    FederatedRun,
    RunSettings,
    directly_in_runs,
)
from clinibox_common.contracts.run_claim import ClaimRefused, write_claim
from clinibox_common.errors import EXIT_OK, EXIT_USAGE, CliniboxError
from clinibox_common.i18n import N_, formats
from clinibox_common.i18n import gettext as _
from clinibox_common.i18n.error_words import error_words

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: what each refusal of the run's settings says, with the fix
SETTINGS_WORDS = {
    "too_few_boxes": N_("a run needs at least %(min)d boxes (--boxes): secure aggregation "
                        "cannot hide one box's update among fewer"),
    "secagg_threshold_out_of_range": N_(
        "--secagg-threshold must be more than half of --boxes and fewer than all of them "
        "(for 5 boxes: 3 or 4); the boxes refuse a round that asks less"),
    "clipping_norm_out_of_bounds": N_("--clipping-norm must be more than 0 and at most 4: the "
                                      "boxes refuse a larger one"),
    "setting_not_a_number": N_("every setting must be a finite number"),
    "noise_multiplier_out_of_range": N_("--noise-multiplier must lie between 0 and 100"),
    "target_delta_out_of_range": N_("--target-delta must lie between 0 and 1"),
    "training_settings_out_of_range": N_(
        "--rounds must lie between 1 and 1000, --local-steps between 1 and 10000, "
        "--learning-rate above 0 and at most 1, --proximal between 0 and 100"),
}
#: what each problem of the SuperLink's TLS files or address says, with the fix
LINK_WORDS = {
    "file_unreadable": N_("cannot read %(certificate)s, %(key)s or %(ca)s (does the file exist, "
                          "and may this account read it?)"),
    "certificate_unreadable": N_("cannot read %(certificate)s as a PEM certificate"),
    "key_unreadable": N_("cannot read %(key)s as a PEM private key without a password"),
    "ca_unreadable": N_("cannot read %(ca)s as the CA's PEM certificate"),
    "key_not_the_certificates": N_("%(key)s is not the key of %(certificate)s: give the key "
                                   "and certificate that were issued together"),
    "certificate_not_issued_by_ca": N_(
        "%(certificate)s was not issued by %(ca)s, the CA the boxes check the SuperLink "
        "against: issue the SuperLink's certificate with that CA"),
    "certificate_expired": N_("%(certificate)s is outside its validity dates: issue a new one"),
    "certificate_lacks_serverapp_name": N_(
        "%(certificate)s does not name %(name)s: the SuperLink's own ServerApp reaches it "
        "there (--host %(host)s) and would refuse it, and every run would wait with nothing "
        "said. Issue it with %(name)s in subjectAltName beside the host name the boxes use"),
    "address_not_host_port": N_("--superlink must be HOST:PORT (for example "
                                "federated.hospital.example:9092)"),
    "superlink_not_answering": N_(
        "nothing answers over TLS at %(address)s: start the SuperLink first (clinibox "
        "central superlink) and check the address"),
    "superlink_certificate_refused": N_(
        "the SuperLink at %(address)s shows a certificate that %(ca)s did not issue for that "
        "host name, and the boxes would refuse it too: give the CA that issued it, or the "
        "name its certificate holds"),
}
#: why a run ended without a head
RUN_WORDS = {
    "round_not_aggregated": N_(
        "the run ended without a head: fewer boxes answered than secure aggregation needs "
        "(%(boxes)d). Check that the boxes are in the round and their learning service "
        "(clinibox-learning) runs. The ServerApp's log: %(log)s"),
    "too_few_boxes_connected": N_(
        "the run ended without a head: fewer than %(boxes)d boxes were connected within "
        "%(hours)s h of a round's start. On each box of the run check that [learning] is "
        "enabled with this SuperLink's address, that its [learning] hours include now, and "
        "that its learning service (clinibox-learning) runs. The ServerApp's log: %(log)s"),
    "run_stopped": N_(
        "run %(run)d was stopped at the SuperLink before it ended (flwr stop): no head was "
        "written. Anyone who reaches the SuperLink's port can stop a run; open it only to the "
        "boxes and this server. The ServerApp's log: %(log)s"),
    "superlink_lost": N_(
        "the SuperLink stopped answering before run %(run)d ended: the run may go on there "
        "and write its head into %(out)s when it ends. The ServerApp's log so far: %(log)s"),
    "run_failed": N_("the run ended without a head; the ServerApp's log says why: %(log)s"),
}
#: why a package cannot start a run (converters.learning_artifact.package_head's codes)
PACKAGE_WORDS = {
    "no_manifest": N_("%(path)s cannot be read: --package must be the folder of a package"),
    "no_trainable_model": N_("%(path)s carries no trainable model: convert the model again "
                             "with this version of clinibox"),
    "trainable_model_not_listed": N_("%(path)s is missing, or not the file the package's "
                                     "manifest lists: use the package as it was signed"),
    "trainable_model_unreadable": N_("%(path)s cannot be read as the package's trainable "
                                     "model: convert the model again with this version of "
                                     "clinibox"),
}
#: the longest Flower's ``flwr run`` may take to hand the run to the SuperLink
START_TIMEOUT_S = 120.0
#: how often the command asks the SuperLink whether a run goes on, and waits between
STATUS_TRIES, REATTACH_S = 3, 5.0
#: Flower's statuses of a run that has ended, and of one stopped by a person (flwr stop)
FINISHED, STOPPED = "finished", "finished:stopped"
#: the codes in the ServerApp's log that say why a run ended without a head, the first found
#: first (server_app.py's RoundNotAggregated, boxes_wait.py's TooFewBoxes)
RUN_ENDINGS = (("too_few_boxes_connected", "too_few_boxes_connected"),
               ("RoundNotAggregated", "round_not_aggregated"))


def cmd_superlink(args: argparse.Namespace, _config: object) -> int:
    """Run Flower's SuperLink over TLS until stopped (its log is the journal's)."""
    certificate, key, ca = Path(args.certificate), Path(args.key), Path(args.ca)
    _need_flower("flower-superlink")
    problem = link.tls_problem(certificate, key, ca, args.host)
    if problem is not None:
        raise CliniboxError(_(LINK_WORDS[problem], certificate=str(certificate), key=str(key),
                              ca=str(ca), host=args.host,
                              name=_san(link.serverapp_name(args.host))),
                            exit_status=EXIT_USAGE)
    database, runs = Path(args.database).resolve(), Path(args.runs).resolve()
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        runs.mkdir(mode=0o750, parents=True, exist_ok=True)
        env = link.superlink_environment(database.parent, runs)
    except OSError as exc:
        raise CliniboxError(_("cannot write in %(folder)s: %(why)s", folder=str(database.parent),
                              why=error_words(exc)), exit_status=EXIT_USAGE) from exc
    command = link.superlink_command(certificate.resolve(), key.resolve(), ca.resolve(),
                                     args.host, args.port, database)
    os.execve(command[0], command, env)  # the service is Flower's own process from here


def _san(name: object) -> str:
    """A subject alternative name as openssl's subjectAltName writes it (``IP:…``, ``DNS:…``)."""
    from cryptography import x509

    return f"IP:{name.value}" if isinstance(name, x509.IPAddress) else f"DNS:{name.value}"


def _need_flower(command: str) -> None:
    if not (link.flower_bin() / command).exists():
        raise CliniboxError(_("Flower is not installed beside clinibox: install clinibox with "
                              "its federated extra (pip install 'clinibox[federated]')"),
                            exit_status=EXIT_USAGE)


def app_defaults() -> dict[str, object]:
    """The run configuration's defaults, as the Flower App declares them."""
    with open(link.FLOWER_APP / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["tool"]["flwr"]["app"]["config"]


def run_settings(args: argparse.Namespace) -> RunSettings:
    """The run's settings: the options given, else the Flower App's defaults; the SecAgg+
    threshold, unless given, the smallest majority of the boxes."""
    d = app_defaults()

    def pick(option: str, key: str, kind: type):
        value = getattr(args, option)
        return kind(d[key] if value is None else value)

    boxes = pick("boxes", "boxes", int)
    threshold = boxes // 2 + 1 if args.secagg_threshold is None else args.secagg_threshold
    return RunSettings(boxes=boxes, rounds=pick("rounds", "rounds", int),
                       local_steps=pick("local_steps", "local-steps", int),
                       learning_rate=pick("learning_rate", "learning-rate", float),
                       proximal=pick("proximal", "proximal", float),
                       clipping_norm=pick("clipping_norm", "clipping-norm", float),
                       noise_multiplier=pick("noise_multiplier", "noise-multiplier", float),
                       target_delta=pick("target_delta", "target-delta", float),
                       secagg_threshold=int(threshold))


def _checked_out(text: str | None, runs: Path) -> Path:
    """``--out`` as an absolute path in the runs folder (by default a new folder named by the
    time): new, or an empty folder (a run's files are never written over, nor into a folder
    that holds anything else)."""
    if text is None:
        text = str(runs / dt.datetime.now(dt.timezone.utc).strftime("run-%Y%m%dT%H%M%SZ"))
    if any(c in text for c in '"\\') or any(ord(c) < 32 for c in text):
        raise CliniboxError(_("--out must be a path without quotes, backslashes or control "
                              "characters"), exit_status=EXIT_USAGE)
    out = Path(text).absolute()
    if not directly_in_runs(out, runs):
        raise CliniboxError(_("--out must be a folder directly in %(runs)s, the runs folder "
                              "the SuperLink keeps its runs in (--runs of clinibox central "
                              "superlink)", runs=str(runs)), exit_status=EXIT_USAGE)
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        if (out / "run.json").exists():
            raise CliniboxError(_("%(out)s already holds a finished run: give another --out",
                                  out=str(out)), exit_status=EXIT_USAGE)
        raise CliniboxError(_("%(out)s is not a new or empty folder: give another --out",
                              out=str(out)), exit_status=EXIT_USAGE)
    return out


def cmd_federated_run(args: argparse.Namespace, _config: object) -> int:
    """Start a run, wait for it, and say what it did."""
    from central.federated.server_app import HEAD_RANGE_SHARE, QUANTISATION_CLIP
    from converters.learning_artifact import PackageHeadError, package_head

    settings = run_settings(args)
    problem = settings.problem()
    if problem is not None:
        raise CliniboxError(_(SETTINGS_WORDS[problem], min=MIN_BOXES), exit_status=EXIT_USAGE)
    if not 0 < args.timeout_hours <= 24 * 30:
        raise CliniboxError(_("--timeout-hours must be more than 0 and at most 720"),
                            exit_status=EXIT_USAGE)
    if not 1 / 360 <= args.boxes_wait_hours <= min(24.0, args.timeout_hours - 1 / 12):
        raise CliniboxError(_("--boxes-wait-hours must be at least 0.003 (10 s), at most 24, "
                              "and 5 minutes or more below --timeout-hours (else the command "
                              "would stop waiting before the run could say that its boxes "
                              "did not come)"), exit_status=EXIT_USAGE)
    _need_flower("flwr")
    out, ca = _checked_out(args.out, Path(args.runs).absolute()), Path(args.ca).resolve()
    problem = link.superlink_problem(args.superlink, ca)
    if problem is not None:
        raise CliniboxError(_(LINK_WORDS[problem], address=args.superlink, ca=str(ca)),
                            exit_status=EXIT_USAGE)
    try:
        head, package = package_head(Path(args.package))
    except PackageHeadError as exc:
        raise CliniboxError(_(PACKAGE_WORDS[exc.code], path=str(exc.path)),
                            exit_status=EXIT_USAGE) from exc
    if not np.all(np.abs(head.as_vector()) <= HEAD_RANGE_SHARE * QUANTISATION_CLIP):
        raise CliniboxError(_("the package's head holds numbers beyond ±%(limit)s, more than "
                              "secure aggregation carries: it cannot be trained this way",
                              limit=f"{HEAD_RANGE_SHARE * QUANTISATION_CLIP:g}"))
    try:
        out.mkdir(mode=0o750, parents=True, exist_ok=True)  # the runs folder too, where new
        # first, and only where none is: a second command into the same folder (two started
        # in the same second, by its default name) stops here, before writing anything
        log_file = open(out / "server.log", "x")  # noqa: SIM115 - held while flwr runs
        np.save(out / "initial-head.npy", head.as_vector())
        home = out / "flower"
        link.write_flower_home(home, args.superlink, ca)
    except OSError as exc:
        raise CliniboxError(_("cannot write in %(folder)s: %(why)s", folder=str(out),
                              why=error_words(exc)), exit_status=EXIT_USAGE) from exc
    config = {"package": package, "out": str(out),
              "initial-head": str(out / "initial-head.npy"), "sharpness": head.sharpness,
              "boxes-wait": round(args.boxes_wait_hours * 3600.0, 1), **settings.run_config()}
    run_id = _start(config, home, out, log_file)
    print(_("run %(run)d of %(package)s started at %(address)s: %(rounds)d rounds, %(boxes)d "
            "boxes each; a round starts when that many boxes' learning services answer",
            run=run_id, package=package, address=args.superlink, rounds=settings.rounds,
            boxes=settings.boxes), flush=True)
    with log_file:
        status = _follow(run_id, home, log_file, args.timeout_hours * 3600, out)
    log_path = out / "server.log"
    if not (out / "run.json").exists():
        said = log_path.read_text(errors="replace")
        # a code in the log says the run ended, and why; else what the SuperLink last said
        why = next((words for code, words in RUN_ENDINGS if code in said), None) or (
            "run_stopped" if status == STOPPED else
            "superlink_lost" if status is None else "run_failed")
        boxes = settings.boxes if why == "too_few_boxes_connected" else settings.secagg_threshold
        raise CliniboxError(_(RUN_WORDS[why], boxes=boxes, log=str(log_path), out=str(out),
                              hours=f"{args.boxes_wait_hours:g}", run=run_id))
    _say_done(FederatedRun.read(out / "run.json"), out)
    return EXIT_OK


def _follow(run_id: int, home: Path, log_file: IO[str], wait_s: float,
            out: Path) -> str | None:
    """Keep the run's log in ``log_file`` until the run ends or ``wait_s`` has passed; the
    run's last status (None: the SuperLink could not be asked). ``flwr log`` ends when the run
    ends, or when its connection breaks (a SuperLink restarted, a network cut): then, while
    the SuperLink says the run goes on, it is attached again."""
    deadline = time.monotonic() + wait_s
    while True:
        process = subprocess.Popen(link.log_command(run_id), env=link.flower_environment(home),
                                   stdout=log_file, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise _no_end(wait_s, out) from None
        status = _status(run_id, home)
        if status is None or status.startswith(FINISHED):
            return status
        if time.monotonic() >= deadline:  # it goes on: not ended, whatever the log says
            raise _no_end(wait_s, out)
        log_file.write(f"\n[clinibox] the log's stream ended while run {run_id} is {status}; "
                       "attached again\n")
        log_file.flush()
        time.sleep(REATTACH_S)


def _no_end(wait_s: float, out: Path) -> CliniboxError:
    """The command stopped waiting; the run goes on at the SuperLink."""
    return CliniboxError(_("no end after %(hours)s h: a run the SuperLink started goes on "
                           "there and writes its head into %(out)s when it ends; the "
                           "ServerApp's log so far: %(log)s", hours=f"{wait_s / 3600:g}",
                           out=str(out), log=str(out / "server.log")))


def _status(run_id: int, home: Path) -> str | None:
    """The run's status at the SuperLink (``flwr ls``), or None when it cannot be asked."""
    for attempt in range(STATUS_TRIES):
        try:
            asked = subprocess.run(link.status_command(run_id),
                                   env=link.command_environment(home), capture_output=True,
                                   text=True, timeout=START_TIMEOUT_S)
            status = link.run_status(asked.stdout)
        except subprocess.TimeoutExpired:
            status = None
        if status is not None:
            return status
        if attempt + 1 < STATUS_TRIES:
            time.sleep(REATTACH_S)
    return None


def _start(config: dict[str, object], home: Path, out: Path, log_file: IO[str]) -> int:
    """Start the run at the SuperLink and claim ``out`` for it (only a run whose number the
    folder's claim names writes there); the run's number."""
    try:
        started = subprocess.run(link.run_command(link.FLOWER_APP, config),
                                 env=link.command_environment(home), capture_output=True,
                                 text=True, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        log_file.write(_text(exc.stdout) + _text(exc.stderr))
        log_file.flush()
        raise CliniboxError(_("the SuperLink did not answer within %(seconds)d s whether it "
                              "started the run; if it did, the run trains nothing without its "
                              "claim and ends by itself. What Flower said is in %(log)s",
                              seconds=int(START_TIMEOUT_S), log=str(out / "server.log"))
                            ) from None
    log_file.write(started.stdout + started.stderr)
    log_file.flush()
    run_id = link.started_run(started.stdout)
    if run_id is None:
        raise CliniboxError(_("the SuperLink did not start the run; what Flower said is in "
                              "%(log)s", log=str(out / "server.log")))
    try:
        write_claim(out, run_id)
    except (ClaimRefused, OSError) as exc:
        raise CliniboxError(_("cannot claim %(folder)s for run %(run)d (%(why)s): without its "
                              "claim the run trains nothing and ends by itself; start again "
                              "with another --out", folder=str(out), run=run_id,
                              why=error_words(exc) if isinstance(exc, OSError) else
                              _("another run's claim is there"))) from exc
    return run_id


def _text(output: bytes | str | None) -> str:
    """A timed-out child's output so far (bytes even where text was asked for)."""
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    return output or ""


def _say_done(record: FederatedRun, out: Path) -> None:
    """What the run did, in the reader's words."""
    print(_("run finished: %(rounds)d rounds; boxes summed in each round: %(boxes)s; "
            "labelled cases in each round: %(cases)s", rounds=record.rounds,
            boxes=", ".join(map(str, record.boxes_per_round)),
            cases=", ".join(map(str, record.cases_per_round))))
    privacy = record.privacy
    if privacy.epsilon is None:
        print(_("no noise was added: secure aggregation hid each box's update from the "
                "hospital, but the head carries no differential-privacy guarantee"))
    else:
        print(_("privacy spent: ε %(epsilon)s at δ %(delta)s (clipping norm %(clip)s, noise "
                "multiplier %(noise)s)", epsilon=formats.decimal(privacy.epsilon),
                delta=f"{privacy.delta:g}", clip=f"{privacy.clipping_norm:g}",
                noise=f"{privacy.noise_multiplier:g}"))
    print(_("the head and its record are in %(out)s; make a package of it with: clinibox "
            "convert --config convert.toml --version NEW-VERSION --federated-run %(out)s",
            out=str(out)))


def add_commands(command: Callable[[str, Callable[..., int], str], argparse.ArgumentParser]
                 ) -> None:
    """Register ``superlink`` and ``federated-run`` with ``clinibox central``'s ``command``."""
    serve = command("superlink", cmd_superlink,
                    "run Flower's SuperLink over TLS for federated fine-tuning, until stopped")
    serve.add_argument("--certificate", required=True,
                       help="the SuperLink's TLS certificate (PEM), issued by --ca for the "
                            "host name the boxes use")
    serve.add_argument("--key", required=True, help="its private key (PEM)")
    serve.add_argument("--ca", required=True,
                       help="the CA certificate the boxes check the SuperLink against (PEM)")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on")
    serve.add_argument("--port", type=int, default=link.DEFAULT_PORT,
                       help=f"port for the boxes and for runs (default {link.DEFAULT_PORT})")
    serve.add_argument("--database", default="/var/lib/clinibox-central/federated/superlink.db",
                       help="the SuperLink's state")
    serve.add_argument("--runs", default=DEFAULT_RUNS,
                       help="the folder its runs are kept in: a run reads and writes nowhere "
                            "else")
    run = command("federated-run", cmd_federated_run,
                  "fine-tune a package's head on the boxes' labelled cases: one federated run")
    run.add_argument("--package", required=True,
                     help="the package the boxes run (its folder), whose head the run starts "
                          "from")
    run.add_argument("--superlink", required=True, metavar="HOST:PORT",
                     help="the SuperLink, as its certificate names it")
    run.add_argument("--ca", required=True, help="the CA that issued the SuperLink's certificate")
    run.add_argument("--runs", default=DEFAULT_RUNS,
                     help="the SuperLink's runs folder (its --runs)")
    run.add_argument("--out", default=None,
                     help="a new folder in --runs for the run's head, record and log "
                          "(default: one named by the time)")
    for option, kind, help_text in (
            ("--boxes", int, "boxes each round trains on (more may be connected)"),
            ("--rounds", int, "rounds of the run"),
            ("--local-steps", int, "each box's training steps per round"),
            ("--learning-rate", float, "the steps' rate"),
            ("--proximal", float, "FedProx's pull towards the round's head"),
            ("--clipping-norm", float, "the most one box's change may move the head"),
            ("--noise-multiplier", float, "noise added to the sum, times the clipping norm"),
            ("--target-delta", float, "δ of the privacy budget"),
            ("--secagg-threshold", int, "boxes that rebuild a dropped box's mask (default: "
                                        "the smallest majority)")):
        run.add_argument(option, type=kind, default=None,
                         help=help_text + " (default: the Flower App's)")
    run.add_argument("--timeout-hours", type=float, default=12.0,
                     help="stop waiting after this many hours (the run goes on)")
    run.add_argument("--boxes-wait-hours", type=float, default=BOXES_WAIT_S / 3600,
                     help="end the run, saying so, when fewer than --boxes boxes are "
                          "connected this many hours after a round's start (default: 8, "
                          "the boxes' default learning hours)")
