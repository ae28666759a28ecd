"""The DEMO-ONLY signing key (private half public) is trusted only where it is asked for,
and loudly: log, self-test, the device page and a short line on every viewer page."""

from __future__ import annotations

import logging
import shutil
import signal

import pytest

from clinibox_common.bundled import DEMO_PUBLIC_KEY
from clinibox_common.contracts.manifest import PackageError
from clinibox_common.contracts.signing import generate_key_pair
from engine.model_package import load_package
from firmware_app.models.store import resolve_package_root
from firmware_app.ops.selftest import FAIL, PASS, WARN, check_signing_keys
from firmware_app.settings.box import from_dict
from firmware_app.settings.models import DEMO_TRUST_WARNING
from firmware_app.storage import db
from firmware_app.storage.accounts import Accounts
from tests.web_client import ViewerClient
from web.app import create_app


def box(tmp_path, **models):
    return from_dict({"storage": {"state_dir": str(tmp_path / "state")}, "models": models})


def test_the_demo_key_id_is_the_bundled_keys():
    from clinibox_common.bundled import DEMO_KEY_ID
    from clinibox_common.contracts.signing import key_id, load_public_key

    assert key_id(load_public_key(DEMO_PUBLIC_KEY)) == DEMO_KEY_ID


def test_development_defaults_trust_the_demo_key_and_say_so(tmp_path):
    config = box(tmp_path)
    assert config.trusts_demo_key and config.trusted_key_paths == [DEMO_PUBLIC_KEY]
    check = check_signing_keys(config)
    assert (check.status, check.detail) == (WARN, DEMO_TRUST_WARNING)
    load_package(resolve_package_root(config), config.trusted_key_paths)


def test_without_the_flag_a_copy_of_the_demo_key_is_not_trusted(tmp_path):
    copy = tmp_path / "keys" / "vendor.pub"
    copy.parent.mkdir()
    shutil.copy(DEMO_PUBLIC_KEY, copy)  # smuggled in under another name
    config = box(tmp_path, trusted_keys=[str(copy)], trust_demo_key=False)
    assert config.trusted_key_paths == []
    with pytest.raises(PackageError, match="signed with the DEMO-ONLY key, which this box "
                                           "does not trust"):
        load_package(resolve_package_root(config), config.trusted_key_paths)
    assert check_signing_keys(config).status == FAIL


def test_a_provisioned_key_is_trusted_alone(tmp_path):
    own = tmp_path / "keys" / "clinic.pem"
    generate_key_pair(own, own.with_suffix(".pub"))
    config = box(tmp_path, trusted_keys=[str(own.with_suffix(".pub"))], trust_demo_key=False)
    assert config.trusted_key_paths == [own.with_suffix(".pub").resolve()]
    check = check_signing_keys(config)
    assert check.status == PASS and "not the demo key" in check.detail


@pytest.mark.parametrize("trusted", [True, False])
def test_every_viewer_page_says_demonstration_box_while_the_demo_key_is_trusted(tmp_path,
                                                                                trusted):
    """Clinic staff read one short line on every page, login included; the whole warning,
    with the setting that ends it, is the technician's (the device page, the log)."""
    config = box(tmp_path, trust_demo_key=trusted)
    if not trusted:
        own = tmp_path / "keys" / "clinic.pem"
        generate_key_pair(own, own.with_suffix(".pub"))
        config.models.trusted_keys = [str(own.with_suffix(".pub"))]
    app = create_app(config)
    page = ViewerClient(app).get("/login").get_data(as_text=True)
    assert ("Demonstration box — not for clinical use." in page) is trusted
    assert "DEMO-ONLY signing key" not in page and "trust_demo_key" not in page
    conn = db.connect(config.database_path)
    Accounts(conn).add("tina", "keeps-the-box-running", "technician")
    conn.close()
    technician = ViewerClient(app)
    technician.login("tina", "keeps-the-box-running")
    device = technician.get("/device").get_data(as_text=True)
    assert ('id="demo-trust"' in device) is trusted
    assert ("trust_demo_key = false" in device) is trusted
    # a sentence for the technician (capital, full stop), not a log line
    assert (f'id="demo-trust">{DEMO_TRUST_WARNING}</p>' in device) is trusted
    assert DEMO_TRUST_WARNING[0].isupper() and DEMO_TRUST_WARNING.endswith(".")


def test_the_service_logs_the_warning_at_start(tmp_path, caplog):
    from firmware_app.service.appliance import Appliance

    config = from_dict({"storage": {"state_dir": str(tmp_path / "state")},
                        "worker": {"enabled": False}, "usb": {"enabled": False},
                        "dicom": {"enabled": False}})
    appliance = Appliance(config)
    appliance.stop_event.set()  # serve() starts, logs, and returns at once
    # serve() takes SIGTERM and SIGINT for the service; give them back to the test process
    # (tests/conftest.py fails a test that leaves them changed)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        with caplog.at_level(logging.WARNING, logger="firmware_app.service.appliance"):
            appliance.serve()
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    assert any(DEMO_TRUST_WARNING in r.getMessage() for r in caplog.records)
