"""A release of the box's software rolled out from the hospital as a model package is: checked
as a box checks it, offered canary first, seen once the box's status reports its version; a
canary that takes it back by itself pauses the rollout, and no rollback order is ever sent for
it (``central/rollouts.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from central import rollouts
from central.store import Store
from clinibox_common.contracts import downlink, signing
from clinibox_common.contracts.envelope import Header
from clinibox_common.contracts.package_archive import pack
from firmware_app.ops.software_pack import pack_release
from tests.model_packages import make_package
from tests.software_bundles import small_bundle
from tests.telemetry_payloads import Box, hospital_keys, status_payload

NOW = 1_800_000_000.0
BOXES = [("clinic-a", "box-1"), ("clinic-a", "box-2")]


@pytest.fixture
def keys(tmp_path) -> tuple[Path, Path]:
    signing.generate_key_pair(tmp_path / "h.pem", tmp_path / "h.pub")
    return tmp_path / "h.pem", tmp_path / "h.pub"


@pytest.fixture
def release(tmp_path, keys) -> Path:
    return pack_release(small_bundle(tmp_path / "bundle", "0.2.0"), keys[0], tmp_path).path


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(f"sqlite:///{tmp_path}/central.db")
    public = hospital_keys()[1]
    for clinic, device in BOXES:
        s.enrol(clinic, device, Box(clinic, device, public).pem)
    yield s
    s.close()


def _start(store: Store, release: Path, keys) -> int:
    package = rollouts.check_package(release, [keys[1]])
    with store.database.transaction(write=True) as tx:
        return rollouts.create(tx, package, BOXES, canary=1, wave_size=10,
                               pause_on_failure=False, chunk_kib=64, by="admin", now=NOW)


def _event(store: Store, box: tuple[str, str], seq: int, **payload) -> None:
    body = {"schema": 1, "created_at": int(NOW), "unit": "clinibox", "event": "rollout",
            "subject_model": "clinibox@0.2.0", "reason": "hospital", **payload}
    assert store.store(Header(box[0], box[1], "event", seq), body, NOW)


def _software(store: Store, box: tuple[str, str], seq: int, version: str) -> None:
    body = status_payload("heartbeat", created_at=int(NOW), software=version)
    assert store.store(Header(box[0], box[1], "status", seq), body, NOW)


def _targets(store: Store, rollout_id: int) -> list[dict]:
    with store.database.transaction(write=False) as tx:
        return rollouts.targets(tx, rollout_id)


def _advance(store: Store) -> int:
    with store.database.transaction(write=True) as tx:
        return rollouts.advance(tx, NOW + 1)


def test_a_release_is_checked_as_a_box_checks_it(tmp_path, release, keys):
    checked = rollouts.check_package(release, [keys[1]])
    assert (checked.archive.name, checked.archive.version) == ("clinibox", "0.2.0")
    signing.generate_key_pair(tmp_path / "o.pem", tmp_path / "o.pub")
    with pytest.raises(rollouts.RolloutError, match="not signed by a key of"):
        rollouts.check_package(release, [tmp_path / "o.pub"])
    # a model package may not pass for the box's software
    root = make_package(tmp_path / "model", "1.0.0", key=keys[0])
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["name"] = "clinibox"
    (root / "manifest.json").write_text(json.dumps(signing.sign_document(
        {k: v for k, v in manifest.items() if k != "signature"},
        signing.load_private_key(keys[0]))))
    impostor = pack(root, tmp_path / "clinibox-1.0.0.tar.gz").path
    with pytest.raises(rollouts.RolloutError, match="name of the box's software"):
        rollouts.check_package(impostor, [keys[1]])


def test_a_release_counts_once_the_box_reports_its_version(store, release, keys):
    rollout_id = _start(store, release, keys)
    with store.database.transaction(write=False) as tx:
        (payload,) = tx.execute("SELECT payload FROM downlinks").fetchone()
    offer = json.loads(payload)
    downlink.check_rollout(offer)
    assert (offer["name"], offer["version"]) == ("clinibox", "0.2.0")
    _event(store, BOXES[0], 1, step="downloaded", rollout=rollout_id)
    _event(store, BOXES[0], 2, step="kept", rollout=rollout_id)
    assert _advance(store) == 0, "said kept, but its status still reports the old version"
    _software(store, BOXES[0], 3, "0.1.0")
    assert _advance(store) == 0
    _software(store, BOXES[0], 4, "0.2.0")
    (canary, _rest) = _targets(store, rollout_id)
    assert canary["seen"] and canary["running"] == "clinibox@0.2.0"
    assert _advance(store) == 1, "the next wave once the canary runs the release"


def test_a_canary_that_went_back_by_itself_pauses_the_rollout_and_no_rollback_is_sent(
        store, release, keys):
    rollout_id = _start(store, release, keys)
    _event(store, BOXES[0], 1, step="rolled_back", reason="selftest_failed",
           rollout=rollout_id)
    canary = _targets(store, rollout_id)[0]
    assert (canary["step"], canary["reason"]) == ("rolled_back", "selftest_failed")
    _advance(store)
    with store.database.transaction(write=False) as tx:
        row = rollouts.rollout(tx, rollout_id)
    assert (row["state"], row["state_reason"]) == ("paused", "canary_failed")
    _event(store, BOXES[1], 1, step="downloading", rollout=rollout_id)
    with store.database.transaction(write=True) as tx:
        assert not any(rollouts.can_roll_back(t) for t in rollouts.targets(tx, rollout_id))
        assert rollouts.rollback(tx, "admin", rollout_id=rollout_id, now=NOW + 2) == 0
        with pytest.raises(rollouts.RolloutError):
            rollouts.rollback(tx, "admin", boxes=[BOXES[1]], now=NOW + 2)
