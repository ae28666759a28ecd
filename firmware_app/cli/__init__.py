"""``clinibox``: the command line, the composition root of the box (``table``)."""

from firmware_app.cli.table import build_parser, main

__all__ = ["build_parser", "main"]
