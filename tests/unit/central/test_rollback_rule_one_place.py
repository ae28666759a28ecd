"""Which boxes a rollback reaches is decided in one place (issue 57): ``rollouts.can_roll_back``
and ``rollouts.undoable``, which ``rollouts.rollback`` follows and the console's rollout page
shows (its "Roll this box back" buttons, its refusal of a box in a later rollout).
"""

from __future__ import annotations

import re
from typing import Any

from central import rollouts
from tests.unit.central_console.test_console_rollouts import (  # noqa: F401
    ADMIN,
    BOXES,
    _client,
    _db,
    _downlinks,
    _rollout,
    _step,
    archives,
    console,
)
from tests.web_client import csrf_token


def _buttons(page: str) -> list[tuple[str, str]]:
    """The boxes the page offers to roll back, one button each."""
    return re.findall(r'name="clinic" value="([^"]+)"><input type="hidden" name="device" '
                      r'value="([^"]+)"><button', page)


def test_the_page_offers_exactly_the_boxes_a_rollback_reaches(console, archives):  # noqa: F811
    """Canary offered, canary failed, waiting: the page's buttons and the orders sent agree."""
    rollout_id = _rollout(console, archives, boxes=BOXES, canary=2)  # two offered, one waits
    _step(console, rollout_id, BOXES[1], "golden_failed")
    with _db(console).transaction(write=False) as tx:
        reached = [(t["clinic"], t["device"]) for t in rollouts.targets(tx, rollout_id)
                   if rollouts.can_roll_back(t)]
    assert reached == [BOXES[0]]
    admin = _client(console, ADMIN)
    page = admin.get(f"/rollouts/{rollout_id}").get_data(as_text=True)
    assert _buttons(page) == reached
    assert admin.post(f"/rollouts/{rollout_id}/rollback", {"confirmed": "1"},
                      token=csrf_token(page)).status_code == 302
    assert _downlinks(console, "rollback") == reached


def test_a_box_is_rolled_back_from_its_latest_rollout(console, archives):  # noqa: F811
    first = _rollout(console, archives, boxes=BOXES[:1])
    later = _rollout(console, archives, boxes=BOXES[:1])
    with _db(console).transaction(write=False) as tx:
        mine: Any = rollouts.undoable(tx, *BOXES[0])
    assert mine is not None and mine["rollout_id"] == later
    admin = _client(console, ADMIN)
    page = admin.get(f"/rollouts/{first}").get_data(as_text=True)
    refused = admin.post(f"/rollouts/{first}/rollback",
                         {"clinic": BOXES[0][0], "device": BOXES[0][1], "confirmed": "1"},
                         token=csrf_token(page))
    assert refused.status_code == 302 and _downlinks(console, "rollback") == []
    shown = admin.get(f"/rollouts/{first}").get_data(as_text=True)
    assert f"the box is in a later rollout ({later})" in shown, shown[-3000:]
