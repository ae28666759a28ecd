"""The language switch in every page's header: ``POST /language`` (no script needed).

A logged-in user's choice is kept with the account (``accounts.language``), so
it follows the user to any tablet; before logging in it is kept in the session
cookie and given to the account at login (``web/views_auth.py``). Then back to
the page the switch was on (a path on this box, else the worklist).
"""

from __future__ import annotations

from flask import Blueprint, abort, redirect, request, session, url_for

from firmware_app import i18n
from firmware_app.storage.accounts import Accounts
from web.i18n import SESSION_KEY
from web.security import current_account, database
from webcore.security import same_origin_path

blueprint = Blueprint("language", __name__)


@blueprint.route("/language", methods=["POST"])
def choose():
    """Keep the chosen language (the account's, or the session's before login) and go back."""
    language = request.form.get("language", "")
    if language not in i18n.LANGUAGES:
        abort(400)
    account = current_account()
    if account is not None:
        Accounts(database()).set_language(account.id, language)
    session[SESSION_KEY] = language
    back = same_origin_path(request.form.get("next", ""))
    return redirect(back or url_for("clinic.worklist"))
