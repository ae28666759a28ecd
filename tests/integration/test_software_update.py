"""The box's software updated from a signed release on a box installed by ``install.sh`` into a
staging root: the release refused before anything switches, a version whose self-test fails
taken back by itself, a good one kept, a trial the box went down in reverted at boot.

The staging root has no running systemd, so a stand-in plays the service manager's part (the
restarts, whether the services came up, the self-test's table); the trees, the ``current`` link,
the units, the venv built with the release's pip and the new version's config check are all
real. The image tier (``tests/image/test_software_update.py``) runs the whole under the
booted image's real systemd.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from clinibox_common.contracts.signing import generate_key_pair
from firmware_app.ops import software_update
from firmware_app.ops.software_update import Layout, Outcome, assess_at_boot
from firmware_app.settings import box as config_module
from firmware_app.storage.migrations import SCHEMA_VERSION
from tests.image.releases import make_release
from tests.integration.test_install_system import (
    VERSION,
    built_wheelhouse,
    host_units_into,
    run_install,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

PASSING = {"model package": "FAIL", "DICOM echo": "PASS", "disk space": "PASS"}


class StandInSystemd:
    """The service manager's part (a stand-in: the staging root has no running systemd)."""

    def __init__(self, tables: list[dict[str, str] | None], comes_up: bool = True) -> None:
        self.tables, self.comes_up, self.calls = list(tables), comes_up, []

    def reload(self) -> None:
        self.calls.append("reload")

    def restart(self, units: tuple[str, ...]) -> None:
        self.calls.append("restart")

    def active(self, units: tuple[str, ...], seconds: float) -> bool:
        self.calls.append("active")
        return self.comes_up

    def selftest(self, seconds: float) -> dict[str, str] | None:
        self.calls.append("selftest")
        return self.tables.pop(0)

    def database_schema(self, database: Path) -> int | None:
        """Read here as the test's user (the box reads it as the service user)."""
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])


class WentDown(BaseException):
    """The machine going down in the middle of a trial."""


class DownDuringTrial(StandInSystemd):
    def active(self, units: tuple[str, ...], seconds: float) -> bool:
        raise WentDown


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """The installed root, a hospital key the box trusts and the releases it signed."""
    folder = tmp_path_factory.mktemp("software-update")
    bundle = built_wheelhouse(tmp_path_factory)
    root = folder / "root"
    host_units_into(root)
    run_install(root, bundle)
    generate_key_pair(folder / "hospital.pem", folder / "hospital.pub")
    generate_key_pair(folder / "stranger.pem", folder / "stranger.pub")
    config_file = folder / "box.toml"
    config_file.write_text(f'[storage]\nstate_dir = "{folder / "state"}"\n\n[models]\n'
                           f'trusted_keys = ["{folder / "hospital.pub"}"]\n')
    releases = {
        "broken": make_release(bundle, "0.1.1", folder / "hospital.pem", folder / "r",
                               broken=True),
        "good": make_release(bundle, "0.1.2", folder / "hospital.pem", folder / "r"),
        "stranger": make_release(bundle, "0.1.3", folder / "stranger.pem", folder / "s"),
        "same": make_release(bundle, VERSION, folder / "hospital.pem", folder / "t"),
    }
    return {"root": root, "layout": Layout(root), "config": config_module.load(config_file),
            "releases": releases, "bundle": bundle, "key": folder / "hospital.pem"}


def _trees(layout: Layout) -> list[str]:
    return sorted(p.name for p in layout.prefix.iterdir()
                  if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def _runs(layout: Layout) -> str:
    return layout.current.resolve().name


def _clean_env() -> dict[str, str]:
    """The environment without the suite's PYTHONPATH (which names this checkout)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def _apply(box, name: str, host) -> dict:
    return software_update.apply(box["config"], box["releases"][name], layout=box["layout"],
                                 host=host)


def test_a_release_is_refused_before_anything_switches(box):
    layout = box["layout"]
    cases = [("stranger", "signature"), ("same", "not_newer")]
    for name, reason in cases:
        host = StandInSystemd([])
        outcome = _apply(box, name, host)
        assert (outcome["outcome"], outcome["reason"]) == ("refused", reason), outcome
        assert host.calls == [], "refused before the self-test and any restart"
        assert _runs(layout) == VERSION and _trees(layout) == [VERSION]
    # a box whose components differ from the release's (another numpy): the offline bundle
    sums = layout.current / "BUNDLE-SHA256SUMS"
    kept = sums.read_text()
    try:
        sums.write_text("".join(
            ("0" * 64 + line[64:] if "wheels/numpy-" in line else line)
            for line in kept.splitlines(keepends=True)))
        outcome = _apply(box, "good", StandInSystemd([]))
        assert outcome["reason"] == "needs_bundle" and "numpy" in outcome["detail"]
    finally:
        sums.write_text(kept)
    # a database of another schema: going back would lose what the new version received
    database = box["config"].database_path
    database.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(database) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION - 1}")
    try:
        outcome = _apply(box, "good", StandInSystemd([]))
        assert outcome["reason"] == "database_change", outcome
    finally:
        database.unlink()
    assert _runs(layout) == VERSION and _trees(layout) == [VERSION]
    assert json.loads(layout.outcome.read_text())["outcome"] == "refused"


def test_a_version_whose_self_test_fails_is_taken_back_by_itself(box):
    layout = box["layout"]
    units = layout.unit_dir / "clinibox.service"
    host = StandInSystemd([PASSING, {**PASSING, "release fault": "FAIL"}])
    outcome = _apply(box, "broken", host)
    assert outcome["outcome"] == Outcome.REVERTED
    assert (outcome["reason"], outcome["detail"]) == ("selftest_failed", "release fault")
    assert (outcome["running"], outcome["release"]) == (VERSION, "0.1.1")
    assert host.calls == ["selftest", "reload", "restart", "active", "selftest", "reload",
                          "restart"]
    assert _runs(layout) == VERSION
    assert units.read_bytes() == (layout.prefix / VERSION / "systemd" / "clinibox.service"
                                  ).read_bytes()
    assert not layout.trial.exists() and not layout.trial_from.exists()
    # the tried tree stays (to look at), the box runs the one before
    assert _trees(layout) == sorted([VERSION, "0.1.1"])


def test_a_version_whose_services_do_not_come_up_is_taken_back(box):
    outcome = _apply(box, "broken", StandInSystemd([PASSING], comes_up=False))
    assert (outcome["outcome"], outcome["reason"]) == ("reverted", "service_failed")
    assert _runs(box["layout"]) == VERSION


def test_a_check_that_failed_before_does_not_hold_a_good_version_back_and_it_is_kept(box):
    layout = box["layout"]
    # the box waits for a model before and after: that is no fault of the new version
    host = StandInSystemd([PASSING, dict(PASSING)])
    outcome = _apply(box, "good", host)
    assert (outcome["outcome"], outcome["running"]) == ("kept", "0.1.2"), outcome
    assert _runs(layout) == "0.1.2"
    tree = layout.prefix / "0.1.2"
    # the new tree's venv is its own: the new wheel, scripts naming the new tree
    version = subprocess.run(
        [str(tree / "venv" / "bin" / "python"), "-c",
         "import importlib.metadata as m; print(m.version('clinibox'))"],
        capture_output=True, text=True, check=True, cwd=tree, env=_clean_env()).stdout.strip()
    assert version == "0.1.2"
    # and it says so to the hospital: the status's software version is the tree's own
    said = subprocess.run(
        [str(tree / "venv" / "bin" / "python"), "-c",
         "import firmware_app.telemetry.messages as m; print(m.__version__)"],
        capture_output=True, text=True, check=True, cwd=tree, env=_clean_env()).stdout.strip()
    assert said == "0.1.2"
    script = (tree / "venv" / "bin" / "clinibox").read_text()
    assert script.startswith("#!/opt/clinibox/0.1.2/venv/bin/python"), script[:80]
    assert f"/opt/clinibox/{VERSION}/" not in script and ".staging-" not in script
    assert (tree / "VERSION").read_text().strip() == "0.1.2"
    assert "clinibox-0.1.2-" in (tree / "BUNDLE-SHA256SUMS").read_text()
    # the new version's command runs from its tree and checks the box's config
    checked = subprocess.run([str(tree / "venv" / "bin" / "python"),
                              str(tree / "venv" / "bin" / "clinibox"), "config", "--check",
                              str(layout.config)], capture_output=True, text=True, cwd=tree,
                             env=_clean_env())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # two trees kept: the running one and the one it came from (the failed 0.1.1 removed
    # before the new tree was built)
    assert _trees(layout) == sorted([VERSION, "0.1.2"])


def test_a_trial_the_box_went_down_in_is_reverted_at_the_next_boot(box, tmp_path):
    layout = box["layout"]
    extra = make_release(box["bundle"], "0.1.4", box["key"], tmp_path)
    with pytest.raises(WentDown):
        software_update.apply(box["config"], extra, layout=layout,
                              host=DownDuringTrial([PASSING]))
    assert _runs(layout) == "0.1.4"
    assert layout.trial_from.read_text().strip() == "0.1.2"
    host = StandInSystemd([])
    outcome = assess_at_boot(layout, host)
    assert outcome is not None
    assert (outcome["outcome"], outcome["reason"], outcome["running"]) == (
        "reverted", "boot_interrupted", "0.1.2")
    assert _runs(layout) == "0.1.2"
    assert "restart" not in host.calls, "at boot the services start after it, by themselves"
    assert assess_at_boot(layout, StandInSystemd([])) is None



def test_a_unit_only_the_tried_version_brought_does_not_stay_after_it_goes_back(box, tmp_path):
    layout = box["layout"]
    running = layout.current.resolve().name
    extra = layout.unit_dir / "clinibox-extra.service"
    extra.write_text("[Service]\nExecStart=/bin/true\n")  # as a newer tree would bring
    software_update.install_units(layout, layout.prefix / running)
    assert not extra.exists()
    assert (layout.unit_dir / "clinibox.service").read_bytes() == (
        layout.prefix / running / "systemd" / "clinibox.service").read_bytes()
