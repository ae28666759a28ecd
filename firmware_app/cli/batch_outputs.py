"""The files ``clinibox infer`` writes: ``--csv``, ``--html`` and ``--summary-json``.

Each output's folder is checked before the analysis starts (:func:`output_path`), so a
typo costs no time; a file that cannot be written then names itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from clinibox_common.errors import EXIT_USAGE, CliniboxError
from clinibox_common.i18n import gettext
from engine.inference.runner import ModelRunner
from firmware_app.cli.batch_csv import write_csv
from firmware_app.cli.batch_html import ModelFacts, render_summary
from firmware_app.cli.batch_labels import Evaluation
from firmware_app.cli.batch_studies import FileResult, StudySummary
from firmware_app.dicom_out.source import ModelIdentity

_ = gettext


def output_path(name: str | None) -> Path | None:
    """An output file's path; usage error when its folder does not exist."""
    if name is None:
        return None
    path = Path(name)
    if not path.parent.is_dir():
        raise CliniboxError(_("cannot write %(path)s: the folder %(folder)s does not exist",
                              path=name, folder=str(path.parent)), exit_status=EXIT_USAGE)
    return path


def model_facts(runner: ModelRunner) -> ModelFacts:
    """What the summaries say of the model that ran."""
    manifest = runner.package.manifest
    identity = ModelIdentity.from_manifest(manifest)
    return ModelFacts(runner.package.model_id, runner.backend_label,
                      str(manifest.get("intended_use", "")),
                      float(runner.thresholds.get("finding", 0.5)), identity.demo)


def _write(path: Path, write: Callable[[Path], object]) -> None:
    """Run ``write(path)``; an error names the file."""
    try:
        write(path)
    except OSError as exc:
        raise CliniboxError(_("cannot write %(path)s: %(reason)s", path=str(path),
                              reason=exc.strerror or str(exc))) from None


def write_outputs(outputs: dict[str, Path | None], runner: ModelRunner,
                  results: list[FileResult], studies: list[StudySummary], skipped: list[str],
                  truth: dict[str, int], evaluation: Evaluation | None) -> list[Path]:
    """Write the ``--csv``, ``--html`` and ``--summary-json`` files asked for."""
    written = []
    if outputs["csv"] is not None:
        _write(outputs["csv"], lambda p: write_csv(p, results, studies, truth))
        written.append(outputs["csv"])
    if outputs["html"] is not None:
        html = render_summary(model_facts(runner), results, studies, len(skipped), evaluation,
                              truth)
        _write(outputs["html"], lambda p: p.write_text(html, encoding="utf-8"))
        written.append(outputs["html"])
    if outputs["summary_json"] is not None:
        facts = model_facts(runner)
        summary = {"model": {"model_id": facts.model_id, "backend": facts.backend,
                             "operating_threshold": facts.threshold, "demo": facts.demo},
                   "files": [r.report for r in results],
                   "studies": [s.to_dict() for s in studies], "skipped": skipped,
                   "labels": truth or None,
                   "accuracy": evaluation.to_dict() if evaluation is not None else None}
        _write(outputs["summary_json"],
               lambda p: p.write_text(json.dumps(summary, indent=2), encoding="utf-8"))
        written.append(outputs["summary_json"])
    return written
