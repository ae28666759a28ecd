"""``clinibox web``: the clinic viewer (HTTPS, gunicorn) alone; ``clinibox serve`` starts it as a
child process (``firmware_app/service/viewer_process.py``) with this command."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from clinibox_common.errors import EXIT_OK
from firmware_app.settings import box as config_module


def cmd_web(args: argparse.Namespace) -> int:
    """Run the clinic viewer alone."""
    from firmware_app.service.viewer_process import die_with_parent
    from web.server import serve

    die_with_parent()
    config = config_module.load(getattr(args, "config", None))
    logging.getLogger().setLevel(config.logging.level)
    serve(config, args.config)
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``web``."""
    with_config(sub.add_parser("web", help="run the clinic viewer alone (HTTPS)")).set_defaults(
        func=cmd_web)
