"""Load a package's second stage (``contracts/stages.py``) the way the package is loaded.

The stage runs on the runtime the package's first stage won when that runtime
reads one of the stage's artifacts (one runtime mapped into the service, not
two), else on the box's ``[runtime]`` choice; its golden cases must pass on
it, with the same fallback through the other artifacts as the package's. The
``[runtime] precision`` setting is the first stage's: the stage runs the precision
its artifacts have.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from clinibox_common.contracts.manifest import ModelPackage
from engine.golden import load_verified
from engine.inference.stage import LesionStage
from engine.runtime.registry import FORMATS
from engine.settings import RuntimeConfig

log = logging.getLogger(__name__)


def load_stage(package: ModelPackage, runtime: RuntimeConfig, first_backend: str
               ) -> LesionStage | None:
    """The package's second stage, loaded and checked; None when it declares none.

    Raises PackageError (``load_failed`` or ``golden_cases_failed``) like the package's
    own loading: a package whose second stage cannot run here is not run at all."""
    stages = package.stages
    if not stages:
        return None
    stage = stages[0]
    runtime = replace(runtime, precision="auto")  # a stage's precisions are its own
    readable = FORMATS.get(first_backend, ())
    if any(a.format in readable for a in stage.artifacts):
        runtime = replace(runtime, backend=first_backend)
    loaded, golden = load_verified(stage, runtime)
    log.info("second stage %s on %s:%s; %s", stage.name, loaded.backend.key,
             loaded.artifact.label, golden.describe())
    return LesionStage(stage, loaded.backend, loaded.artifact.label)
