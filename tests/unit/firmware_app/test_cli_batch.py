"""``clinibox infer PATH…`` in batch: folders, DICOMDIRs, progress, CSV, HTML and labels.

A path that does not exist, cannot be read or holds nothing to analyse says so;
nothing is called quarantined (the box received nothing).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from clinibox.table import main
from clinibox_common.errors import CliniboxError
from firmware_app.cli import batch_paths
from firmware_app.cli.batch_labels import evaluate, match_labels, read_labels
from firmware_app.cli.batch_paths import (
    BAD_DICOMDIR,
    NO_FILES,
    NOT_FOUND,
    NOT_READABLE,
    PathProblem,
    expand_paths,
    natural_key,
)
from firmware_app.cli.batch_stats import diagnostic_accuracy
from firmware_app.cli.batch_studies import FileResult, roll_up_studies
from firmware_app.cli.svg_charts import bar_chart, histogram_bins, wrap_label
from phantoms.dicom import ct_dataset, default_identity, write_dicom, write_image
from phantoms.images import generate

HOSTILE_NAME = "<script>alert('name')</script>^EVIL"
HOSTILE_FILE = "<img src=x onerror=alert(1)>.dcm"


def _ct(path: Path, seed: int, lesion: bool | None, **identity: str) -> Path:
    ids = default_identity(SOPInstanceUID=generate_uid(), **identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_dicom(ct_dataset(generate("ct", np.random.default_rng(seed), lesion=lesion),
                                  identity=ids), path)


def _config(tmp_path: Path) -> str:
    config = tmp_path / "box.toml"
    config.write_text('[runtime]\nbackend = "onnxruntime"\nprecision = "fp32"\n'
                      f'[storage]\nstate_dir = "{(tmp_path / "state").as_posix()}"\n')
    return str(config)


def _clear_cts(count: int, seed: int) -> list:
    """``count`` CT phantom data sets without a lesion, each with its own SOP Instance UID."""
    rng = np.random.default_rng(seed)
    return [ct_dataset(generate("ct", rng, lesion=False),
                       identity=default_identity(SOPInstanceUID=generate_uid()))
            for _ in range(count)]


def _media(folder: Path, *datasets) -> Path:
    """A DICOM medium written by pydicom's FileSet: DICOMDIR and its referenced files."""
    fileset = FileSet()
    for ds in datasets:
        fileset.add(ds)
    fileset.write(folder)
    return folder / "DICOMDIR"


# -- path expansion --------------------------------------------------------------------------


def test_a_folder_is_walked_in_a_stable_order_by_content(tmp_path):
    for name in ("IM10", "IM2", "sub/IM1"):
        _ct(tmp_path / "tree" / name, 1, False)
    write_image(generate("us", np.random.default_rng(1)), tmp_path / "tree" / "a.png")
    (tmp_path / "tree" / "notes.txt").write_text("not an image")
    (tmp_path / "tree" / ".hidden.dcm").write_bytes(b"\0" * 128 + b"DICM")
    os.mkfifo(tmp_path / "tree" / "pipe")  # skipped, never opened (it would block)
    (tmp_path / "tree" / "gone").symlink_to(tmp_path / "nowhere")
    (tmp_path / "tree" / ".git").mkdir()
    (tmp_path / "tree" / ".git" / "x.dcm").write_bytes(b"\0" * 128 + b"DICM")

    expansion = expand_paths([str(tmp_path / "tree")])
    names = [p.relative_to(tmp_path / "tree").as_posix() for p in expansion.files]
    assert names == ["a.png", "IM2", "IM10", "sub/IM1"]
    assert [Path(p).name for p in expansion.skipped] == ["notes.txt", "pipe"]
    assert [(Path(p.path).name, p.kind) for p in expansion.problems] == [("gone", NOT_FOUND)]
    # the same file twice (by another name) is analysed once
    again = expand_paths([str(tmp_path / "tree" / "IM2"), str(tmp_path / "tree")])
    assert len(again.files) == 4
    assert natural_key("IM2") < natural_key("IM10")


def test_missing_empty_and_unreadable_paths_say_so(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("x")
    locked = _ct(tmp_path / "locked.dcm", 1, False)
    real_read_head = batch_paths.read_head

    def refuse(path, size=132):  # as for a file without read permission (tests run as root)
        if Path(path).name == "locked.dcm":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_head(path, size)

    monkeypatch.setattr(batch_paths, "read_head", refuse)
    expansion = expand_paths([str(tmp_path / "nope.dcm"), str(tmp_path / "empty"),
                              str(tmp_path / "junk"), str(locked)])
    assert expansion.files == []
    assert expansion.problems == [
        PathProblem(str(tmp_path / "nope.dcm"), NOT_FOUND),
        PathProblem(str(tmp_path / "empty"), NO_FILES),
        PathProblem(str(tmp_path / "junk"), NO_FILES, skipped=1),
        PathProblem(str(locked), NOT_READABLE, "Permission denied"),
    ]


def test_a_dicomdir_lists_its_images_first_and_is_not_analysed_itself(tmp_path):
    dicomdir = _media(tmp_path / "media", *_clear_cts(2, seed=4))
    _ct(tmp_path / "media" / "extra.dcm", 2, False)  # not listed: the walk still finds it

    listed = expand_paths([str(dicomdir)]).files
    assert len(listed) == 2 and all(p.name.startswith("IM") for p in listed)
    walked = expand_paths([str(tmp_path / "media")]).files
    assert walked[:2] == listed and [p.name for p in walked[2:]] == ["extra.dcm"]
    assert all(p.name != "DICOMDIR" for p in walked)


def test_a_dicomdir_on_lower_case_media_and_a_broken_one(tmp_path):
    ds = ct_dataset(generate("ct", np.random.default_rng(5), lesion=False),
                    identity=default_identity(SOPInstanceUID=generate_uid()))
    dicomdir = _media(tmp_path / "cd", ds)
    for path in sorted((tmp_path / "cd").rglob("*"), key=lambda p: -len(p.parts)):
        if path.name != "DICOMDIR":
            path.rename(path.with_name(path.name.lower()))  # as Linux mounts an ISO 9660 CD
    assert [p.name for p in expand_paths([str(dicomdir)]).files] == ["im000000"]

    broken = tmp_path / "bad" / "DICOMDIR"
    broken.parent.mkdir()
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    assert expand_paths([str(broken)]).problems[0].kind == BAD_DICOMDIR


# -- studies, labels, charts (no model) ------------------------------------------------------


def _report(file: str, study: str, assessment: str, probability: float, lesions=()) -> FileResult:
    shown = probability if assessment in ("finding", "no_finding") else None
    return FileResult({"file": file, "status": "processed", "study_key": study,
                       "assessment": assessment, "assessment_reason": f"why {file}",
                       "probability": shown,
                       "probability_not_shown": None if shown is not None else probability,
                       "alert": False, "finding": assessment == "finding",
                       "lesions": list(lesions)})


def test_a_study_rolls_up_in_clinical_order():
    lesion = {"units": "mm", "long_axis_mm": 12.5, "label": "lesion"}
    studies = roll_up_studies([
        _report("a1", "A", "no_finding", 0.1), _report("a2", "A", "finding", 0.8, [lesion]),
        _report("a3", "A", "outside_validated_range", 0.99),
        _report("b1", "B", "no_finding", 0.2), _report("b2", "B", "not_assessable", 0.6),
        _report("c1", "C", "no_finding", 0.3),
        FileResult({"file": "d1", "status": "not_analysed", "study_key": "D", "reason": "r"}),
        FileResult({"file": "x", "status": "not_found", "reason": ""}),
    ])
    by_key = {s.key: s for s in studies}
    assert list(by_key) == ["A", "B", "C", "D"]
    a, b, c, d = by_key["A"], by_key["B"], by_key["C"], by_key["D"]
    assert (a.assessment, a.probability, a.lesions, a.largest_long_axis_mm) == (
        "finding", 0.8, 1, 12.5)  # the outside-range image's 0.99 is never the study's
    assert (b.assessment, b.probability, b.probability_not_shown) == ("not_assessable", None,
                                                                        0.6)
    assert b.assessment_reason == "why b2"
    assert (c.assessment, c.probability) == ("no_finding", 0.3)
    assert (d.assessment, d.images) == ("not_analysed", 0)


def test_labels_name_studies_or_files_and_unjudged_studies_are_apart(tmp_path):
    studies = roll_up_studies([
        _report(str(tmp_path / "a.dcm"), "A", "finding", 0.9),
        _report(str(tmp_path / "b.dcm"), "B", "no_finding", 0.2),
        _report(str(tmp_path / "c.dcm"), "C", "not_assessable", 0.7),
        _report(str(tmp_path / "d.dcm"), "D", "no_finding", 0.4),
    ])
    labels = tmp_path / "labels.csv"
    labels.write_text("Study,Label,comment\nA,1,x\nb.dcm,0,\n\nC,1,\nE,0,\n")
    truth, unmatched = match_labels(read_labels(labels), studies, labels)
    assert truth == {"A": 1, "B": 0, "C": 1} and unmatched == ["E"]
    evaluation = evaluate(studies, truth, unmatched, 0.5)
    assert (evaluation.accuracy.true_positives, evaluation.accuracy.true_negatives) == (1, 1)
    assert evaluation.not_judged == [("C", 1, "not_assessable")]  # not a negative, not a miss
    assert evaluation.unlabelled == ["D"]
    assert evaluation.to_dict()["auc"]["value"] == 1.0

    labels.write_text("study,label\nA,1\na.dcm,0\n")
    with pytest.raises(CliniboxError, match="another label"):
        match_labels(read_labels(labels), studies, labels)
    for text in ("file,truth\nA,1\n", "study,label\nA,yes\n", ""):
        labels.write_text(text)
        with pytest.raises(CliniboxError) as raised:
            read_labels(labels)
        assert raised.value.exit_status == 2


def test_charts_are_svg_with_escaped_text():
    # round bins of 5 mm from 0; a value on an edge counts in the bin above it
    assert histogram_bins([0.0, 4.9, 5.0, 23.0]) == [(0, 5, 2), (5, 10, 1), (10, 15, 0),
                                                     (15, 20, 0), (20, 25, 1)]
    assert histogram_bins([0.4, 1.3])[2:4] == [(0.4, 0.6, 1), (0.6, 0.8, 0)]  # round edges
    svg = bar_chart("<b>", [("a&b", 3), ("outside the validated range", 1)], "x<", "y>")
    assert svg.startswith("<svg") and "<b>" not in svg and "&lt;b&gt;" in svg
    assert "a&amp;b" in svg and "x&lt;" in svg and "y&gt;" in svg
    assert wrap_label("outside the validated range", 80) == ["outside the", "validated", "range"]


# -- the command -----------------------------------------------------------------------------


@dataclass
class Run:
    """One ``clinibox infer`` run: its status and what it printed."""

    code: int
    out: str
    err: str


def _run(argv: list[str]) -> Run:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A tree of phantoms analysed once as JSON and once for a person: a CT study of two
    images with a lesion, a clear CT with a hostile patient and file name, a blank CT, a
    PNG, junk, a broken file, a DICOMDIR medium, and a path that does not exist."""
    root = tmp_path_factory.mktemp("batch")
    cases = root / "cases"
    study = generate_uid()
    for seed in range(40):  # a lesion the demo model finds (a phantom model, phantoms)
        _ct(cases / "lesion" / "IM1", seed, True, StudyInstanceUID=study)
        probe = _run(["infer", "--config", _config(root), "--json", "--no-progress",
                      str(cases / "lesion" / "IM1")])
        if json.loads(probe.out)[0].get("assessment") == "finding":
            break
    _ct(cases / "lesion" / "IM2", 100, False, StudyInstanceUID=study)
    _ct(cases / HOSTILE_FILE, 101, False, PatientName=HOSTILE_NAME)
    blank = ct_dataset(np.full((256, 256), 0.5, np.float32),
                       identity=default_identity(SOPInstanceUID=generate_uid()))
    write_dicom(blank, cases / "blank.dcm")
    write_image(generate("us", np.random.default_rng(7), lesion=True), cases / "us.png")
    (cases / "Thumbs.db").write_bytes(b"junk")
    (cases / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    _media(root / "media", ct_dataset(generate("ct", np.random.default_rng(8), lesion=False),
                                      identity=default_identity(SOPInstanceUID=generate_uid())))
    labels = root / "labels.csv"
    labels.write_text(f"study,label\n{study},1\ncases/{HOSTILE_FILE},0\ncases/blank.dcm,0\n"
                      "cases/us.png,1\nmedia/PT000000/ST000000/SE000000/IM000000,0\n")
    out = root / "out"
    out.mkdir()
    paths = [str(cases), str(root / "media"), str(root / "missing.dcm"), "--labels", str(labels)]
    as_json = _run(["infer", "--config", _config(root), "--json", *paths,
                    "--csv", str(out / "batch.csv"), "--html", str(out / "batch.html"),
                    "--summary-json", str(out / "batch.json")])
    for_person = _run(["infer", "--config", _config(root), "--no-progress", *paths])
    return root, as_json, for_person


@pytest.mark.slow
def test_batch_json_progress_and_exit_status(batch):
    root, run, _person = batch
    reports = json.loads(run.out)  # progress went to stderr: stdout is JSON alone
    assert run.code == 1  # some paths gave no result, the rest were analysed
    assert [Path(r["file"]).name for r in reports] == [
        HOSTILE_FILE, "blank.dcm", "broken.dcm", "us.png", "IM1", "IM2", "IM000000",
        "missing.dcm"]  # Thumbs.db skipped, the DICOMDIR read, not analysed
    assert "analysing 1 of 7: " in run.err and "analysing 7 of 7: " in run.err
    by_name = {Path(r["file"]).name: r for r in reports}
    assert by_name["broken.dcm"]["status"] == "not_decodable"
    assert by_name["missing.dcm"] == {"file": str(root / "missing.dcm"), "status": "not_found",
                                      "reason": ""}
    blank = by_name["blank.dcm"]
    assert blank["assessment"] == "not_assessable" and blank["probability"] is None
    assert blank["probability_not_shown"] is not None
    assert by_name["IM1"]["study_key"] == by_name["IM2"]["study_key"]
    assert "quarantin" not in (run.out + run.err).lower()


@pytest.mark.slow
def test_batch_csv_has_study_lesion_and_problem_rows(batch):
    root = batch[0]
    with open(root / "out" / "batch.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    kinds = [r["row_type"] for r in rows]
    assert kinds.count("study") == 5  # lesion study, hostile, blank, png, medium
    assert kinds.count("problem") == 2  # broken.dcm, missing.dcm
    studies = {r["study_key"]: r for r in rows if r["row_type"] == "study"}
    lesion_rows = [r for r in rows if r["row_type"] == "lesion"]
    assert lesion_rows and all(r["lesion_label"] and r["units"] in ("mm", "px")
                               for r in lesion_rows)
    ct_lesions = [r for r in lesion_rows if r["modality"] == "CT"]
    assert ct_lesions and all(float(r["long_axis_mm"]) > 0 for r in ct_lesions)
    im1 = next(r for r in ct_lesions if Path(r["file"]).name == "IM1")
    assert im1["series_uid"] and im1["instance_uid"] and float(im1["probability"]) > 0
    lesion_study = studies[im1["study_key"]]
    assert (lesion_study["assessment"], lesion_study["images"], lesion_study["truth"]) == (
        "finding", "2", "1")
    blank = next(r for r in studies.values() if r["assessment"] == "not_assessable")
    assert blank["probability"] == "" and float(blank["probability_not_shown"]) >= 0
    assert "blank" in blank["assessment_reason"]
    problems = {Path(r["file"]).name: r for r in rows if r["row_type"] == "problem"}
    assert problems["missing.dcm"]["status"] == "not_found"
    assert problems["broken.dcm"]["status"] == "not_decodable" and problems["broken.dcm"]["reason"]


@pytest.mark.slow
def test_batch_html_draws_charts_escapes_and_warns_of_the_demo(batch):
    html = (batch[0] / "out" / "batch.html").read_text(encoding="utf-8")
    assert html.count("<svg") == 3
    for title in ("Lesions per study", "Lesion sizes (long axis)", "Studies by assessment"):
        assert f"<h3>{title}</h3>" in html
    assert "procedurally generated phantoms" in html and "Not for clinical use" in html
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt; EVIL" in html
    assert "&lt;img src=x onerror=alert(1)&gt;.dcm" in html
    assert "Sensitivity" in html and "AUC" in html and "Wilson" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


@pytest.mark.slow
def test_batch_labels_give_accuracy_consistent_with_the_studies(batch):
    summary = json.loads((batch[0] / "out" / "batch.json").read_text())
    accuracy, truth = summary["accuracy"], summary["labels"]
    scored = [s for s in summary["studies"]
              if s["study_key"] in truth and s["assessment"] in ("finding", "no_finding")]
    expected = diagnostic_accuracy([truth[s["study_key"]] for s in scored],
                                   [s["assessment"] == "finding" for s in scored],
                                   [s["probability"] for s in scored])
    assert accuracy["sensitivity"]["value"] == expected.sensitivity.value
    assert accuracy["specificity"]["low"] == expected.specificity.low
    assert accuracy["auc"]["value"] == expected.auc.value
    assert len(truth) == 5 and accuracy["unmatched_labels"] == []
    # the blank CT is labelled 0 but not assessable: listed apart, not a true negative
    assert "not_assessable" in [n["assessment"] for n in accuracy["not_judged"]]
    assert sum(accuracy["counts"].values()) == len(scored) == 5 - len(accuracy["not_judged"])


@pytest.mark.slow
def test_batch_prints_for_a_person(batch):
    root, _json, run = batch
    assert run.code == 1
    assert "analysing" not in run.err
    assert f"not found: {root / 'missing.dcm'}" in run.out
    assert "broken.dcm: could not be read as an image: " in run.out
    assert "images analysed: 6; studies: 5" in run.out
    assert "sensitivity " in run.out and "95 % interval" in run.out and "AUC " in run.out
    assert "Labelled studies the model gave no result for (not counted): " in run.out
    assert "quarantin" not in run.out.lower()


@pytest.mark.slow
def test_nothing_to_analyse_exits_2_and_says_why(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["infer", "--config", _config(tmp_path), str(tmp_path / "nope.dcm"),
                 str(tmp_path / "empty")])
    out = capsys.readouterr().out
    assert code == 2
    assert f"not found: {tmp_path / 'nope.dcm'}" in out
    assert f"{tmp_path / 'empty'}: no DICOM or picture file in the folder" in out
    assert "Is a directory" not in out and "QUARANTINED" not in out


def test_a_bad_labels_file_or_output_folder_stops_before_analysis(tmp_path, capsys):
    _ct(tmp_path / "a.dcm", 1, False)
    labels = tmp_path / "labels.csv"
    labels.write_text("case,truth\n")
    assert main(["infer", "--config", _config(tmp_path), str(tmp_path / "a.dcm"),
                 "--labels", str(labels)]) == 2
    assert "the first row must name the columns 'study' and 'label'" in capsys.readouterr().err
    assert main(["infer", "--config", _config(tmp_path), str(tmp_path / "a.dcm"),
                 "--csv", str(tmp_path / "no" / "such" / "x.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_progress_rewrites_one_line_on_a_terminal():
    from firmware_app.cli.infer_print import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        progress = Progress(2, stream)
        progress.step(1, Path("a.dcm"))
        progress.step(2, Path("b.dcm"))
        progress.done()
    assert terminal.getvalue() == ("\r\033[Kanalysing 1 of 2: a.dcm\r\033[Kanalysing 2 of 2: b.dcm"
                                   "\r\033[K")
    assert log.getvalue() == "analysing 1 of 2: a.dcm\nanalysing 2 of 2: b.dcm\n"
    quiet = io.StringIO()
    Progress(2, quiet, enabled=False).step(1, Path("a.dcm"))
    assert quiet.getvalue() == ""


def test_a_damaged_dicomdir_record_is_said_and_the_others_are_read(tmp_path):
    """A NUL in one record's file ID once ended `clinibox infer` in a traceback."""
    dicomdir = _media(tmp_path / "media", *_clear_cts(2, seed=8))
    ds = dcmread(dicomdir)
    damaged = next(r for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r)
    damaged.ReferencedFileID = ["IM\x00G1"]
    ds.save_as(dicomdir)
    expansion = expand_paths([str(dicomdir)])
    assert len(expansion.files) == 1
    assert [p.kind for p in expansion.problems] == [BAD_DICOMDIR]
