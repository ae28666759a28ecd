"""``clinibox learning cases [--out PATH] [--json]``: write the box's case file for federated
fine-tuning from its own labelled images (``case_file.py``), and say what it holds.
``clinibox learning node``: supervise the box's Flower SuperNode (``node.py``).
``clinibox learning status [--json]``: where it stands (``state.py``).

The file (default ``<state_dir>/learning/cases.npz``, readable by the box's account only) is
what the box's Flower SuperNode names in ``--node-config 'cases="…"'``; it never leaves the
box.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from clinibox_common.contracts.manifest import PackageError
from clinibox_common.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from clinibox_common.i18n import N_, formats
from clinibox_common.i18n import gettext as _
from engine.model_package import load_package
from firmware_app.learning.case_file import write_case_file
from firmware_app.learning.node import NodeSupervisor
from firmware_app.learning.state import (
    CASE_FILE_FAILED,
    NO_LABELLED_CASES,
    STATE_FILE,
    LearningState,
    is_fresh,
    read_state,
)
from firmware_app.models.store import resolve_package_root
from firmware_app.settings import box as config_module
from firmware_app.storage import db
from firmware_app.words import model_update_words as model_words

#: what the command says of the images it left out, by reason (codes; ``--json`` gives them)
LEFT_OUT_WORDS = {
    "object_deleted": N_("its received object is gone (retention deleted it)"),
    "not_decodable": N_("its received object could not be decoded again"),
    "key_frame_missing": N_("the frame it was judged on is no longer among the frames the "
                            "box decodes (the frame limit changed)"),
    "not_run": N_("the trainable model could not be run on it"),
}


#: what the command says when the running package carries no trainable model
NOT_TRAINABLE = N_("model %(model)s carries no trainable model: convert it again with this "
                   "clinibox, whose converter writes one for a model whose score pools a 1×1 "
                   "convolution")


def _refusal(exc: PackageError, model: str) -> str:
    """Why no case file was written, in the reader's language (by the refusal's code)."""
    if exc.code == "not_trainable":
        return _(NOT_TRAINABLE, model=model)
    return model_words.reason(exc.code) or str(exc)


def default_case_file(config: config_module.Config) -> Path:
    """Where the case file lies unless ``--out`` says otherwise."""
    return config.state_dir / "learning" / "cases.npz"


def cmd_learning_cases(args: argparse.Namespace) -> int:
    """Write the case file of the running model; what it holds."""
    config = config_module.load(getattr(args, "config", None))
    out = Path(args.out) if args.out else default_case_file(config)
    try:
        package = load_package(resolve_package_root(config), config.trusted_key_paths)
    except PackageError as exc:
        print(_("no case file: %(why)s", why=_refusal(exc, config.models.name)))
        return EXIT_USAGE
    conn = db.open_database(config.database_path)
    try:
        summary = write_case_file(config, conn, package, out)
    except PackageError as exc:
        print(_("no case file: %(why)s", why=_refusal(exc, package.model_id)))
        return EXIT_USAGE
    finally:
        conn.close()
    db.keep_private(out)
    if args.json:
        print(json.dumps({"path": str(out), "model": package.model_id,
                          "lesions": summary.lesions, "clear": summary.clear,
                          "left_out": dict(summary.left_out)}, indent=2))
        return EXIT_OK
    print(_("%(lesions)s confirmed lesion(s) and %(clear)s confirmed clear image(s) of model "
            "%(model)s written to %(path)s", lesions=summary.lesions, clear=summary.clear,
            model=package.model_id, path=out))
    for code, count in sorted(summary.left_out.items()):
        print("  " + _("left out: %(n)s image(s): %(why)s", n=count,
                       why=_(LEFT_OUT_WORDS.get(code, code))))
    return EXIT_OK


def cmd_learning_node(args: argparse.Namespace) -> int:
    """Supervise the box's Flower SuperNode until stopped (SIGTERM, Ctrl-C)."""
    config = config_module.load(getattr(args, "config", None))
    if not config.learning.enabled:
        print(_("federated fine-tuning is off on this box: set [learning] enabled = true, "
                "superlink and root_certificates in clinibox.toml"))
        return EXIT_USAGE
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_args: stop.set())
    supervisor = NodeSupervisor(config, default_case_file(config))
    try:
        supervisor.run(stop)
    except KeyboardInterrupt:
        stop.set()
    return EXIT_OK


#: what ``learning status`` says of each state (``state.py``)
STATE_WORDS = {
    LearningState.OUTSIDE_HOURS: N_("outside its learning hours (%(hours)s): the SuperNode is "
                                    "stopped until they begin"),
    LearningState.WAITING_FOR_ANALYSIS: N_("images wait for analysis: the SuperNode starts once "
                                           "they are analysed"),
    LearningState.RESTARTING: N_("the SuperNode stopped; it is started again within a minute"),
    LearningState.NO_CASES: N_("nothing to train on: %(why)s. The case file is written again "
                               "within 30 minutes"),
    LearningState.RUNNING: N_("the SuperNode runs on %(lesions)s confirmed lesion(s) and "
                              "%(clear)s confirmed clear image(s): this box takes part in the "
                              "rounds the hospital starts"),
    LearningState.PAUSED: N_("the SuperNode is paused while images wait for analysis (its case "
                             "file: %(lesions)s lesion(s), %(clear)s clear image(s))"),
}
#: why there is nothing to train on, beyond a package's refusal codes
NO_CASES_WORDS = {
    NO_LABELLED_CASES: N_("no image the running model judged has a confirmed label yet (a "
                          "clinician's review, or the hospital's verdict on an alert)"),
    CASE_FILE_FAILED: N_("the case file could not be written (the learning service's journal "
                         "says why: journalctl -u clinibox-learning)"),
}


def _no_cases_why(reason: str, model: str) -> str:
    if reason in NO_CASES_WORDS:
        return _(NO_CASES_WORDS[reason])
    if reason == "not_trainable":
        return _(NOT_TRAINABLE, model=model)
    return model_words.reason(reason) or _(NO_CASES_WORDS[CASE_FILE_FAILED])


def cmd_learning_status(args: argparse.Namespace) -> int:
    """Say where the box's learning service stands; status 1 when it is on but not running."""
    config = config_module.load(getattr(args, "config", None))
    learning = config.learning
    path = default_case_file(config).parent / STATE_FILE
    if path.exists() and not os.access(path, os.R_OK):
        print(_("cannot read %(path)s: run this as the box's account (sudo -u clinibox) or as "
                "root", path=str(path)))
        return EXIT_USAGE
    record = read_state(path)
    stale = record is None or not is_fresh(record, time.time())
    if args.json:
        print(json.dumps({"enabled": learning.enabled, "running": not stale,
                          **({"state": record.state.value, "since": record.since,
                              "updated_at": record.updated_at, "lesions": record.lesions,
                              "clear": record.clear, "reason": record.reason,
                              "model": record.model}
                             if record is not None else {})}, indent=2))
        return EXIT_OK if stale != learning.enabled else EXIT_FAIL
    if not learning.enabled:
        if not stale:
            print(_("[learning] is off in clinibox.toml, but the learning service still runs "
                    "on its earlier settings: restart it (systemctl restart "
                    "clinibox-learning)"))
            return EXIT_FAIL
        print(_("federated fine-tuning is off on this box: set [learning] enabled = true, "
                "superlink and root_certificates in clinibox.toml"))
        return EXIT_OK
    if record is None:
        print(_("the learning service has not run on this box yet: start it with systemctl "
                "enable --now clinibox-learning"))
        return EXIT_FAIL
    said = _(STATE_WORDS[record.state], hours=learning.hours, lesions=record.lesions,
             clear=record.clear, why=_no_cases_why(record.reason, record.model))
    if stale:
        print(_("the learning service is not running (systemctl status clinibox-learning); "
                "its last word, at %(at)s: %(said)s", at=formats.moment(record.updated_at),
                said=said))
        return EXIT_FAIL
    print(_("the learning service (SuperLink %(superlink)s), since %(since)s: %(said)s",
            superlink=learning.superlink, since=formats.moment(record.since), said=said))
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``learning`` on the main parser."""
    learning = sub.add_parser("learning", help="federated fine-tuning on this box's own "
                                               "labelled images")
    steps = learning.add_subparsers(dest="learning_command", required=True)
    p = with_config(steps.add_parser(
        "cases", help="write the case file (the model's maps of each labelled image, and its "
                      "label) the box's Flower SuperNode trains on"))
    p.add_argument("--out", metavar="PATH", help="where (default: <state_dir>/learning/"
                                                 "cases.npz)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_learning_cases)
    p = with_config(steps.add_parser(
        "node", help="run the box's Flower SuperNode in [learning] hours, paused while images "
                     "wait for analysis (the clinibox-learning service)"))
    p.set_defaults(func=cmd_learning_node)
    p = with_config(steps.add_parser(
        "status", help="where the box's learning service stands: running, paused, outside "
                       "its hours, or why it has nothing to train on"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_learning_status)
    learning.set_defaults(func=cmd_learning_cases)
