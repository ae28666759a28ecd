"""``clinibox infer PATH…``: analyse files and folders now, without the service.

Every file goes through the service's own path (``inference/analysis.py``:
decoder sandbox, routing rules and modality list, quality, validated range), so
it gets the verdict it would get when received. Folders are walked and
DICOMDIRs read (``cli/batch_paths.py``); progress goes to stderr, so ``--json``
on stdout stays clean. The files roll up into studies (``cli/batch_studies.py``)
for ``--csv`` (``cli/batch_csv.py``), ``--html`` (``cli/batch_html.py``) and,
with ``--labels``, sensitivity, specificity and AUC (``cli/batch_labels.py``).

Nothing here is quarantined: the box received nothing. A path is *not found*,
*not readable* (the operating system's reason), or *could not be read as an
image* (the decoder's reason); ``cli/infer_wording.py`` says so. In ``--json``, the
box's reasons (``reason`` of a file not decodable or not analysed, ``assessment_reason``,
``warnings``) are codes with their parameters (``contracts/reasons.py``); an operating
system's reason (not found, not readable) is its own text.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from clinibox_common.contracts.reasons import MAX_TEXT, Reason, ReasonCode, records
from clinibox_common.contracts.statuses import InstanceStatus
from clinibox_common.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from clinibox_common.i18n import gettext
from engine.imaging.decode import DecodedImage
from engine.imaging.sandbox import DecodeSandbox
from engine.imaging.wrap import is_picture, wrap_picture
from engine.inference.assessment import shown_probability
from engine.inference.runner import ModelRunner
from firmware_app.analysis import Route, analyse_object
from firmware_app.cli.batch_labels import evaluate, match_labels, read_labels
from firmware_app.cli.batch_outputs import output_path, write_outputs
from firmware_app.cli.batch_paths import FileToAnalyse, PathProblem, expand_paths, read_head
from firmware_app.cli.batch_studies import FileResult, roll_up_studies
from firmware_app.cli.infer_print import Progress, print_accuracy, print_batch, print_inferred
from firmware_app.settings import box as config_module
from firmware_app.words import wording

_ = gettext


def _decoded_fields(decoded: DecodedImage) -> dict[str, Any]:
    return {"study_key": decoded.study_instance_uid, "series_uid": decoded.series_instance_uid,
            "instance_uid": decoded.sop_instance_uid, "modality": decoded.modality,
            "geometry": decoded.geometry()}


def analyse_file(path: Path, number: int, route: Route, runner: ModelRunner,
                 config: config_module.Config, sandbox: DecodeSandbox, scratch: Path
                 ) -> FileResult:
    """One file through the service's analysis path, as a ``--json`` record."""
    report: dict[str, Any] = {"file": str(path)}
    try:
        analysed = path
        if is_picture(read_head(path)):  # a PNG/JPEG export, wrapped as the USB import does
            analysed = scratch / f"{number}.dcm"
            analysed.write_bytes(wrap_picture(path.read_bytes()))
        outcome = analyse_object(analysed, route, config, sandbox)
    except FileNotFoundError:
        return FileResult({**report, "status": "not_found", "reason": ""})
    except OSError as exc:
        return FileResult({**report, "status": "not_readable", "reason": exc.strerror or str(exc)})
    except ValueError as exc:  # a picture that is not a readable PNG/JPEG
        unreadable = Reason(ReasonCode.PICTURE_UNREADABLE, {"detail": str(exc)[:MAX_TEXT]})
        return FileResult({**report, "status": "not_decodable",
                           "reason": records([unreadable])})
    if outcome.status == InstanceStatus.QUARANTINED:  # what the service would quarantine
        return FileResult({**report, "status": "not_decodable",
                           "reason": records([outcome.reason] if outcome.reason else [])})
    assert outcome.decoded is not None
    report.update(_decoded_fields(outcome.decoded))
    if outcome.status != InstanceStatus.PROCESSED:
        return FileResult({**report, "status": outcome.status,
                           "reason": records([outcome.reason] if outcome.reason else [])},
                          outcome.decoded.display)
    assert outcome.analysis is not None
    analysis, found = outcome.analysis, outcome.analysis.findings
    shown = shown_probability(found.assessment, round(found.probability, 4))
    report.update(
        status=InstanceStatus.PROCESSED,
        probability=shown,
        probability_not_shown=None if shown is not None else round(found.probability, 4),
        assessment=found.assessment,
        assessment_reason=records(found.assessment_reason),
        finding=found.finding,
        alert=found.alert,
        lesions=[lesion.to_dict() for lesion in found.lesions],
        class_probabilities={k: round(float(v), 4) for k, v in found.classes.items()},
        findings=[{"label": b.label, "score": round(b.score, 4),
                   "box": [round(v, 1) for v in (b.x0, b.y0, b.x1, b.y1)]}
                  for b in found.boxes],
        warnings=records(analysis.warnings),
        key_frame=found.key_frame,
        frames_inferred=analysis.frames_inferred,
        model_id=runner.package.model_id,
        backend=runner.backend_label,
        timings_ms={k: round(v, 2) for k, v in outcome.timings.items()},
    )
    return FileResult(report, outcome.decoded.display)


def _problem_result(problem: PathProblem) -> FileResult:
    report: dict[str, Any] = {"file": problem.path, "status": problem.kind,
                              "reason": problem.reason}
    if problem.skipped:
        report["skipped"] = problem.skipped
    return FileResult(report)


def analyse_all(entries: list[FileToAnalyse | PathProblem], config: config_module.Config,
                runner: ModelRunner, progress: Progress) -> list[FileResult]:
    """Every entry of the expansion, in order: files analysed, problems reported."""
    from firmware_app.models.routing import Router

    router = Router(config.routing.rules, {runner.package.name: runner.package},
                    runner.package.name)

    def route(image: DecodedImage) -> ModelRunner | Reason:
        """The box's own model; a rule naming another is not analysed here."""
        chosen = router.route(image)
        if chosen.model:
            return runner
        assert chosen.reason is not None
        return chosen.reason

    results: list[FileResult] = []
    sandbox = DecodeSandbox(config.limits)
    try:
        with tempfile.TemporaryDirectory(prefix="clinibox-infer-") as scratch:
            number = 0
            for entry in entries:
                if isinstance(entry, PathProblem):
                    results.append(_problem_result(entry))
                    continue
                number += 1
                progress.step(number, entry.path)
                results.append(analyse_file(entry.path, number, route, runner, config,
                                            sandbox, Path(scratch)))
    finally:
        progress.done()
        sandbox.close()
    return results


def exit_status(results: list[FileResult]) -> int:
    """0 when every file was analysed, 2 when none was, else 1."""
    analysed = sum(1 for r in results if r.processed)
    if analysed == len(results) and analysed:
        return EXIT_OK
    return EXIT_USAGE if analysed == 0 else EXIT_FAIL


def run_infer(args: argparse.Namespace) -> int:
    """Analyse files, folders and DICOMDIRs now; write the summaries asked for."""
    from firmware_app.service.appliance import load_runner

    config = config_module.load(getattr(args, "config", None))
    outputs = {"csv": output_path(args.csv), "html": output_path(args.html),
               "summary_json": output_path(args.summary_json)}
    labels_path = Path(args.labels) if args.labels else None
    labelled = read_labels(labels_path) if labels_path is not None else None
    expansion = expand_paths(args.files)
    runner = load_runner(config)
    progress = Progress(len(expansion.files), sys.stderr, not args.no_progress)
    results = analyse_all(expansion.entries, config, runner, progress)
    studies = roll_up_studies(results)
    truth: dict[str, int] = {}
    evaluation = None
    if labelled is not None and labels_path is not None:
        truth, unmatched = match_labels(labelled, studies, labels_path)
        evaluation = evaluate(studies, truth, unmatched,
                              float(runner.thresholds.get("finding", 0.5)))
    if args.json:
        json.dump([r.report for r in results], sys.stdout, indent=2)
        print()
    else:
        print(_("model %(model)s on %(backend)s", model=runner.package.model_id,
                backend=runner.backend_label))
        print(_("intended use: %(use)s", use=wording.intended_use(
            runner.package.manifest.get("intended_use", "")) or "-"))
        for result in results:
            print_inferred(result.report)
        if len(results) > 1:
            print_batch(results, studies, len(expansion.skipped))
        if evaluation is not None:
            print_accuracy(evaluation)
    written = write_outputs(outputs, runner, results, studies, expansion.skipped, truth,
                            evaluation)
    for path in written:
        print(_("written: %(path)s", path=str(path)), file=sys.stderr if args.json else sys.stdout)
    return exit_status(results)
