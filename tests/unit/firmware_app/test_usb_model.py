"""A model package from a USB stick (ops/usb_model.py): a new box adopts the hospital's package
and installs it with no terminal; a box with a model of its own takes only an update of it; a
package nobody the box trusts signed, two packages, or a link are refused, the config unchanged.

The install is the real ``clinibox model install`` in a child process (its golden cases on
this machine's runtime), as the stick's root step runs it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tomllib

from clinibox_common.contracts.package_archive import pack
from clinibox_common.contracts.signing import generate_key_pair
from firmware_app.models.store import store_for
from firmware_app.ops import usb_model
from firmware_app.ops.usb_model import ModelOutcome, ModelResult, take_from
from firmware_app.settings import box as config_module
from tests.integration.conftest import to_toml
from tests.model_packages import DEMO_PRIVATE_KEY, make_package

NAME = "clinic-lesion"


@pytest.fixture
def hospital_key(tmp_path) -> tuple[Path, Path]:
    """The hospital's model-signing key pair (the bundle made the box trust its public half)."""
    private, public = tmp_path / "keys" / "models.pem", tmp_path / "keys" / "models.pub"
    private.parent.mkdir()
    generate_key_pair(private, public)
    return private, public


@pytest.fixture
def box(tmp_path, hospital_key) -> Path:
    """A provisioned box's config: it trusts the hospital's key only, and runs no package of
    its own yet (``[models] name`` is still the demo's)."""
    config = tmp_path / "box" / "clinibox.toml"
    config.parent.mkdir()
    config.write_text(to_toml({
        "storage": {"state_dir": str(tmp_path / "box" / "state")},
        "models": {"trusted_keys": [str(hospital_key[1])], "trust_demo_key": False}}))
    return config


def _stick(tmp_path: Path, key: Path, version: str, *, name: str = NAME, stick: str = "stick",
           failing_golden: bool = False) -> Path:
    folder = tmp_path / stick
    folder.mkdir(exist_ok=True)
    package = make_package(tmp_path / f"maker-{stick}-{version}", version, key=key, name=name,
                           failing_golden=failing_golden)
    pack(package, folder / f"{name}-{version}.tar.gz")
    return folder


def _name(config: Path) -> str | None:
    return tomllib.loads(config.read_text()).get("models", {}).get("name")


def _active(config: Path) -> str:
    return store_for(config_module.load(str(config))).read().active


def test_a_new_box_adopts_the_hospitals_package_and_installs_it(tmp_path, box, hospital_key):
    result = take_from(_stick(tmp_path, hospital_key[0], "1.0.0"), box)
    assert result.outcome is ModelOutcome.ADOPTED, result
    assert (result.model, result.archive) == (f"{NAME}@1.0.0", f"{NAME}-1.0.0.tar.gz")
    assert _name(box) == NAME and _active(box) == "1.0.0"
    assert box.with_name("clinibox.toml.bak").exists()
    assert "the model package clinic-lesion@1.0.0 on a USB stick" in box.read_text()
    # the next stick of the same package is an update, its checks all there
    update = take_from(_stick(tmp_path, hospital_key[0], "1.1.0", stick="update"), box)
    assert update.outcome is ModelOutcome.INSTALLED and _active(box) == "1.1.0"
    older = take_from(_stick(tmp_path, hospital_key[0], "0.9.0", stick="older"), box)
    assert older.outcome is ModelOutcome.REFUSED and "older" in older.reason
    assert _active(box) == "1.1.0"
    # a package of another name never replaces the box's own
    other = take_from(_stick(tmp_path, hospital_key[0], "2.0.0", name="other-model",
                             stick="other"), box)
    assert other.outcome is ModelOutcome.ANOTHER_MODEL
    assert "the box runs clinic-lesion" in other.reason
    assert _name(box) == NAME and _active(box) == "1.1.0"


def test_a_package_the_box_does_not_trust_changes_nothing(tmp_path, box):
    stranger = tmp_path / "stranger.pem"
    generate_key_pair(stranger, tmp_path / "stranger.pub")
    before = box.read_bytes()
    result = take_from(_stick(tmp_path, stranger, "1.0.0"), box)
    assert result.outcome is ModelOutcome.NOT_VERIFIED
    assert box.read_bytes() == before


def test_a_package_signed_with_the_public_demo_key_is_never_taken(tmp_path):
    """A box not yet provisioned still trusts the DEMO-ONLY key, whose private half ships
    with the source: a stick signed with it could make any model the box's own. Refused."""
    config = tmp_path / "demo-box.toml"
    config.write_text(to_toml({"storage": {"state_dir": str(tmp_path / "state")}}))
    before = config.read_bytes()
    result = take_from(_stick(tmp_path, DEMO_PRIVATE_KEY, "1.0.0", name="anything"), config)
    assert result.outcome is ModelOutcome.NOT_VERIFIED
    assert "DEMO-ONLY" in result.reason
    assert config.read_bytes() == before and _active(config) == ""


def test_an_adopted_package_its_install_refuses_gives_the_name_back(tmp_path, box, hospital_key):
    result = take_from(_stick(tmp_path, hospital_key[0], "1.0.0", failing_golden=True), box)
    assert result.outcome is ModelOutcome.REFUSED
    assert "golden" in result.reason.lower(), result.reason
    assert _name(box) is None or _name(box) == config_module.Config().models.name
    assert _active(box) == ""


def test_two_packages_or_a_link_are_not_taken(tmp_path, box, hospital_key):
    stick = _stick(tmp_path, hospital_key[0], "1.0.0")
    _stick(tmp_path, hospital_key[0], "1.1.0")  # the same stick: two packages
    before = box.read_bytes()
    assert take_from(stick, box).outcome is ModelOutcome.TWO_PACKAGES
    assert box.read_bytes() == before
    linked = tmp_path / "linked"
    linked.mkdir()
    os.symlink(stick / f"{NAME}-1.0.0.tar.gz", linked / f"{NAME}-1.0.0.tar.gz")
    assert take_from(linked, box).outcome is ModelOutcome.NONE
    assert take_from(tmp_path / "box", box).outcome is ModelOutcome.NONE  # no archive at all


def test_the_outcome_is_a_code_and_a_line_on_the_screen(tmp_path):
    path = tmp_path / "usb-model.json"
    assert usb_model.read_outcome(path) is None
    adopted = ModelResult(ModelOutcome.ADOPTED, "a.tar.gz", f"{NAME}@1.0.0", "installed")
    usb_model.record(adopted, path)
    assert usb_model.read_outcome(path) == adopted
    assert usb_model.banner_line(adopted) == (
        f"model {NAME}@1.0.0 from the USB stick installed, on trial; it is this box's model "
        "from now on")
    refused = ModelResult(ModelOutcome.ANOTHER_MODEL, "b.tar.gz", "x@1", "the box runs y")
    assert usb_model.banner_line(refused) == (
        "model package on the USB stick refused (b.tar.gz): the box runs y")
    assert usb_model.banner_line(ModelResult(ModelOutcome.NONE)) is None
