"""Opening the hospital's store for a command: the store the configuration describes, or a
refusal that says in the reader's words where the database is and why it cannot be opened."""

from __future__ import annotations

from central import config as config_module
from central.store import Store, StoreError
from clinibox_common.errors import CliniboxError
from clinibox_common.i18n import ENGLISH, current
from clinibox_common.i18n import gettext as _
from clinibox_common.i18n.error_words import error_words


def open_store(config: config_module.CentralConfig) -> Store:
    """The hospital's store as ``config`` describes it; CliniboxError when it cannot open."""
    try:
        return Store(config.database.url, health=config.health, **webhook_options(config))
    except StoreError as exc:
        raise CliniboxError(database_words(config.database.url, exc)) from exc


def webhook_options(config: config_module.CentralConfig) -> dict[str, object]:
    """What a store queues for the webhook (``[notify]``): the receiver's and the console's
    stores alike (the console's review queues a FHIR verdict)."""
    return {"webhook": bool(config.notify.url), "public_url": config.web.public_url,
            "webhook_format": config.notify.format}


def database_words(url: str, exc: StoreError) -> str:
    """Why the database cannot be opened, for a person: the store's words in English, else
    where it is and the system's error in words."""
    from central.sql import redact

    if current() == ENGLISH:  # the command speaks English: the store's own words
        return f"cannot open the database: {exc}"
    return _("cannot open the database %(where)s: %(why)s", where=redact(url),
             why=error_words(exc.__cause__ or exc))
