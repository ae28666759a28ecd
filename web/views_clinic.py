"""What clinic staff use: the worklist, a study with its images and findings, feedback, reports.

Images are rendered on the box as PNG from the display previews the worker
stored for each analysed frame (window/level in the modality's units, one
frame at a time); the boxes are an SVG layer and the heatmap a transparent
PNG layer, both toggled in the page.

The worklist (it names patients), each study page, image, report and verdict
is an audit row with the account and its address (``web/audit_trail.py``); the
worklist's refreshes within five minutes, a page reloaded within a minute, or an
instance's images loaded again within ten, add none.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import sqlite3
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from clinibox_common import i18n
from clinibox_common.i18n import formats, ngettext
from clinibox_common.i18n.fonts import PACKAGE_HINT, find_cjk_font
from engine.inference.assessment import is_judged
from firmware_app.storage import audit, case_labels, db, growth, hospital_reviews, model_offers
from firmware_app.storage import studies as queries
from firmware_app.storage.status import study_images_waiting
from firmware_app.words import growth_words, labels, wording
from firmware_app.words.review_words import ReviewWords, review_words, words_of
from web import audit_trail, on_image, render, series_stack
from web.report_content import ReportContent, make_pdf
from web.security import current_account, database

log = logging.getLogger(__name__)
blueprint = Blueprint("clinic", __name__)

#: Longest side of a rendered image, and of the report's key image.
IMAGE_SIDE = 2048
KEY_IMAGE_SIDE = 1024
VERDICTS = tuple(labels.VERDICTS)
#: Window presets offered for CT (name, centre, width in Hounsfield units).
CT_PRESETS = labels.CT_PRESETS
#: images waiting for a model listed at the top of every study's first page, at most
WAITING_SHOWN = 10


def _viewer():
    return current_app.config["CLINIBOX"]


def _worklist_args() -> dict[str, Any]:
    status = request.args.get("status", "all")
    if status not in queries.WORKLIST_FILTERS:
        abort(400)
    day_text = request.args.get("day", "")
    try:
        day = dt.date.fromisoformat(day_text) if day_text else None
        page = int(request.args.get("page", "1"))
    except ValueError:
        abort(400)
    return {"status": status, "day": day, "page": max(1, min(page, 100_000))}


def _worklist_page(args: dict[str, Any]) -> queries.WorklistPage:
    """The worklist page asked for; reading it is audited (it names patients)."""
    filters = [f"{name} {args[name]}" for name in ("status", "day") if args[name]]
    audit_trail.note("worklist_view", "worklist",
                     ", ".join([*filters, f"page {args['page']}"]),
                     coalesce_seconds=audit_trail.WORKLIST_VIEW_COALESCE)
    return queries.worklist(database(), page_size=_viewer().config.web.page_size, **args)


@blueprint.route("/")
def worklist():
    """Studies sorted by suspicion (alerts first), filtered by day and status."""
    args = _worklist_args()
    page = _worklist_page(args)
    return render_template("worklist.html", **_rows(args, page),
                           filters=queries.WORKLIST_FILTERS,
                           to_confirm=len(case_labels.hospital_disagrees(database())),
                           refresh=_viewer().config.web.refresh_seconds)


@blueprint.route("/worklist/rows")
def worklist_rows():
    """The worklist's rows alone, fetched by the page every few seconds to stay current."""
    args = _worklist_args()
    return render_template("worklist_rows.html", **_rows(args, _worklist_page(args)))


def _rows(args: dict[str, Any], page: queries.WorklistPage) -> dict[str, Any]:
    """What the worklist's rows show: the page, the hospital's verdicts and, while the box
    waits for a model, the images it holds (``waiting_rows``, the first
    :data:`WAITING_SHOWN`, on the first page of every study; ``waiting_more``: how many more),
    so the table lists what the badge "N waiting for a model" counts."""
    conn = database()
    model_waiting = model_offers.waiting(conn)
    waiting = None
    if model_waiting is not None and page.waiting and args["status"] == "all" \
            and args["page"] == 1:
        waiting = queries.worklist(conn, status="waiting", day=args["day"],
                                   page_size=WAITING_SHOWN)
    return {"page": page, "args": args, "reviews": _reviews(page),
            "model_waiting": model_waiting,
            "waiting_rows": waiting.rows if waiting else [],
            "waiting_more": waiting.total - len(waiting.rows) if waiting else 0}


def _reviews(page: queries.WorklistPage) -> dict[int, ReviewWords]:
    """The hospital's current verdict of each study row of the page in words (one query)."""
    found = hospital_reviews.latest_by_study_id(
        database(), (row["id"] for row in page.rows if row["kind"] == "study"))
    return {study_id: words_of(review) for study_id, review in found.items()}


@blueprint.route("/api/worklist")
def worklist_json():
    """The worklist page as JSON (same filters as the page)."""
    page = _worklist_page(_worklist_args())
    wait = model_offers.waiting(database())
    return jsonify(rows=page.rows, total=page.total, page=page.page, pages=page.pages,
                   waiting=page.waiting, quarantined=page.quarantined, alerts=page.alerts,
                   not_analysed=page.not_analysed,
                   waiting_for_model=None if wait is None else wait.reason)


def _window_args() -> render.Window | None:
    """The window asked for in the query (centre, width), or None for the image's own."""
    centre, width = request.args.get("centre"), request.args.get("width")
    if not centre or not width:
        return None
    try:
        window = render.Window(float(centre), float(width))
    except ValueError:
        abort(400)
    if not (math.isfinite(window.centre) and math.isfinite(window.width)
            and 0 < window.width <= 1e7 and abs(window.centre) <= 1e7):
        abort(400)
    return window


def _frame(path: str, frame: int) -> render.FramePreview:
    config = _viewer().config
    try:
        return render.load_frame(Path(path), frame, config.limits,
                                 config.worker.max_frames_per_instance)
    except (render.DecodeError, FileNotFoundError, render.FrameNotPreviewed):
        abort(404)


def _int_arg(name: str, default: int) -> int:
    try:
        return int(request.args.get(name, default))
    except ValueError:
        abort(400)


@blueprint.route("/study/<int:study_id>")
def study(study_id: int):
    """One study: the chosen image with overlays, window/level, frames, findings and feedback.

    When retention has deleted the image, a plain note takes its place and the
    findings, warnings and feedback stay.
    """
    conn = database()
    found = queries.study(conn, study_id)
    if found is None or not found["instances"]:
        abort(404)
    account = current_account()
    assert account is not None
    queries.attach_feedback(conn, found["instances"], account.id)
    chosen = _int_arg("instance", found["instances"][0].id)
    instance = next((i for i in found["instances"] if i.id == chosen), None)
    if instance is None:
        abort(404)
    audit_trail.note("study_view", f"study:{study_id}", f"instance {instance.id}",
                     coalesce_seconds=audit_trail.STUDY_VIEW_COALESCE)
    level, headline = _study_verdict(found)
    image_level, image_headline = wording.verdict(
        instance.alert, instance.finding, instance.assessment, instance.assessment_reason)
    shared = {
        "study": found, "instance": instance, "level": level, "headline": headline,
        "image_level": image_level, "image_headline": image_headline,
        "verdicts": VERDICTS, "warnings": [wording.warning_text(w) for w in instance.warnings],
        "summary": wording.study_summary(found["summary"]),
        "class_caution": wording.class_caution(
            _viewer().package_facts().get("intended_use", "")),
        "other_frames": wording.other_frame_lines(instance.boxes, instance.lesions),
        "lesion_rows": on_image.lesion_rows(instance.lesions),
        "volume_rows": on_image.volume_rows(found["volumes"]),
        "series_notes": wording.series_reading_lines(found["volumes"]),
        "previous": on_image.previous_study(conn, study_id),
        "earlier": on_image.earlier_comparison(conn, study_id, found["study_key"]),
        "hospital_review": review_words(hospital_reviews.latest(conn, found["study_key"])),
        "waiting_for_model": _waiting_for_model(conn, found["study_key"]),
        "stack": series_stack.stack_for(found, instance)}
    gone = _image_gone(instance)
    if gone:
        return render_template(
            "study.html", image=None, image_gone=gone, on_key_frame=False,
            findings=wording.finding_lines(instance.boxes, instance.image_rows,
                                           instance.image_columns, instance.lesions), **shared)
    frame_number = _int_arg("frame", instance.key_frame)
    image = _frame(instance.spool_path, frame_number)
    window = _window_args() or image.default_window
    previewed = image.previewed or (image.frame,)
    place = previewed.index(image.frame)
    return render_template(
        "study.html", image=image, image_gone="", window=window,
        spacing=on_image.spacing_attributes(image.pixel_spacing),
        previous_frame=previewed[place - 1] if place > 0 else None,
        next_frame=previewed[place + 1] if place + 1 < len(previewed) else None,
        presets=labels.presets() if image.modality == "CT" else (),
        on_key_frame=image.frame == instance.key_frame,
        findings=wording.finding_lines(instance.boxes, image.rows, image.columns,
                                       instance.lesions), **shared)


def _waiting_for_model(conn: sqlite3.Connection, study_key: str) -> int:
    """How many images of the study wait for a model (0 while the box runs one)."""
    if model_offers.waiting(conn) is None:
        return 0
    return study_images_waiting(conn, study_key)


def _image_gone(instance: queries.InstanceView) -> str:
    """The note shown instead of an image retention deleted ("" while it is on the box)."""
    if instance.image_deleted_at is None:
        return ""
    return wording.image_deleted(instance.received_at, instance.image_deleted_at)


def _result_with_image(instance_id: int, what: str) -> dict[str, Any]:
    """The instance's result for an image route: 404 if none, 410 if retention deleted it;
    the view (``what``: frame N, heatmap, key image) goes into the audit trail."""
    result = queries.instance_result(database(), instance_id)
    if result is None:
        abort(404)
    if result["image_deleted_at"] is not None:
        abort(410, description=wording.image_deleted(result["received_at"],
                                                     result["image_deleted_at"]))
    audit_trail.note("image_view", f"instance:{instance_id}", what,
                     coalesce_seconds=audit_trail.IMAGE_VIEW_COALESCE)
    return result


@blueprint.route("/instance/<int:instance_id>/frame/<int:frame>.png")
def frame_png(instance_id: int, frame: int):
    """One frame rendered as PNG with the requested (or the image's own) window."""
    result = _result_with_image(instance_id, f"frame {frame}")
    image = _frame(result["spool_path"], frame)
    return Response(render.render_png(image, _window_args(), max_side=IMAGE_SIDE),
                    mimetype="image/png")


@blueprint.route("/instance/<int:instance_id>/heatmap.png")
def heatmap_png(instance_id: int):
    """The model's heatmap as a transparent layer over the key frame."""
    result = _result_with_image(instance_id, "heatmap")
    if result["heatmap"] is None:
        abort(404)
    image = _frame(result["spool_path"], result["key_frame"])
    width, height = render.display_size(image, IMAGE_SIDE)
    return Response(render.heatmap_png(result["heatmap"], width, height), mimetype="image/png")


@blueprint.route("/instance/<int:instance_id>/key.png")
def key_png(instance_id: int):
    """The key frame with boxes and heatmap drawn in, for the report."""
    return Response(_key_image(instance_id), mimetype="image/png")


def _key_image(instance_id: int) -> bytes:
    """The key image of a processed instance (404 otherwise, 410 once deleted), for reports."""
    result = _result_with_image(instance_id, "key image")
    image = _frame(result["spool_path"], result["key_frame"])
    boxes = result["boxes"]
    if i18n.current() != i18n.ENGLISH:  # the drawing's font is Latin: no class names, each
        boxes = [{**box, "label": ""} for box in boxes]  # area "1: 87%" as on the page
    return render.key_image_png(image, None, boxes, result["heatmap"],
                                max_side=KEY_IMAGE_SIDE)


@blueprint.route("/instance/<int:instance_id>/feedback", methods=["POST"])
def feedback(instance_id: int):
    """Record this clinician's verdict on one finding (-1: the image as a whole);
    technicians may not (403), nor anyone on an image the model gave no result for (409:
    there is nothing to agree with)."""
    account = current_account()
    if account is None or not account.is_clinician:
        abort(403)
    conn = database()
    result = queries.instance_result(conn, instance_id)
    verdict = request.form.get("verdict", "")
    try:
        finding = int(request.form.get("finding", ""))
    except ValueError:
        abort(400)
    if result is None:
        abort(404)
    if not is_judged(result["assessment"]):
        abort(409)
    if verdict not in VERDICTS or not -1 <= finding < len(result["boxes"]):
        abort(400)
    with db.transaction(conn):
        queries.record_feedback(conn, instance_id, finding, verdict, account.id)
        audit.record(conn, "feedback", account=account.name,
                     address=audit_trail.client_address(), target=f"instance:{instance_id}",
                     detail=f"finding {finding}: {verdict}")
    study_id = queries.study_of_instance(conn, instance_id)
    if request.accept_mimetypes.best == "application/json":
        return jsonify(instance=instance_id, finding=finding, verdict=verdict)
    target = url_for("clinic.study", study_id=study_id, instance=instance_id) \
        if study_id is not None else url_for("clinic.worklist")
    return redirect(f"{target}#feedback")


def _study_verdict(found: dict[str, Any]) -> tuple[str, str]:
    """The study's level and headline: its most urgent image's (alert, finding, a doctor must
    read, no finding), the same on the study page, the report and the PDF."""
    unjudged = next((i for i in found["instances"] if not i.judged), None)
    return wording.verdict(
        found["alert"], bool(found["findings"]), unjudged.assessment if unjudged else "",
        unjudged.assessment_reason if unjudged else "")


def _report(study_id: int) -> dict[str, Any]:
    """Everything a report shows, from the study's most suspicious instance, with the
    hospital's verdict in the study page's words."""
    conn = database()
    found = queries.study(conn, study_id)
    if found is None or not found["instances"]:
        abort(404)
    top = found["instances"][0]
    gone = _image_gone(top)
    if gone:
        rows, columns = top.image_rows, top.image_columns
    else:
        image = _frame(top.spool_path, top.key_frame)
        rows, columns = image.rows, image.columns
    level, headline = _study_verdict(found)
    volumes = found["volumes"]
    facts = _viewer().package_facts()
    notice = wording.assist_notice()
    if facts.get("intended_use"):
        notice = i18n.gettext("%(notice)s Model: %(use)s", notice=notice,
                              use=wording.intended_use(facts["intended_use"]))
    return {
        "study": found, "top": top, "level": level, "headline": headline,
        # a 3-D lesion is said once: its slices' areas are parts of it, not more lesions
        "findings": wording.volume_lines(volumes) + ([] if volumes.in_volume(top.id) else (
            wording.finding_lines(top.boxes, rows, columns, top.lesions)
            + wording.other_frame_lines(top.boxes, top.lesions)))
        + growth_words.growth_lines(growth.study_growth(conn, found["id"])),
        "next_step": wording.next_step(level, found["summary"]["lesions"] > 0),
        "image_probability": "" if found["suspicion"] is None else ngettext(
            "Whole image: %(percent)s, the most suspicious of %(num)d image analysed",
            "Whole image: %(percent)s, the most suspicious of %(num)d images analysed",
            len(found["instances"]), percent=wording.percent(found["suspicion"])),
        "summary": wording.study_summary(found["summary"]),
        "image_gone": gone,
        "hospital_review": review_words(hospital_reviews.latest(conn, found["study_key"])),
        "warnings": sorted({wording.warning_text(w) for i in found["instances"]
                            for w in i.warnings}),
        "notice": notice, "generated": wording.local_time(dt.datetime.now().timestamp()),
    }


@blueprint.route("/study/<int:study_id>/report")
def report(study_id: int):
    """The printable report page (key image with overlays, findings, warnings, model, date)."""
    facts = _report(study_id)
    audit_trail.note("report_view", f"study:{study_id}",
                     coalesce_seconds=audit_trail.REPORT_VIEW_COALESCE)
    return render_template("report.html", **facts)


@blueprint.route("/study/<int:study_id>/report.pdf")
def report_as_pdf(study_id: int):
    """The same report as a PDF made on the box (in English, saying why, when a Chinese one
    is asked for and the box has no Chinese font)."""
    no_font = i18n.current() != i18n.ENGLISH and find_cjk_font() is None
    if no_font:
        log.warning("no Chinese font for the PDF report (%s): it is made in English",
                    PACKAGE_HINT)
    with i18n.use_locale(i18n.ENGLISH) if no_font else contextlib.nullcontext():
        # in English, like the report it heads (so not in the catalog)
        return _pdf_answer(study_id, f"This box has no Chinese font ({PACKAGE_HINT}), so this "
                                     "report is in English." if no_font else "")


def _pdf_answer(study_id: int, font_note: str) -> Response:
    """The PDF report of a study in the current language, recorded in the audit trail (made
    in a child process, ``web.report_content``)."""
    facts = _report(study_id)
    found, top, review = facts["study"], facts["top"], facts["hospital_review"]
    content = ReportContent(
        patient_name=formats.person_name(found["patient_name"]),
        patient_id=found["patient_id"],
        study_date=wording.dicom_date(found["study_date"]),
        study_description=found["study_description"], modality=found["modality"] or "",
        received=wording.local_time(found["received_at"]), verdict=facts["headline"],
        summary=facts["summary"],
        findings=facts["findings"] or [wording.no_marks(facts["top"].judged)],
        next_step=facts["next_step"], image_probability=facts["image_probability"],
        warnings=facts["warnings"],
        model_id=top.model_id, notice=facts["notice"],
        generated=facts["generated"],
        key_image_png=None if facts["image_gone"] else _key_image(top.id),
        image_note=facts["image_gone"], font_note=font_note,
        hospital_verdict=review.headline if review else "",
        hospital_when=review.when if review else "", hospital_note=review.note if review else "")
    response = Response(make_pdf(content, i18n.current()), mimetype="application/pdf")
    audit_trail.note("report_download", f"study:{study_id}", "PDF",
                     coalesce_seconds=audit_trail.REPORT_VIEW_COALESCE)
    response.headers["Content-Disposition"] = \
        f'inline; filename="clinibox-report-{study_id}.pdf"'
    return response

