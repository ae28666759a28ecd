"""The viewer's wiring, written out in one place: ``create_app(config)``.

    browser ──HTTPS (gunicorn, web/server.py)──> Flask app
      webcore.security.configure: cookie flags, CSRF, security headers (shared)
      security.install: session check, role check
      webcore.errors: the error pages; web/i18n.py on webcore.i18n: the language
      webcore.pages: the page parts both apps share (header switch, logout, login card)
      auth      /login /logout                       (web/views_auth.py)
      clinic    worklist, study, images, feedback, report (web/views_clinic.py)
      device    status, quarantine (technicians)     (web/views_device.py)
      export    a study de-identified as a zip       (web/views_export.py)
      feedback  disagreed cases and their export     (web/views_feedback.py; technicians)
      audit     the audit trail (technicians)        (web/views_audit.py; rows: web/audit_trail.py)
      language  the switch in the header             (web/views_language.py; choice: web/i18n.py)
      live      bedside live video and its sessions  (web/views_live.py)
      confirm   the hospital disagreed: the doctor's list (web/views_to_confirm.py)
      dicomweb  /dicomweb: QIDO-RS, WADO-RS, read-only, when [dicomweb] is on
                (web/views_dicomweb.py; its accounts: web/dicomweb_auth.py)
      reads and writes: the box database (SQLite, WAL: the worker keeps writing)
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Flask

from clinibox_common.contracts import statuses
from clinibox_common.contracts.manifest import PackageError
from clinibox_common.i18n import N_, gettext
from engine.model_package import load_package
from firmware_app.models.store import resolve_package_root
from firmware_app.settings.box import Config
from firmware_app.settings.models import DEMO_TRUST_WARNING
from firmware_app.storage import db
from firmware_app.storage.spool import Spool, make_spool
from firmware_app.words import labels, wording
from firmware_app.words import model_update_words as model_words
from web import i18n, security
from web.security import current_account
from webcore import errors as error_pages
from webcore import pages as web_pages
from webcore import security as web_security

log = logging.getLogger(__name__)


@dataclass
class Viewer:
    """What the routes share: the box's config, its spool, and the model package's facts."""

    config: Config
    spool: Spool
    _package: tuple[tuple[str, float], dict[str, Any]] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def package_facts(self) -> dict[str, Any]:
        """The package the box runs: id, intended use, artifacts with validation metrics.

        The same resolver as the service's (``resolve_package_root``: a pinned
        version, else the store's active package after ``clinibox model
        install``, else the bundled one). Verified (signature and hashes) once
        per package and manifest change; a package that fails verification is
        reported, not hidden.
        """
        config = self.config
        try:
            root = resolve_package_root(config)
            stamp = (str(root.resolve()), (root / "manifest.json").stat().st_mtime)
        except (PackageError, OSError) as exc:  # none found: a reason code for the page
            return {"error": str(exc), "error_code": "not_installed"}
        with self._lock:
            if self._package is not None and self._package[0] == stamp:
                return self._package[1]
            try:
                package = load_package(root, config.trusted_key_paths)
            except PackageError as exc:
                facts: dict[str, Any] = {"error": f"{root}: {exc}", "error_code": exc.code}
            else:
                facts = {
                    "manifest": package.manifest,  # for the study's SR in an export
                    "model_id": package.model_id,
                    "intended_use": package.manifest.get("intended_use", ""),
                    "signer": package.signer,
                    "thresholds": package.thresholds,
                    "artifacts": [{"label": f"{a['format']}/{a['precision']}",
                                   "path": a["path"], "profiles": a.get("profiles", []),
                                   "validation": a.get("validation", {})}
                                  for a in package.manifest["artifacts"]],
                }
            self._package = (stamp, facts)
            return facts


def create_app(config: Config) -> Flask:
    """The clinic viewer for the box described by ``config``."""
    app = Flask(__name__)
    web = config.web
    db.open_database(config.database_path).close()  # the viewer may start before the service
    app.config.update(CLINIBOX=Viewer(config, make_spool(config)))
    web_security.configure(
        app, secret=web_security.session_secret(config.keys_dir / "web-session.secret"),
        cookie_name="clinibox_session", max_hours=web.session_max_hours)
    security.install(app)
    i18n.install(app)
    web_pages.install(app)

    from web.views_audit import blueprint as audit
    from web.views_auth import blueprint as auth
    from web.views_clinic import blueprint as clinic
    from web.views_device import blueprint as device
    from web.views_export import blueprint as export
    from web.views_feedback import blueprint as feedback
    from web.views_language import blueprint as language
    from web.views_live import blueprint as live
    from web.views_to_confirm import blueprint as confirm

    for blueprint in (auth, clinic, device, export, feedback, audit, language, live, confirm):
        app.register_blueprint(blueprint)
    if config.dicomweb.enabled:
        from web.views_dicomweb import blueprint as dicomweb

        app.register_blueprint(dicomweb)

    @app.context_processor
    def shared() -> dict[str, Any]:
        facts = app.config["CLINIBOX"].package_facts()
        return {"account": current_account(), "words": wording, "labels": labels,
                "model_words": model_words,  # the wait for a model, the hospital's rollouts
                "statuses": statuses,  # the states' words, for comparisons (no literals)
                "model_notice": wording.intended_use(facts.get("intended_use", "")),
                # the whole warning for the technician's device page; a short line for all
                "demo_box": app.config["CLINIBOX"].config.trusts_demo_key,
                "demo_trust": gettext(DEMO_TRUST_WARNING) if app.config["CLINIBOX"].config
                .trusts_demo_key else ""}
    error_pages.install_error_pages(app, extra=VIEWER_ERRORS)
    return app


#: the viewer's own error pages, beside webcore.errors.ERRORS
VIEWER_ERRORS = {
    410: (N_("Image deleted"), N_("This image was deleted by retention; the findings are kept "
                                  "on the study page and in its report.")),
    500: (N_("Something went wrong"), N_("The error was logged; the box keeps running.")),
}
