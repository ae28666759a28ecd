"""One analysis path for a received object: decode → routing → quality → model.

The service's worker and ``clinibox infer`` both call :func:`analyse_object`,
so a file analysed on the command line gets exactly the verdict it would get
when received: decoded in the decoder sandbox (a limited child process), the
routing rules and the package's modality list applied (``models/routing.py``,
handed in as ``refusal``), every frame quality-checked, judged against the
model's validated range and inferred (``inference/runner.py``).

The worker uses the same path in two halves, ``start_object`` and
``finish_object``, so that the sandbox decodes the next object while the
worker analyses this one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clinibox_common.contracts.reasons import MAX_TEXT, Reason, ReasonCode
from clinibox_common.contracts.statuses import InstanceStatus
from engine.imaging.decode import DecodedImage, DecodeError
from engine.imaging.errors import SandboxNotStarted
from engine.imaging.sandbox import DecodeSandbox, PendingDecode
from engine.inference.runner import Analysis, ModelRunner
from firmware_app.settings.box import Config


@dataclass
class Outcome:
    """What became of one object: ``processed`` with its analysis, ``quarantined`` with the
    reason (unreadable), or ``not_analysed`` with the reason (no routing rule picks the
    model, or a modality it does not accept: good input no model here is meant for)."""

    status: InstanceStatus
    reason: Reason | None = None
    decoded: DecodedImage | None = None
    analysis: Analysis | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: the model that analysed it (``processed`` only)
    runner: ModelRunner | None = None


#: the routing decision for a decoded image: the runner of the model that analyses it, or
#: the reason none does (``models/routing.py`` decides; the caller maps names to runners)
Route = Callable[[DecodedImage], "ModelRunner | Reason"]


class Decoding:
    """An object's decode, handed to the decoder sandbox and collected later: the worker
    analyses one object while the sandbox decodes the next (``start_object``)."""

    def __init__(self, pending: PendingDecode | None, error: DecodeError | None = None) -> None:
        """``pending`` is under way in the sandbox; ``error``: it could not even start."""
        self._pending = pending
        self._error: BaseException | None = error
        self._image: DecodedImage | None = None
        #: ms this object's analysis waited for its decode (all of it when not overlapped)
        self.waited_ms = 0.0

    def wait(self) -> None:
        """Collect the sandbox's answer (once), keeping the image or the error it raised;
        this frees the sandbox for the next object's decode."""
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        began = time.perf_counter()
        try:
            self._image = pending.result()
        except (DecodeError, FileNotFoundError) as exc:
            self._error = exc
        self.waited_ms = (time.perf_counter() - began) * 1000

    def result(self) -> DecodedImage:
        """The decoded image; DecodeError (bad input) or FileNotFoundError (spool fault)."""
        self.wait()
        if self._error is not None:
            raise self._error
        assert self._image is not None
        return self._image


def decode_failed(exc: DecodeError) -> Reason:
    """The reason for an object the decoder refused: its own words, kept as they are."""
    return Reason(ReasonCode.DECODE_FAILED, {"detail": str(exc)[:MAX_TEXT]})


def start_object(path: Path, config: Config, sandbox: DecodeSandbox,
                 preview_to: Path | None = None) -> Decoding:
    """Hand ``path`` to ``sandbox`` for decoding (writing previews to ``preview_to``) and
    return at once; :func:`finish_object` analyses it."""
    try:
        return Decoding(sandbox.start_decode(path, config.worker.max_frames_per_instance,
                                             preview_to=preview_to))
    except DecodeError as exc:  # the decoder process did not start
        return Decoding(None, exc)


def finish_object(decoding: Decoding, route: Route, config: Config) -> Outcome:
    """Route and analyse a decoded object with the chosen model.

    ``FileNotFoundError`` (a spool fault) and ``SandboxNotStarted`` (the box could not start
    its decoder) are the caller's to handle: neither is bad input.
    ``timings["decode"]`` is the time the analysis waited for the decoder.
    """
    started = time.perf_counter()
    try:
        decoded = decoding.result()
    except SandboxNotStarted:
        raise
    except DecodeError as exc:
        return Outcome(InstanceStatus.QUARANTINED, decode_failed(exc))
    runner = route(decoded)
    if isinstance(runner, Reason):
        return Outcome(InstanceStatus.NOT_ANALYSED, runner, decoded)
    analysis = runner.analyse(decoded, config.limits.min_rows)
    timings = dict(analysis.timings, decode=decoding.waited_ms)
    timings["total"] = (time.perf_counter() - started) * 1000
    return Outcome(InstanceStatus.PROCESSED, "", decoded, analysis, timings, runner)


def analyse_object(path: Path, route: Route, config: Config, sandbox: DecodeSandbox,
                   preview_to: Path | None = None) -> Outcome:
    """Decode ``path`` in ``sandbox`` (writing previews to ``preview_to``), route it and
    analyse it with the chosen model, one step after the other.

    ``FileNotFoundError`` is the caller's to handle (a spool fault is not bad input).
    """
    return finish_object(start_object(path, config, sandbox, preview_to), route, config)
