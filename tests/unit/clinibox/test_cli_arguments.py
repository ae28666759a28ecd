"""Options in any order, in every command (``model verify --trust KEY PATH`` regression)."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from clinibox.central_command import build_parser as central_parser
from clinibox.table import build_parser, main
from clinibox_common.arguments import CommandParser
from clinibox_common.bundled import DEMO_PUBLIC_KEY
from converters.cli import build_parser as converter_parser
from tests.model_packages import DEMO


def _leaf_parsers(parser: argparse.ArgumentParser, path: str = ""):
    """Every command parser under ``parser`` that has no subcommands of its own."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaf_parsers(child, f"{path} {name}".strip())


@pytest.mark.parametrize("argv", [
    ["model", "verify", "--trust", str(DEMO_PUBLIC_KEY), str(DEMO)],
    ["model", "verify", str(DEMO), "--trust", str(DEMO_PUBLIC_KEY)],
    ["model", "--trust", str(DEMO_PUBLIC_KEY), "verify", str(DEMO)],
])
def test_model_verify_takes_its_options_before_or_after_the_path(argv, capsys):
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("OK clinibox-demo-lesion@1.0.0")


@pytest.mark.parametrize("argv, expected", [
    (["infer", "--json", "--config", "box.toml", "a.dcm", "b.dcm"],
     {"files": ["a.dcm", "b.dcm"], "json": True, "config": "box.toml"}),
    (["infer", "a.dcm", "--json", "b.dcm"], {"files": ["a.dcm", "b.dcm"], "json": True}),
    (["model", "install", "--config", "box.toml", "pkg.tar.gz"],
     {"action": "install", "path": "pkg.tar.gz", "config": "box.toml"}),
    (["model", "install", "pkg.tar.gz", "--config", "box.toml"],
     {"action": "install", "path": "pkg.tar.gz", "config": "box.toml"}),
])
def test_options_and_positionals_mix_in_any_order(argv, expected):
    args = build_parser().parse_args(argv)
    assert {key: getattr(args, key) for key in expected} == expected


def test_a_wrong_word_is_still_refused_with_usage():
    with contextlib.redirect_stderr(io.StringIO()) as err, pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["model", "verify", "--trust"])
    assert exit_.value.code == 2 and "--trust" in err.getvalue()


@pytest.mark.parametrize("name, parser", [
    ("clinibox", build_parser()), ("clinibox central", central_parser()),
    ("clinibox convert", converter_parser()),
])
def test_every_command_parses_intermixed(name, parser):
    leaves = list(_leaf_parsers(parser))
    assert leaves, name
    for path, leaf in leaves:
        assert isinstance(leaf, CommandParser), f"{name} {path}"
        try:  # TypeError here means a feature intermixed parsing cannot take
            with contextlib.redirect_stderr(io.StringIO()):
                leaf.parse_args([])
        except SystemExit as exc:  # a required argument missing: refused as usage
            assert exc.code == 2, f"{name} {path}"


def test_each_command_in_the_table_is_registered_by_its_module():
    from clinibox.table import COMMANDS

    for name in COMMANDS:
        parser = build_parser(name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert sub.choices[name].get_default("func") is not None, name


def test_a_command_imports_only_its_own_module():
    import subprocess
    import sys
    from pathlib import Path

    probe = ("import sys\nfrom clinibox.table import build_parser\n"
             "build_parser('status').parse_args(['status'])\n"
             "print(sorted(m for m in ('firmware_app.ops.provision', 'firmware_app.ops.selftest',"
             " 'firmware_app.ingest.usb_mount', 'firmware_app.cli.model', 'pynetdicom', 'paho',"
             " 'segno', 'flask') if m in sys.modules))\n")
    root = Path(__file__).resolve().parents[3]
    run = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
