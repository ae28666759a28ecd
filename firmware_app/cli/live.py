"""``clinibox live SOURCE``: one live source's process (the service starts one per
``[[live.sources]]``; a technician may run one in the foreground to see what it does)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from firmware_app.errors import EXIT_OK


def add_parsers(sub, with_config) -> None:
    """Register ``live``."""
    parser = with_config(sub.add_parser(
        "live", help="read, analyse and show one live video source ([[live.sources]]) until "
                     "stopped (the service runs one per source)"))
    parser.add_argument("source", help="the source's name ([[live.sources]] name)")
    parser.set_defaults(func=cmd_live)


def cmd_live(args: argparse.Namespace) -> int:
    """Run one source; the model chosen for it loaded and checked as the service loads it."""
    from firmware_app.contracts.manifest import PackageError
    from firmware_app.live.run import find_source, limit_memory, model_for, run_source
    from firmware_app.models.routing import modality_refusal
    from firmware_app.models.store import package_config
    from firmware_app.service.appliance import load_runner
    from firmware_app.service.viewer_process import die_with_parent
    from firmware_app.settings import box

    die_with_parent()
    config = box.load(args.config)
    logging.getLogger().setLevel(config.logging.level)
    source = find_source(config, args.source)
    limit_memory(config.live.memory_mb)
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    runner, why = None, ""
    try:
        runner = load_runner(package_config(config, model_for(config, source)))
    except PackageError as exc:
        why = str(exc)
    refusal = modality_refusal(runner.package, source.modality) if runner else None
    if runner is not None and refusal is not None:
        runner.close()
        runner, why = None, refusal.english()
    try:
        run_source(config, source, runner, why, stop)
    finally:
        if runner is not None:
            runner.close()
    return EXIT_OK
