"""The language switch in every page's header: ``POST /language`` (no script needed).

A logged-in user's choice is kept with the account (``accounts.language``), so
it follows the user to any tablet; before logging in it is kept in the session
cookie and given to the account at login (``web/views_auth.py``). Then back to
the page the switch was on (a path on this box, else the worklist). The form's handling is
``webcore.i18n.switch_language``, shared with the hospital's console.
"""

from __future__ import annotations

from functools import partial

from flask import Blueprint

from firmware_app.storage.accounts import Accounts
from web.security import current_account, database
from webcore.i18n import switch_language

blueprint = Blueprint("language", __name__)


@blueprint.route("/language", methods=["POST"])
def choose():
    """Keep the chosen language (the account's, or the session's before login) and go back."""
    account = current_account()
    return switch_language(None if account is None else
                           partial(Accounts(database()).set_language, account.id),
                           "clinic.worklist")
