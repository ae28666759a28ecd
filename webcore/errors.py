"""The plain error pages of a clinibox web app, in the request's language.

A 400 shows the description it was given (``abort(400, description)``: the views
translate it); a refused CSRF token says why and what to do; the other codes show a
title and what it means (``ERRORS``, plus the app's own ``extra``). The app's template
gets ``code``, ``title`` and ``detail``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import BadRequest

from clinibox_common.i18n import N_, gettext

#: error pages: status -> (title, what it means), in English for the catalog
ERRORS: dict[int, tuple[str, str]] = {
    401: (N_("Please log in"), N_("This needs a logged-in account.")),
    403: (N_("Not allowed"), N_("Your account's role does not allow this page.")),
    404: (N_("Not found"), N_("There is nothing here.")),
    413: (N_("Too large"), N_("That request is too large.")),
    500: (N_("Something went wrong"), N_("The error was logged.")),
}

#: why Flask-WTF refuses a form (its English descriptions, for the catalog)
CSRF_REASONS = (
    N_("The CSRF token is missing."), N_("The CSRF session token is missing."),
    N_("The CSRF token has expired."), N_("The CSRF token is invalid."),
    N_("The CSRF tokens do not match."), N_("The referrer header is missing."),
    N_("The referrer does not match the host."),
)


def install_error_pages(app: Flask, template: str = "error.html",
                        extra: dict[int, tuple[str, str]] | None = None) -> None:
    """Answer errors on ``app`` with ``template``; ``extra`` adds or replaces
    status -> (title, detail) entries of ``ERRORS`` (N_-marked English)."""
    pages = {**ERRORS, **(extra or {})}

    def error_page(code: int, title: str, detail: str) -> tuple[str, int]:
        return render_template(template, code=code, title=title, detail=detail), code

    @app.errorhandler(CSRFError)
    def csrf_failed(error: CSRFError) -> tuple[str, int]:
        return error_page(400, gettext("The form has expired"),
                          gettext("%(why)s Go back, reload the page and try again.",
                                  why=gettext(error.description)))

    @app.errorhandler(400)
    def bad_request(error: Exception) -> tuple[str, int]:
        detail = getattr(error, "description", "")
        if not detail or detail == BadRequest.description:
            detail = gettext("The request was not understood.")
        return error_page(400, gettext("Not accepted"), detail)

    def described(code: int) -> tuple[str, int]:
        title, detail = pages[code]
        return error_page(code, gettext(title), gettext(detail))

    def handler(code: int) -> Any:
        return lambda _error: described(code)

    for code in pages:
        app.register_error_handler(code, handler(code))
