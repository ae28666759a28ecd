"""One analysis path for a received object: decode → modality → quality → model.

The service's worker and ``clinibox infer`` both call :func:`analyse_object`,
so a file analysed on the command line gets exactly the verdict it would get
when received: decoded in the decoder sandbox (a limited child process), the
package's modality list applied, every frame quality-checked, judged against
the model's validated range and inferred (``inference/runner.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from firmware_app.imaging.decode import DecodedImage, DecodeError
from firmware_app.imaging.sandbox import DecodeSandbox
from firmware_app.inference.runner import Analysis, ModelRunner
from firmware_app.settings.box import Config


@dataclass
class Outcome:
    """What became of one object: ``processed`` with its analysis, or ``quarantined``
    with the reason (unreadable, or a modality the model does not accept)."""

    status: str
    reason: str = ""
    decoded: DecodedImage | None = None
    analysis: Analysis | None = None
    timings: dict[str, float] = field(default_factory=dict)


def modality_refusal(runner: ModelRunner, modality: str) -> str | None:
    """Why the model does not analyse ``modality`` (None when it does)."""
    accepted = runner.package.modalities
    if accepted and modality not in accepted:
        return (f"modality {modality or 'unknown'} is not one the model "
                f"{runner.package.model_id} accepts ({', '.join(accepted)})")
    return None


def analyse_object(path: Path, runner: ModelRunner, config: Config, sandbox: DecodeSandbox,
                   preview_to: Path | None = None) -> Outcome:
    """Decode ``path`` in ``sandbox`` (writing previews to ``preview_to``) and analyse it.

    ``FileNotFoundError`` is the caller's to handle (a spool fault is not bad input).
    """
    started = time.perf_counter()
    try:
        decoded = sandbox.decode(path, config.worker.max_frames_per_instance,
                                 preview_to=preview_to)
    except DecodeError as exc:
        return Outcome("quarantined", str(exc))
    decode_ms = (time.perf_counter() - started) * 1000
    refusal = modality_refusal(runner, decoded.modality)
    if refusal:
        return Outcome("quarantined", refusal, decoded)
    analysis = runner.analyse(decoded, config.limits.min_rows)
    timings = dict(analysis.timings, decode=decode_ms)
    timings["total"] = (time.perf_counter() - started) * 1000
    return Outcome("processed", "", decoded, analysis, timings)
