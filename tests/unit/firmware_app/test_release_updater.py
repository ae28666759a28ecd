"""A release of the box's software rolled out by the hospital, on the box's side
(``models/updates.py``): refused before a byte is fetched when it is not newer, fetched chunk by
chunk as a package is, handed to root's updater, and its outcome (kept, taken back, refused)
told to the hospital whichever version then runs. Root's updater itself is
``tests/integration/test_software_update.py`` and the image tier."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from clinibox_common.contracts.signing import generate_key_pair
from firmware_app import __version__
from firmware_app.models import updates
from firmware_app.models.updates import Updater
from firmware_app.ops.software_pack import pack_release
from firmware_app.words import software_words
from tests.software_bundles import small_bundle
from tests.unit.firmware_app.test_rollout_updater import (
    Chunks,
    config,  # noqa: F401  (a fixture)
    keep,
    offer_payload,
    order,
    steps,
)

NEWER = "99.0.0"


def _release(folder: Path, version: str) -> Path:
    generate_key_pair(folder / "h.pem", folder / "h.pub")
    return pack_release(small_bundle(folder / "bundle", version), folder / "h.pem", folder).path


@pytest.fixture
def outcome_dir(tmp_path, monkeypatch) -> Path:
    """Where root's updater keeps its outcome (a folder of the test's)."""
    folder = tmp_path / "clinibox-software"
    folder.mkdir()
    monkeypatch.setattr(software_words, "STATE_DIR", folder)
    return folder


def _root_ends_it(folder: Path, **outcome) -> None:
    (folder / "outcome.json").write_text(json.dumps(
        {"file": f"clinibox-{NEWER}.release", "running": __version__, "release": NEWER,
         "at": time.time() + 1, **outcome}))


def _offer(config, tmp_path):  # noqa: F811
    archive = _release(tmp_path, NEWER)
    chunks = Chunks(archive)
    keep(config, 1, offer_payload(archive, chunks, name="clinibox", version=NEWER))
    return archive, chunks


@pytest.mark.parametrize(("ended", "step", "reason"), [
    ({"outcome": "kept"}, "kept", None),
    ({"outcome": "reverted", "reason": "selftest_failed"}, "rolled_back", "selftest_failed"),
    ({"outcome": "refused", "reason": "needs_bundle"}, "refused", "needs_bundle"),
])
def test_a_release_is_fetched_handed_to_root_and_its_outcome_told(
        config, tmp_path, outcome_dir, ended, step, reason):  # noqa: F811
    archive, chunks = _offer(config, tmp_path)
    updater = Updater(config, chunks)
    updater.handle(order(config, 1), threading.Event())
    handed = config.software_incoming_dir / f"clinibox-{NEWER}.release"
    assert handed.read_bytes() == archive.read_bytes()
    assert chunks.asked == list(range(len(chunks.parts)))
    assert not list((config.state_dir / "updates").iterdir()), "its download handed, not kept"
    stop = threading.Event()
    stop.set()  # root's updater has not ended it yet: the updater looks again later
    updater.handle(order(config, 1), stop)
    assert not order(config, 1).done
    handed.unlink()  # root took it
    _root_ends_it(outcome_dir, **ended)
    updater.handle(order(config, 1), threading.Event())
    done = order(config, 1)
    assert done.done and done.step == step
    told = steps(config)
    assert told[:3] == [("rollout", "offered", 7), ("rollout", "downloading", 7),
                        ("rollout", "downloaded", 7)]
    assert told[3] == ("rollout", step, 7)
    if reason:
        assert done.reason == reason


def test_an_older_outcome_of_the_same_file_is_not_taken_for_this_one(
        config, tmp_path, outcome_dir):  # noqa: F811
    _root_ends_it(outcome_dir, outcome="kept", at=1.0)  # an earlier try of the same version
    _archive, chunks = _offer(config, tmp_path)
    updater = Updater(config, chunks)
    updater.handle(order(config, 1), threading.Event())
    (config.software_incoming_dir / f"clinibox-{NEWER}.release").unlink()
    stop = threading.Event()
    stop.set()
    updater.handle(order(config, 1), stop)
    assert not order(config, 1).done


def test_a_release_not_newer_is_refused_before_a_byte_is_fetched(config, tmp_path):  # noqa: F811
    archive = _release(tmp_path, "0.0.1")
    chunks = Chunks(archive)
    keep(config, 1, offer_payload(archive, chunks, name="clinibox", version="0.0.1"))
    Updater(config, chunks).handle(order(config, 1), threading.Event())
    assert chunks.asked == []
    done = order(config, 1)
    assert (done.step, done.reason, done.done) == ("refused", "older_version", True)


def test_a_release_no_updater_takes_is_refused_after_a_while(
        config, tmp_path, outcome_dir, monkeypatch):  # noqa: F811
    _archive, chunks = _offer(config, tmp_path)
    updater = Updater(config, chunks)
    updater.handle(order(config, 1), threading.Event())
    monkeypatch.setattr(updates, "UNTAKEN_SECONDS", 0.0)
    updater.handle(order(config, 1), threading.Event())
    done = order(config, 1)
    assert (done.step, done.reason) == ("refused", "not_installed")
    assert not (config.software_incoming_dir / f"clinibox-{NEWER}.release").exists()
