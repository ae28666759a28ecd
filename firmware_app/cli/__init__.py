"""``clinibox``: the command line, the composition root of the box (``commands``)."""

from firmware_app.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
