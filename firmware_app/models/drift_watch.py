"""The watch on a package the box installed: drift that acts (issue 60).

For ``[models] drift_watch_days`` after an install, the box judges the package it runs by
the two measures the hospital's console marks drift with (``clinibox_common/contracts/
drift.py``), on this box's own results:

* **disagreement**: the share of clinicians' reviews of its findings that disagree, once
  there are ``drift_min_reviews`` of them, against ``drift_max_disagreement``;
* **score drift**: the population stability index between the package's first and latest
  ``drift_window`` confidences here, once it has both windows, against ``drift_max_psi``.

When one stays over its bound for :data:`CONFIRMATIONS` checks in a row (a check every
:data:`CHECK_EVERY` analyses), ``[models] drift_action`` says what happens: ``roll_back`` goes
back to the package before it (``install.rollback`` of that very version, reason
``disagreement`` or
``score_drift``; the hospital's rollout then shows the box rolled back, and why) — or, when
there is none to go back to, reports; ``report`` keeps the package and tells the hospital
(device event ``model_drift``, once a day) for a person to decide; ``off`` does nothing.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass

from clinibox_common.contracts.drift import histogram, psi
from firmware_app.settings.models import ModelsConfig
from firmware_app.storage import drift_watch as figures_of

log = logging.getLogger(__name__)

#: the watch judges after every this many analyses (two small queries)
CHECK_EVERY = 10
#: and acts only when this many checks in a row found a bound crossed (one noisy check is
#: not drift)
CONFIRMATIONS = 3
#: a drift report is queued again at most once a day
REPORT_EVERY_S = 86_400.0


@dataclass(frozen=True)
class DriftFigures:
    """What the watch measured of one package on this box."""

    disagreed: int
    reviews: int
    psi: float | None  # None until both windows are full

    def crossed(self, bounds: ModelsConfig) -> str:
        """The reason a bound was crossed (``disagreement``, ``score_drift``), or ''."""
        if self.reviews >= bounds.drift_min_reviews and \
                self.disagreed / self.reviews > bounds.drift_max_disagreement:
            return "disagreement"
        if self.psi is not None and self.psi > bounds.drift_max_psi:
            return "score_drift"
        return ""


def measure(conn: sqlite3.Connection, model_id: str, since: float, window: int
            ) -> DriftFigures:
    """The package's figures since ``since`` (its install)."""
    disagreed, reviews = figures_of.reviews_since(conn, model_id, since)
    index = None
    if figures_of.results_since(conn, model_id, since) >= 2 * window:
        first = figures_of.confidences(conn, model_id, since, window, latest=False)
        latest = figures_of.confidences(conn, model_id, since, window, latest=True)
        index = psi(histogram(first), histogram(latest))
    return DriftFigures(disagreed, reviews, index)


def installed_at(history: list[dict], version: str) -> float | None:
    """When ``version`` was last installed, from the store's history (None: not noted)."""
    for entry in reversed(history):
        if entry.get("action") == "install" and entry.get("version") == version:
            return float(entry["at"])
    return None


def watching(bounds: ModelsConfig, since: float | None, now: float | None = None) -> bool:
    """Whether a package installed at ``since`` is still watched."""
    if bounds.drift_action == "off" or since is None:
        return False
    return (now if now is not None else time.time()) - since < bounds.drift_watch_days * 86400
