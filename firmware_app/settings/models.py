"""The ``[models]`` section: the model package the box runs and the keys it trusts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clinibox_common.bundled import DEMO_KEY_ID
from clinibox_common.contracts.manifest import DEMO_MODEL_NAME
from clinibox_common.i18n import N_
from clinibox_common.settings_loader import in_range, one_of, setting

#: what the box does when a package crosses a drift bound (``[models] drift_action``)
DRIFT_ACTIONS = ("roll_back", "report", "off")
#: whether the box sets its own finding threshold (``[models] calibration``)
CALIBRATIONS = ("keep_sensitivity", "off")


@dataclass
class ModelsConfig:
    """The model package the box runs and the keys it trusts."""

    dir: str = setting(doc="folder of model packages; empty means the bundled models/", default="")
    name: str = setting(doc="package name", default=DEMO_MODEL_NAME)
    version: str = setting(doc="package version; empty picks the newest", default="")
    trusted_keys: list[str] = setting(
        doc="Ed25519 public keys (PEM) trusted to sign packages (the demo key among them "
            "counts only with trust_demo_key)", factory=list,
    )
    trust_demo_key: bool = setting(
        doc="also trust the DEMO-ONLY key, whose private half is public in the source: for "
            "development and demonstrations (make run); installed and provisioned boxes set "
            "false", default=True)
    store_dir: str = setting(
        doc="where `clinibox model install` keeps installed packages; empty means "
            "<state_dir>/models", default="")
    trial_jobs: int = setting(in_range(1, 100_000), "analyses a newly installed package must "
                              "complete without a worker crash before it is kept", 20)
    trial_hours: float = setting(in_range(0.01, 720),
                                 "hours of running without a crash after which "
                                 "a newly installed package is kept", 24.0)
    # the watch after an install (models/drift_watch.py): the same measures as the console's
    drift_action: str = setting(
        one_of(*DRIFT_ACTIONS),
        "what the box does when a package it installed crosses a drift bound within "
        "drift_watch_days: roll_back (to the package before it, and tell the hospital), "
        "report (keep it and tell the hospital, for a person to decide) or off",
        "roll_back")
    drift_watch_days: float = setting(in_range(0.01, 365),
                                      "days after an install that the box watches the package",
                                      14.0)
    drift_max_disagreement: float = setting(
        in_range(0.0, 1.0), "the share of clinicians' reviews disagreeing with the package's "
        "findings that is too many (judged from drift_min_reviews reviews)", 0.4)
    drift_min_reviews: int = setting(in_range(1, 100_000),
                                     "reviews needed before the disagreement is judged", 20)
    drift_max_psi: float = setting(
        in_range(0.001, 10.0), "the population stability index between the package's first "
        "and latest drift_window confidences on this box that is too much", 0.5)
    drift_window: int = setting(in_range(10, 100_000),
                                "analyses in each of the two windows the PSI compares (two "
                                "samples of 100 from one distribution differ by PSI 0.2)", 500)

    # the clinic's own threshold (models/calibration.py, contracts/clinic_threshold.py)
    calibration: str = setting(
        one_of(*CALIBRATIONS),
        "keep_sensitivity: the box sets the finding threshold of the package it runs from "
        "this clinic's confirmed cases, the highest that still finds calibration_sensitivity "
        "of the confirmed lesions (bounded by the package's floor); off: the package's "
        "threshold", "off")
    calibration_sensitivity: float = setting(
        in_range(0.0, 1.0), "the share of confirmed lesions the clinic's threshold must find; "
        "0 means the sensitivity the package was validated with (never below its floor)", 0.0)
    calibration_min_lesions: int = setting(
        in_range(5, 100_000), "confirmed lesions needed before the box sets its own threshold",
        20)
    calibration_min_clear: int = setting(
        in_range(5, 100_000), "confirmed clear images needed before the box sets its own "
        "threshold", 20)
    calibration_raise: bool = setting(
        doc="also raise the threshold above the package's (fewer findings) when the confirmed "
            "cases allow; off: the box only ever lowers it (reviewed cases are not a random "
            "sample: a missed lesion is confirmed only when someone reviews an image without "
            "a finding)", default=False)
    calibration_max_shift: float = setting(
        in_range(0.0, 5.0), "how far the clinic's threshold may move from the package's, on "
        "the logit scale (1.0: a threshold of 0.5 stays within 0.27 … 0.73)", 1.0)


#: what the box says wherever the demo key is trusted (log, status, self-test, viewer)
#: (a sentence for the technician, as logged; marked for the catalog: the viewer and the
#: self-test translate it)
DEMO_TRUST_WARNING = N_("This box trusts the DEMO-ONLY signing key, whose private half is "
                        "public: anyone can sign a package it will run. For development and "
                        "demonstrations only; set [models] trust_demo_key = false in "
                        "clinibox.toml.")


def is_demo_key(path: Path) -> bool:
    """Whether the key file at ``path`` is (a copy of) the demo public key."""
    from clinibox_common.contracts import signing

    try:
        return signing.key_id(signing.load_public_key(path)) == DEMO_KEY_ID
    except (OSError, ValueError):
        return False
