"""The console's "test the link" on a box's page (``central/link_check.py``).

``POST /fleet/<clinic>/<device>/link-check`` queues a signed test for the box, as
``clinibox central check-box`` does, and goes back to the box's page, whose panel
(:func:`link_panel`, a template global) says where the box's latest test stands, or why no
test can be made and what to fix. While a test waits for the box's answer the panel asks
the page to reload every few seconds (``console.js``, no inline script).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, url_for
from markupsafe import Markup
from werkzeug.wrappers import Response

from central import link_check
from central_console.request_context import admin_only, client_address, console, current_account
from clinibox_common.i18n import gettext

blueprint = Blueprint("link", __name__)


def _code(text: str) -> Markup:
    """A command or setting in the panel's words: code, never translated."""
    return Markup('<code translate="no">{}</code>').format(text)


def _html(words: str) -> Markup:
    """Words of ``link_check`` (an English msgid) in the reader's language as HTML: the
    sentence escaped, each command or setting it names as code."""
    return Markup.escape(gettext(words)) % {name: _code(text)
                                            for name, text in link_check.LITERALS.items()}


def link_panel(clinic: str, device: str) -> dict[str, Any]:
    """What the box page's panel shows: the latest test, its state and problem in words, and
    why a new test cannot be made (None: it can)."""
    state = console()
    database = state.store.database
    latest = link_check.latest(database, clinic, device)
    refusal = link_check.refusal(database, state.config, clinic, device)
    problem = link_check.diagnosis(latest) if latest is not None else None
    return {
        "latest": latest,
        "state": _html(link_check.STATE_WORDS[latest.state]) if latest is not None else "",
        "waiting": latest is not None and problem is not None,
        "problem": _html(link_check.PROBLEM_WORDS[problem]) if problem is not None else "",
        "refusal": _html(link_check.PROBLEM_WORDS[refusal]) if refusal is not None else "",
    }


@blueprint.app_context_processor
def _panel() -> dict[str, Any]:
    return {"link_panel": link_panel}


@blueprint.route("/fleet/<clinic>/<device>/link-check", methods=["POST"])
@admin_only
def check(clinic: str, device: str) -> Response:
    """Queue a test for the box (nothing when it cannot work: the panel says why)."""
    state = console()
    database = state.store.database
    if state.store.box_state(clinic, device) is None and \
            state.store.device(clinic, device) is None:
        abort(404)
    if link_check.refusal(database, state.config, clinic, device) is None:
        account = current_account()
        link_check.queue(database, clinic, device, account=account.name if account else "",
                         address=client_address())
        flash(gettext("Test sent to the box; its answer shows below within seconds."))
    return redirect(url_for("fleet.box", clinic=clinic, device=device) + "#link-check")
