"""One live source's process: the model chosen for it, the engine wired to the frame files,
the spool and the session keeper, under a memory bound (``clinibox live SOURCE``, started
and restarted by the service: ``service/live_process.py``)."""

from __future__ import annotations

import contextlib
import logging
import resource
import threading

from clinibox_common.errors import CliniboxError
from clinibox_common.redaction import redact_url
from engine.inference.runner import ModelRunner
from firmware_app.ingest.landing import Lander
from firmware_app.live.engine import LiveEngine
from firmware_app.live.keeper import Keeper
from firmware_app.settings.box import Config
from firmware_app.settings.live import LiveSource
from firmware_app.storage import db
from firmware_app.storage.live_frames import FrameWriter, live_root
from firmware_app.storage.spool import make_spool

log = logging.getLogger(__name__)


class UnknownSource(CliniboxError):
    """No ``[[live.sources]]`` table has that name."""


def find_source(config: Config, name: str) -> LiveSource:
    """The source called ``name``; UnknownSource naming those there are."""
    found = config.live.source(name)
    if found is not None:
        return found
    known = ", ".join(s.name for s in config.live.sources) or "none"
    raise UnknownSource(f"no [[live.sources]] is called {name!r} (configured: {known})")


def model_for(config: Config, source: LiveSource) -> str:
    """The package that reads ``source``: its own ``model``; else the first routing rule
    that names its modality (and nothing a video cannot have: body part, SOP class,
    series description); else the box's own model (which must then accept the modality,
    as for a pushed image: ``models.routing.modality_refusal``)."""
    if source.model:
        return source.model
    for rule in config.routing.rules:
        if rule.body_part or rule.sop_class or rule.series_description:
            continue
        if not rule.modality or source.modality in rule.modality:
            return rule.model
    return config.models.name


def limit_memory(megabytes: int) -> bool:
    """Bound this process's address space (the decoder's bound: a stream that would take
    more ends this process alone; the service starts it again). False where a seccomp
    filter denies setrlimit (the unit without the live-video drop-in): logged."""
    limit = megabytes * 2**20
    try:
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (OSError, ValueError) as exc:
        log.warning("live: the memory bound could not be set (%s): a decoder bomb would be "
                    "bounded only by the service's own limits", exc)
        return False
    return True


def run_source(config: Config, source: LiveSource, runner: ModelRunner | None, no_model: str,
               stop: threading.Event) -> None:
    """Read, analyse and show ``source`` until ``stop``."""
    db.private_state_dir(config.state_dir)
    with contextlib.closing(db.connect(config.database_path)) as conn:
        db.initialise(conn)  # the service has; a source run alone may be first
    writer = FrameWriter(live_root(config.state_dir), source.name, config.live.ring_seconds)
    lander = Lander(make_spool(config), config.database_path,
                    config.storage.max_object_mb * 2**20)
    keeper = Keeper(source, config.live, config.database_path, lander,
                    station=config.telemetry.device)
    engine = LiveEngine(source, config.live, runner, writer, keeper, no_model=no_model)
    log.info("live %s: %s (%s) read by %s", source.name, redact_url(source.url), source.modality,
             runner.package.model_id if runner else f"no model ({no_model})")
    engine.run(stop)
