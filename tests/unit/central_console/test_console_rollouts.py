"""The console's model rollouts (central_console/views_rollouts.py): the list and a rollout's
page in words, hold / resume / roll back (admin only, CSRF), starting one from
``[rollouts] packages_dir`` with a confirmation, and the drift page's proposals."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from central import labels, rollouts
from central.config import CentralConfig
from central.store import Store
from central_console import queries
from central_console.accounts import ConsoleAccounts
from central_console.app import create_app
from clinibox_common.contracts import signing
from clinibox_common.contracts.package_archive import pack
from tests.model_packages import DEMO_PRIVATE_KEY, make_package
from tests.telemetry_payloads import Box, hospital_keys
from tests.unit.central_console.test_console_web import ADMIN, RADIOLOGIST, ConsoleClient
from tests.web_client import csrf_token

DEMO_PUBLIC_KEY = DEMO_PRIVATE_KEY.with_suffix(".pub")
BOXES = (("c1", "box-1"), ("c1", "box-2"), ("c2", "box-9"))


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    """In one packages folder: a package signed by the trusted (demo) key, and one signed by
    a key the hospital does not trust."""
    root = tmp_path_factory.mktemp("packages")
    folder = root / "dir"
    other = root / "other.pem"
    signing.generate_key_pair(other, root / "other.pub")
    good = make_package(root / "src", "2.0.0")
    bad = make_package(root / "src-bad", "2.0.1", key=other)
    return {"dir": folder,
            "good": pack(good, folder / "clinibox-demo-lesion-2.0.0.tar.gz").path,
            "bad": pack(bad, folder / "clinibox-demo-lesion-2.0.1.tar.gz").path}


@pytest.fixture
def console(tmp_path, archives) -> Any:
    """A console with a radiologist and an admin, three enrolled boxes in two named clinics,
    the demo key trusted and the packages folder set."""
    config = CentralConfig()
    config.database.url = f"sqlite:///{tmp_path}/db/central.db"
    config.web.state_dir = str(tmp_path / "state")
    config.rollouts.trusted_keys = [str(DEMO_PUBLIC_KEY)]
    config.rollouts.packages_dir = str(archives["dir"])
    store = Store(config.database.url)
    accounts = ConsoleAccounts(store.database)
    accounts.add(*RADIOLOGIST, "radiologist")
    accounts.add(*ADMIN, "admin")
    hospital = hospital_keys()[1]
    for clinic, device in BOXES:
        store.enrol(clinic, device, Box(clinic, device, hospital).pem)
    store.set_clinic("c1", "Clinic One", "North")
    store.set_clinic("c2", "Clinic Two", "South")
    app = create_app(config, store)
    yield app
    store.close()


def _client(app: Any, who: tuple[str, str]) -> ConsoleClient:
    client = ConsoleClient(app)
    assert client.login(*who).status_code == 302
    return client


def _db(app: Any) -> Any:
    return app.config["CONSOLE"].store.database


def _rollout(app: Any, archives: dict[str, Path], boxes=BOXES[:2], canary: int = 1) -> int:
    package = rollouts.check_package(archives["good"], [DEMO_PUBLIC_KEY])
    with _db(app).transaction(write=True) as tx:
        return rollouts.create(tx, package, list(boxes), canary=canary, wave_size=10,
                               pause_on_failure=False, chunk_kib=256, by="it1")


def _step(app: Any, rollout_id: int, box: tuple[str, str], step: str) -> None:
    with _db(app).transaction(write=True) as tx:
        tx.execute("UPDATE rollout_targets SET step = ? WHERE rollout_id = ? AND clinic = ?"
                   " AND device = ?", (step, rollout_id, *box))


def _state(app: Any, rollout_id: int) -> tuple[str, str]:
    with _db(app).transaction(write=False) as tx:
        return tuple(tx.execute("SELECT state, state_reason FROM rollouts WHERE id = ?",
                                (rollout_id,)).fetchone())


def _downlinks(app: Any, kind: str) -> list[tuple[str, str]]:
    with _db(app).transaction(write=False) as tx:
        return [tuple(r) for r in tx.execute("SELECT clinic, device FROM downlinks WHERE"
                                             " kind = ? ORDER BY seq", (kind,)).fetchall()]


def _audit(app: Any) -> list[tuple[str, str, str, str]]:
    with _db(app).transaction(write=False) as tx:
        return [tuple(r) for r in tx.execute(
            "SELECT account, action, target, detail FROM console_audit ORDER BY id").fetchall()]


def _drifting(app: Any, clinic: str, device: str) -> None:
    with _db(app).transaction(write=True) as tx:
        tx.execute("INSERT INTO box_state (clinic, device, last_seen, state, model, drift)"
                   " VALUES (?, ?, ?, 'online', 'clinibox-demo-lesion@2.0.0', 1)",
                   (clinic, device, time.time()))


def test_rollouts_page_and_a_rollouts_page_say_where_each_box_stands(console, archives):
    rollout_id = _rollout(console, archives)
    admin = _client(console, ADMIN)
    listing = admin.get("/rollouts").get_data(as_text=True)
    row = listing[listing.index(f'data-rollout-id="{rollout_id}"'):]
    row = row[:row.index("</tr>")]
    assert "clinibox-demo-lesion" in row and "in progress" in row and "it1" in row
    assert "offer sent: 1" in row and "waiting for its wave: 1" in row
    assert 'id="start"' in listing and "clinibox-demo-lesion-2.0.0.tar.gz" in listing
    page = admin.get(f"/rollouts/{rollout_id}").get_data(as_text=True)
    assert "Wave 1 (canaries)" in page and "Wave 2" in page and 'id="hold"' in page
    first = page[page.index('data-target="c1/box-1"'):]
    assert "Clinic One" in page and "North" in page
    assert "offer sent" in first[:first.index("</tr>")]
    assert "Roll this box back" in first[:first.index("</tr>")]
    # a radiologist may look, without the buttons nor the start form
    radiologist = _client(console, RADIOLOGIST)
    seen = radiologist.get(f"/rollouts/{rollout_id}").get_data(as_text=True)
    assert "offer sent" in seen and 'id="hold"' not in seen and "Roll this box back" not in seen
    assert 'id="start"' not in radiologist.get("/rollouts").get_data(as_text=True)
    assert admin.get("/rollouts/999").status_code == 404
    # the fleet page and the box's page say the box's step in the rollout
    _drifting(console, "c1", "box-1")
    fleet = admin.get("/fleet").get_data(as_text=True)
    assert re.search(r'class="rollout-step"><a href="/rollouts/\d+">offer sent</a>', fleet)
    box = admin.get("/fleet/c1/box-1").get_data(as_text=True)
    assert re.search(r'id="rollout-step">.*offer sent', box)


def test_hold_resume_and_roll_back_change_the_rollout(console, archives):
    rollout_id = _rollout(console, archives)
    admin = _client(console, ADMIN)
    page = admin.get(f"/rollouts/{rollout_id}").get_data(as_text=True)
    token = csrf_token(page)
    assert admin.post(f"/rollouts/{rollout_id}/hold", token=token).status_code == 302
    assert _state(console, rollout_id) == ("paused", "held")
    assert "on hold (held by a person)" in admin.get(f"/rollouts/{rollout_id}").get_data(
        as_text=True)
    assert admin.post(f"/rollouts/{rollout_id}/resume", token=token).status_code == 302
    assert _state(console, rollout_id) == ("active", "")
    _step(console, rollout_id, BOXES[0], "on_trial")
    asked = admin.post(f"/rollouts/{rollout_id}/rollback", token=token)
    assert asked.status_code == 200 and 'id="confirm"' in asked.get_data(as_text=True)
    assert _downlinks(console, "rollback") == [] and _state(console, rollout_id)[0] == "active"
    done = admin.post(f"/rollouts/{rollout_id}/rollback", {"confirmed": "1"}, token=token)
    assert done.status_code == 302
    assert _downlinks(console, "rollback") == [BOXES[0]]
    assert _state(console, rollout_id) == ("rolled_back", "by_person")
    actions = [(a[0], a[1]) for a in _audit(console)]
    assert ("it1", "rollout_paused") in actions and ("it1", "rollout_resumed") in actions
    assert ("it1", "rollback_sent") in actions
    shown = admin.get(f"/rollouts/{rollout_id}").get_data(as_text=True)
    assert "rollback ordered" in shown and "rolled back (by a person)" in shown


def test_one_box_is_rolled_back_after_a_confirmation(console, archives):
    rollout_id = _rollout(console, archives)
    admin = _client(console, ADMIN)
    token = csrf_token(admin.get(f"/rollouts/{rollout_id}").get_data(as_text=True))
    form = {"clinic": "c1", "device": "box-1"}
    asked = admin.post(f"/rollouts/{rollout_id}/rollback", form, token=token)
    assert asked.status_code == 200 and "Roll box c1/box-1 back" in asked.get_data(as_text=True)
    assert _downlinks(console, "rollback") == []
    assert admin.post(f"/rollouts/{rollout_id}/rollback", {**form, "confirmed": "1"},
                      token=token).status_code == 302
    assert _downlinks(console, "rollback") == [("c1", "box-1")]
    assert _state(console, rollout_id)[0] == "active"  # the others go on


def test_changes_are_refused_to_a_radiologist_and_without_csrf(console, archives):
    rollout_id = _rollout(console, archives)
    radiologist = _client(console, RADIOLOGIST)
    token = csrf_token(radiologist.get("/alerts").get_data(as_text=True))
    for path in ("hold", "rollback"):
        answer = radiologist.post(f"/rollouts/{rollout_id}/{path}", {"confirmed": "1"},
                                  token=token)
        assert answer.status_code == 403
    assert radiologist.post("/drift/c1/box-1/decide", {"action": "hold_rollout"},
                            token=token).status_code == 403
    admin = _client(console, ADMIN)
    assert admin.post(f"/rollouts/{rollout_id}/hold", token="").status_code == 400
    assert admin.post(f"/rollouts/{rollout_id}/rollback", {"confirmed": "1"},
                      token="").status_code == 400
    assert _state(console, rollout_id) == ("active", "")
    assert _downlinks(console, "rollback") == []


def test_a_drifting_box_gets_proposals_that_act_only_once_confirmed(console, archives):
    rollout_id = _rollout(console, archives)
    _drifting(console, "c1", "box-1")
    _step(console, rollout_id, BOXES[0], "on_trial")
    admin = _client(console, ADMIN)
    drift = admin.get("/drift").get_data(as_text=True)
    assert 'data-proposal="c1/box-1"' in drift
    assert "Hold the rollout" in drift and "Roll this box back" in drift
    box = admin.get("/fleet/c1/box-1").get_data(as_text=True)
    assert 'id="drift-proposal"' in box
    token = csrf_token(drift)
    form = {"action": "rollback_box", "rollout": str(rollout_id), "back": "drift"}
    asked = admin.post("/drift/c1/box-1/decide", form, token=token)
    page = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "Box c1/box-1 is drifting" in page
    assert 'name="confirmed" value="1"' in page and _downlinks(console, "rollback") == []
    assert admin.post("/drift/c1/box-1/decide", {**form, "confirmed": "1"},
                      token=token).status_code == 302
    assert _downlinks(console, "rollback") == [("c1", "box-1")]
    assert ("it1", "drift_decision", "box:c1/box-1",
            f"rollback_box:{rollout_id}") in _audit(console)
    # the box was sent back: only holding the rollout is proposed now
    again = admin.get("/drift").get_data(as_text=True)
    assert "Hold the rollout" in again and "Roll this box back" not in again
    hold = {"action": "hold_rollout", "rollout": str(rollout_id), "confirmed": "1"}
    assert admin.post("/drift/c1/box-1/decide", hold, token=token).status_code == 302
    assert _state(console, rollout_id) == ("paused", "held")
    assert ("it1", "drift_decision", "box:c1/box-1",
            f"hold_rollout:{rollout_id}") in _audit(console)
    audit = admin.get("/audit").get_data(as_text=True)
    assert "decision on a drifting box" in audit and f"held rollout {rollout_id}" in audit
    # a proposal that no longer applies changes nothing
    admin.post("/drift/c1/box-1/decide", hold, token=token)
    assert [a[1] for a in _audit(console)].count("drift_decision") == 2


def test_a_box_without_a_rollout_gets_no_proposal(console):
    _drifting(console, "c2", "box-9")
    admin = _client(console, ADMIN)
    drift = admin.get("/drift").get_data(as_text=True)
    assert "/fleet/c2/box-9" in drift and "data-proposal=" not in drift


def _start_form(client: ConsoleClient, package: str, **extra: Any) -> Any:
    token = csrf_token(client.get("/rollouts").get_data(as_text=True))
    form = {"package": package, "box": ["c1/box-2", "c1/box-1"], "canary": "1",
            "wave_size": "10", **extra}
    return client.post("/rollouts/new", form, token=token)


def test_a_rollout_starts_from_the_packages_folder_after_a_confirmation(console, archives):
    admin = _client(console, ADMIN)
    asked = _start_form(admin, archives["good"].name)
    page = asked.get_data(as_text=True)
    assert asked.status_code == 200, page[-2000:]
    assert ("You are about to offer clinibox-demo-lesion@2.0.0 to 2 boxes, 1 canary first."
            in page)
    with _db(console).transaction(write=False) as tx:
        assert rollouts.rollouts(tx) == []
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))
    form = {**fields, "box": re.findall(r'name="box" value="([^"]+)"', page)}
    assert form["box"] == ["c1/box-2", "c1/box-1"] and form["confirmed"] == "1"
    started = admin.post("/rollouts/new", form, token=fields["csrf_token"])
    assert started.status_code == 302 and re.search(r"/rollouts/\d+$",
                                                    started.headers["Location"])
    with _db(console).transaction(write=False) as tx:
        (row,) = rollouts.rollouts(tx)
        boxes = rollouts.targets(tx, row["id"])
    assert (row["name"], row["version"], row["created_by"]) == ("clinibox-demo-lesion",
                                                                "2.0.0", "it1")
    assert [(b["device"], b["wave"]) for b in boxes] == [("box-2", 0), ("box-1", 1)]
    assert _downlinks(console, "rollout") == [("c1", "box-2")]  # the canary first
    # a package changed after it was chosen is not started
    stale = admin.post("/rollouts/new", {**form, "archive_sha256": "0" * 64},
                       token=fields["csrf_token"])
    assert stale.status_code == 400 and "changed after you chose it" in stale.get_data(
        as_text=True)


def test_a_group_names_every_box_of_a_county(console, archives):
    admin = _client(console, ADMIN)
    asked = _start_form(admin, archives["good"].name, box=[], group="South")
    page = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "to 1 box, 1 canary first." in page
    assert re.findall(r'name="box" value="([^"]+)"', page) == ["c2/box-9"]


@pytest.mark.parametrize(("package", "extra", "reason"), [
    ("clinibox-demo-lesion-2.0.1.tar.gz", {}, "not signed by a key the hospital trusts"),
    ("../central.db", {}, "Choose a package archive from the list."),
    ("clinibox-demo-lesion-2.0.0.tar.gz", {"box": []}, "Choose at least one box or a group."),
    ("clinibox-demo-lesion-2.0.0.tar.gz", {"canary": "-1"}, "The canary count is a number"),
])
def test_a_start_is_refused_with_a_clear_message(console, package, extra, reason):
    admin = _client(console, ADMIN)
    answer = _start_form(admin, package, **extra)
    assert answer.status_code == 400 and reason in answer.get_data(as_text=True)
    with _db(console).transaction(write=False) as tx:
        assert rollouts.rollouts(tx) == []


def test_without_a_packages_folder_the_page_names_the_setting(console):
    console.config["CONSOLE"].config.rollouts.packages_dir = ""
    admin = _client(console, ADMIN)
    page = admin.get("/rollouts").get_data(as_text=True)
    assert 'id="no-packages"' in page and "packages_dir" in page and 'id="start"' not in page


def test_rollout_words_are_in_order_and_audit_details_read_as_words():
    assert labels.rollout_steps({"kept": 2, "sent": 1, "refused": 0}) == [
        "offer sent: 1", "installed and kept: 2"]
    assert labels.rollout_state("paused", "canary_failed") == "on hold (a canary box failed)"
    assert labels.rollout_step("on_trial", rollback_seq=4) == "rollback ordered"
    assert labels.rollout_reason("golden_cases_failed") == "golden cases failed"
    assert labels.rollout_reason("no_space") == "not enough disk space"
    assert labels.detail("rollout_started", "m@1.0 to 3 boxes") == "m@1.0 to 3 boxes"
    assert labels.detail("drift_decision", "hold_rollout:7") == "held rollout 7"
    assert labels.detail("drift_decision", "bogus") == "bogus"


def test_a_proposal_needs_an_active_rollout_or_a_recent_install():
    now = 1_800_000_000.0
    target = {"rollout_id": 1, "step": "kept", "state": "done", "offer_seq": 3,
              "rollback_seq": None, "updated_at": now - 86400, "name": "m", "version": "2"}
    recent = queries.drift_proposal(target, now)
    assert recent is not None and recent["rollback"] and not recent["hold"]
    old = {**target, "updated_at": now - 90 * 86400}
    assert queries.drift_proposal(old, now) is None
    waiting = {**target, "step": "waiting", "state": "active", "offer_seq": None}
    coming = queries.drift_proposal(waiting, now)
    assert coming is not None and coming["hold"] and not coming["rollback"]
    assert queries.drift_proposal({**target, "step": "refused"}, now) is None


@pytest.mark.slow
def test_rollout_pages_in_chinese_have_no_english_leftovers(console, archives):
    from tests.i18n_text import catalog_sentences, english_sentences, is_chinese, visible_text

    rollout_id = _rollout(console, archives)
    _drifting(console, "c1", "box-1")
    console.config["CONSOLE"].config.web.language = "zh_CN"
    admin = _client(console, ADMIN)
    for path in ("/rollouts", f"/rollouts/{rollout_id}", "/drift", "/fleet", "/fleet/c1/box-1"):
        html = admin.get(path).get_data(as_text=True)
        text = visible_text(html)
        assert is_chinese(text), path
        assert catalog_sentences(text) == [], (path, catalog_sentences(text))
        assert english_sentences(text) == [], (path, english_sentences(text))
    token = csrf_token(admin.get("/rollouts").get_data(as_text=True))
    confirm = admin.post("/rollouts/new", {"package": archives["good"].name, "box": "c1/box-2",
                                           "canary": "1", "wave_size": "10"}, token=token)
    assert "即将向 1 台设备分发" in confirm.get_data(as_text=True)
    assert english_sentences(visible_text(confirm.get_data(as_text=True))) == []


def test_a_rollouts_page_shows_each_boxs_download_as_it_reported_it(console, archives):
    """A box downloading the package says so at each tenth (``received_bytes``,
    ``total_bytes`` on its ``downloading`` events): the rollout's page shows bytes, percent,
    the rate and the minutes left from its last two reports, in English and Chinese."""
    from clinibox_common.contracts.egress import check_message
    from clinibox_common.contracts.envelope import Header
    from firmware_app.telemetry.messages import device_event
    from tests.i18n_text import english_sentences, visible_text

    rollout_id = _rollout(console, archives)
    _step(console, rollout_id, ("c1", "box-1"), "downloading")
    store = console.config["CONSOLE"].store
    now = time.time()
    for seq, (received, ago) in enumerate(((1_000_000, 120), (2_500_000, 60)), start=1):
        event = device_event("rollout", "hospital", "", "clinibox-demo-lesion@2.0.0",
                             rollout=rollout_id, step="downloading",
                             progress=(received, 5_000_000))
        event["created_at"] = int(now - ago)
        check_message("event", event, None)
        assert store.store(Header("c1", "box-1", "event", seq), event, now - ago + 1)
    admin = _client(console, ADMIN)
    page = admin.get(f"/rollouts/{rollout_id}").get_data(as_text=True)
    row = page[page.index('data-target="c1/box-1"'):]
    row = row[:row.index("</tr>")]
    assert '<progress max="100" value="50">' in row
    assert "2.5 MB of 5.0 MB (50 %), 25.0 KB/s, about 2 min left; said" in row
    other = page[page.index('data-target="c1/box-2"'):]
    assert "<progress" not in other[:other.index("</tr>")]  # it said nothing of a download
    console.config["CONSOLE"].config.web.language = "zh_CN"
    chinese = _client(console, ADMIN).get(f"/rollouts/{rollout_id}").get_data(as_text=True)
    text = visible_text(chinese)
    assert english_sentences(text) == [], english_sentences(text)
    assert "25.0 KB" in text and ("50%" in text or "50 %" in text)
