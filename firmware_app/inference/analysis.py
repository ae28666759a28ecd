"""One analysis path for a received object: decode → routing → quality → model.

The service's worker and ``clinibox infer`` both call :func:`analyse_object`,
so a file analysed on the command line gets exactly the verdict it would get
when received: decoded in the decoder sandbox (a limited child process), the
routing rules and the package's modality list applied (``models/routing.py``,
handed in as ``refusal``), every frame quality-checked, judged against the
model's validated range and inferred (``inference/runner.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from firmware_app.imaging.decode import DecodedImage, DecodeError
from firmware_app.imaging.sandbox import DecodeSandbox
from firmware_app.inference.runner import Analysis, ModelRunner
from firmware_app.settings.box import Config


@dataclass
class Outcome:
    """What became of one object: ``processed`` with its analysis, ``quarantined`` with the
    reason (unreadable), or ``not_analysed`` with the reason (no routing rule picks the
    model, or a modality it does not accept: good input no model here is meant for)."""

    status: str
    reason: str = ""
    decoded: DecodedImage | None = None
    analysis: Analysis | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: the model that analysed it (``processed`` only)
    runner: ModelRunner | None = None


#: the routing decision for a decoded image: the runner of the model that analyses it, or
#: the reason none does (``models/routing.py`` decides; the caller maps names to runners)
Route = Callable[[DecodedImage], "ModelRunner | str"]


def analyse_object(path: Path, route: Route, config: Config, sandbox: DecodeSandbox,
                   preview_to: Path | None = None) -> Outcome:
    """Decode ``path`` in ``sandbox`` (writing previews to ``preview_to``), route it and
    analyse it with the chosen model.

    ``FileNotFoundError`` is the caller's to handle (a spool fault is not bad input).
    """
    started = time.perf_counter()
    try:
        decoded = sandbox.decode(path, config.worker.max_frames_per_instance,
                                 preview_to=preview_to)
    except DecodeError as exc:
        return Outcome("quarantined", str(exc))
    decode_ms = (time.perf_counter() - started) * 1000
    runner = route(decoded)
    if isinstance(runner, str):
        return Outcome("not_analysed", runner, decoded)
    analysis = runner.analyse(decoded, config.limits.min_rows)
    timings = dict(analysis.timings, decode=decode_ms)
    timings["total"] = (time.perf_counter() - started) * 1000
    return Outcome("processed", "", decoded, analysis, timings, runner)
