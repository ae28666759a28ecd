"""An exception in the reader's language, for the commands that print one to a person.

English keeps the exception's own text (what the logs say). Another language says it from
what a program can read back, never from the English words: a model package's refusal by its
code (``PackageError.code``: ``signature``, ``tampered`` …), a system error by its errno
(``ENOENT``, ``EACCES``, ``ECONNREFUSED`` …), an error that names its own words
(``said()``, as ``UpdateRefused`` does); anything else as "an unexpected error".
"""

from __future__ import annotations

import errno
import socket

from clinibox_common.i18n.catalog import ENGLISH, N_, current, gettext

#: a model package's refusal codes (``contracts.manifest.PackageError.code``)
PACKAGE_CODES = {
    "invalid": N_("the package is not one this box may run"),
    "signature": N_("the package's signature is not from a trusted key"),
    "tampered": N_("the package's files were changed or damaged"),
    "golden_cases_failed": N_("the package failed its check on known test images"),
    "older_version": N_("the package is older than the version this box may run"),
    "not_installed": N_("no model package is installed"),
    "load_failed": N_("the model could not be loaded"),
}
#: the system errors a technician meets on a box
ERRNOS = {
    errno.ENOENT: N_("the file or folder does not exist"),
    errno.EACCES: N_("permission denied"),
    errno.EPERM: N_("permission denied"),
    errno.ENOSPC: N_("the disk is full"),
    errno.EROFS: N_("the disk is read-only"),
    errno.EISDIR: N_("a folder was found where a file was expected"),
    errno.ENOTDIR: N_("a file was found where a folder was expected"),
    errno.ECONNREFUSED: N_("the connection was refused: nothing listens there"),
    errno.ETIMEDOUT: N_("no answer in time"),
    errno.EHOSTUNREACH: N_("the host cannot be reached"),
    errno.ENETUNREACH: N_("the network cannot be reached"),
    errno.ECONNRESET: N_("the other side closed the connection"),
    errno.EADDRINUSE: N_("the port is already in use"),
    errno.EIO: N_("a read or write error on the disk"),
    socket.EAI_NONAME: N_("the host name is unknown"),
    socket.EAI_AGAIN: N_("the host name cannot be looked up now"),
}


def error_words(exc: BaseException, english: object = None) -> str:
    """``exc`` for a person in the current language (in English its own text, or
    ``english`` where the caller says it otherwise: an OSError's ``strerror``)."""
    if current() == ENGLISH:
        return str(exc if english is None else english)
    said = getattr(exc, "said", None)
    if callable(said):
        return str(said())
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code in PACKAGE_CODES:
        return gettext(PACKAGE_CODES[code])
    number = getattr(exc, "errno", None)
    if isinstance(number, int) and number in ERRNOS:
        return gettext(ERRNOS[number])
    if isinstance(exc, TimeoutError):
        return gettext(ERRNOS[errno.ETIMEDOUT])
    return gettext("an unexpected error")
