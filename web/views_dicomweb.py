"""The box's studies over DICOMweb, read-only (``[dicomweb]``): QIDO-RS searches and WADO-RS
retrieves (PS3.18) at ``/dicomweb``, for a standard viewer (OHIF) or any DICOMweb client.

    GET /dicomweb/studies                                   search studies
    GET /dicomweb/studies/{study}/series                    search its series
    GET /dicomweb/studies/{study}[/series/{series}]/instances  search its instances
    GET /dicomweb/studies/{study}[/series/{series}[/instances/{sop}]]  retrieve the files
    GET …/metadata                                          retrieve their headers as JSON
    GET …/instances/{sop}/frames/{1,2,…}                    retrieve frames as they are held

It serves what the box holds (``storage/dicomweb_index.py``): the images it took in and still
has, and its own result documents kept for it (``storage/kept_documents.py``: SR, SEG, key
image). Nothing is written. The viewer's accounts and TLS guard it: a viewer session, or
HTTP Basic with an account's name and password, refused and throttled like the login page
(``web/dicomweb_auth.py``). Each search and each study retrieved is in the audit trail.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, g, jsonify, request
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from firmware_app.storage import dicomweb_index, kept_documents, studies
from firmware_app.storage.dicomweb_index import StudyQuery
from web import audit_trail
from web import dicomweb as model
from web.dicomweb_auth import dicomweb_account
from web.security import database

log = logging.getLogger(__name__)
blueprint = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")
blueprint.before_request(dicomweb_account)

#: the study search's attributes the box matches on (keyword: StudyQuery field)
MATCHED = {"StudyInstanceUID": "study_instance_uid", "PatientID": "patient_id",
           "PatientName": "patient_name", "StudyDate": "date", "ModalitiesInStudy": "modality"}
#: the search's parameters that are not attributes
CONTROLS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
#: a search's audit rows: one per study listed, account and address in this many seconds
SEARCH_COALESCE = 300.0
#: a query parameter's name as it may be repeated in a warning
_NAME = re.compile(r"^[A-Za-z0-9]{1,64}$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE = re.compile(r"^(\d{8})?(-(\d{8})?)?$")
JSON = "application/dicom+json"


@dataclass(frozen=True)
class Served:
    """One object the service serves: its UIDs, its file and its modality."""

    series_instance_uid: str
    sop_instance_uid: str
    modality: str
    path: Path


def _uid(value: str) -> str:
    """``value`` when it is a UID; else 400."""
    if len(value) > 64 or not _UID.match(value):
        abort(400, description=f"not a DICOM UID: {value[:64]!r}")
    return value


def _warn(text: str) -> None:
    """A warning for this request's answer (its ``Warning`` header)."""
    g.setdefault("dicomweb_warnings", []).append(text)


def _on_the_box(path: Path) -> bool:
    """Whether ``path`` is a file in the box's state folder (only the database names the
    files served; this keeps it so)."""
    state = current_app.config["CLINIBOX"].config.state_dir
    try:
        return path.resolve().is_relative_to(state) and path.is_file()
    except OSError:
        return False


def _objects(study: str, series: str = "", sop: str = "") -> list[Served]:
    """The study's images and kept documents (of one series, or the one object) whose files
    are on the box; the documents only while an image of the study is served."""
    conn = database()
    images = [i for i in dicomweb_index.images(conn, study, series, sop) if _on_the_box(i.path)]
    found = []
    for image in images:
        uid = image.sop_instance_uid or _sop_of(image.path)
        if uid and (not sop or uid == sop):
            found.append(Served(image.series_instance_uid, uid, image.modality, image.path))
    if not (images or any(_on_the_box(i.path) for i in dicomweb_index.images(conn, study))):
        return found  # no image of the study: its documents are not served either
    found += [Served(d.series_instance_uid, d.sop_instance_uid, d.modality, d.path)
              for d in kept_documents.of_study(conn, study)
              if (not series or d.series_instance_uid == series)
              and (not sop or d.sop_instance_uid == sop) and _on_the_box(d.path)]
    return found


def _sop_of(path: Path) -> str:
    """The SOP Instance UID in the file (an image the box did not get over DICOM)."""
    header = _header(path)
    return "" if header is None else str(header.get("SOPInstanceUID", ""))


def _header(path: Path) -> Dataset | None:
    """The file's header; None (said in the answer's warnings and the log) when it cannot
    be read: one bad file never keeps the others from a client."""
    try:
        return model.header(path)
    except (OSError, InvalidDicomError, ValueError, EOFError) as exc:
        log.warning("DICOMweb: %s cannot be read: %s", path.name, exc)
        _warn("an object of the box could not be read and was left out")
        return None


def _with_warnings(answer: Response) -> Response:
    """The answer with one ``Warning`` header saying what was left out or not matched."""
    said = list(dict.fromkeys(g.get("dicomweb_warnings", [])))
    if said:
        text = "; ".join(said)[:1000].replace('"', "'")
        answer.headers["Warning"] = f'299 clinibox "{text}"'
    return answer


def _json(items: list[dict]) -> Response:
    answer = jsonify(items)
    answer.mimetype = JSON
    return _with_warnings(answer)


def _study_query() -> StudyQuery:
    """The search's attributes (what it matches; the others are said not matched)."""
    fields: dict[str, str] = {}
    ignored: list[str] = []
    for name, value in request.args.items():
        if name in CONTROLS:
            continue
        keyword = name
        if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
            keyword = keyword_for_tag(int(name, 16)) or name
        if keyword not in MATCHED:
            ignored.append(name if _NAME.match(name) else "an attribute")
            continue
        if not value:
            continue  # universal matching: no condition
        if keyword == "StudyDate":
            dates = _DATE.match(value)
            if dates is None:
                abort(400, description="StudyDate: YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
            fields["date_from"] = dates.group(1) or ""
            fields["date_to"] = (dates.group(3) or "") if dates.group(2) else fields["date_from"]
        else:
            fields[MATCHED[keyword]] = value
    if ignored:
        _warn(f"not matched by this box: {', '.join(dict.fromkeys(ignored))}"[:300])
    if "study_instance_uid" in fields:
        _uid(fields["study_instance_uid"])
    return StudyQuery(**fields)


def _not_matched() -> None:
    """A series or instance search matches nothing but its path: say so of any attribute."""
    names = [n for n in request.args if n not in CONTROLS]
    if names:
        _warn("a series or instance search matches only its path's UIDs; not matched: "
              + ", ".join(n if _NAME.match(n) else "an attribute" for n in names)[:300])


def _count(name: str, default: int, most: int) -> int:
    text = request.args.get(name, "")
    if not text:
        return default
    if not (text.isascii() and text.isdigit()):
        abort(400, description=f"{name} must be a whole number")
    return min(int(text), most)


def _study_target(study: str) -> str:
    """An audit row's target for a study: the box's id of it (its page)."""
    found = studies.study_id(database(), study)
    return f"study:{found}" if found is not None else ""


@blueprint.route("/studies")
def search_studies() -> Response:
    """QIDO-RS: the studies that match, each with its counts; each study listed is a row of
    the audit trail."""
    most = current_app.config["CLINIBOX"].config.dicomweb.max_results
    query = _study_query()
    found = dicomweb_index.studies(database(), query, _count("limit", most, most),
                                   _count("offset", 0, 10**9))
    matches, listed = [], []
    for study in found:
        objects = _objects(study)
        first = next((h for h in map(_header, (o.path for o in objects)) if h is not None),
                     None)
        if first is None:
            continue
        matches.append(model.study_match(
            first, sorted({o.modality for o in objects} - {""}),
            len({o.series_instance_uid for o in objects}), len(objects)))
        listed.append(_study_target(study))
    audit_trail.note_each("dicomweb_search", [t for t in listed if t],
                          coalesce_seconds=SEARCH_COALESCE)
    return _json(matches)


@blueprint.route("/studies/<study>/series")
def search_series(study: str) -> Response:
    """QIDO-RS: the study's series."""
    _not_matched()
    by_series: dict[str, list[Served]] = {}
    for found in _objects(_uid(study)):
        by_series.setdefault(found.series_instance_uid, []).append(found)
    matches = []
    for objects in by_series.values():
        first = next((h for h in map(_header, (o.path for o in objects)) if h is not None),
                     None)
        if first is not None:
            matches.append(model.series_match(first, len(objects)))
    _note_search(study, matches)
    return _json(matches)


@blueprint.route("/studies/<study>/instances")
@blueprint.route("/studies/<study>/series/<series>/instances")
def search_instances(study: str, series: str = "") -> Response:
    """QIDO-RS: the study's (or series') instances."""
    _not_matched()
    headers = (_header(o.path) for o in _objects(_uid(study), _uid(series) if series else ""))
    matches = [model.instance_match(h) for h in headers if h is not None]
    _note_search(study, matches)
    return _json(matches)


def _note_search(study: str, matches: list[dict]) -> None:
    target = _study_target(study)
    if matches and target:
        audit_trail.note("dicomweb_search", target, coalesce_seconds=SEARCH_COALESCE)


def _wanted_syntaxes(part: str) -> set[str] | None:
    """The transfer syntaxes the Accept header asks for, in parts of type ``part``
    (``application/dicom``, ``application/octet-stream``); None: any, as held. Anything
    else is 406."""
    accept = request.headers.get("Accept", "")
    if not accept.strip():
        return None
    syntaxes: set[str] = set()
    for offer in accept.split(","):
        kind, *params = [piece.strip() for piece in offer.split(";")]
        values = dict(p.split("=", 1) for p in params if "=" in p)
        media = values.get("type", "").strip('"')
        if kind in ("*/*", "multipart/*") or (kind == "multipart/related"
                                               and media in ("", part)):
            syntax = values.get("transfer-syntax", "*").strip('"')
            if syntax == "*":
                return None
            syntaxes.add(syntax)
    if not syntaxes:
        abort(406, description=f'this box sends multipart/related; type="{part}"')
    return syntaxes


def _note_retrieve(study: str, what: str) -> None:
    """The audit row of a retrieve: the study by the box's id (its page)."""
    audit_trail.note("dicomweb_retrieve", _study_target(study), what,
                     coalesce_seconds=audit_trail.IMAGE_VIEW_COALESCE)


@blueprint.route("/studies/<study>")
@blueprint.route("/studies/<study>/series/<series>")
@blueprint.route("/studies/<study>/series/<series>/instances/<sop>")
def retrieve(study: str, series: str = "", sop: str = "") -> Response:
    """WADO-RS: the files, as the box holds them (no transcoding: a transfer syntax asked
    for that a file is not in is 406)."""
    objects = _objects(_uid(study), _uid(series) if series else "", _uid(sop) if sop else "")
    wanted = _wanted_syntaxes("application/dicom")
    files = []
    for found in objects:
        try:
            syntax = str(read_file_meta_info(found.path).TransferSyntaxUID)
        except (OSError, InvalidDicomError, AttributeError, ValueError) as exc:
            log.warning("DICOMweb: %s cannot be read: %s", found.path.name, exc)
            _warn("an object of the box could not be read and was left out")
            continue
        if wanted is not None and syntax not in wanted:
            abort(406, description=f"{found.sop_instance_uid} is stored in {syntax}; "
                                   "this box does not transcode (ask for transfer-syntax=*)")
        files.append((found.path, syntax))
    if not files:
        abort(404)
    _note_retrieve(study, f"{len(files)} objects")
    body, content_type = model.multipart(files)
    return _with_warnings(Response(body, content_type=content_type))


@blueprint.route("/studies/<study>/series/<series>/instances/<sop>/frames/<numbers>")
def retrieve_frames(study: str, series: str, sop: str, numbers: str) -> Response:
    """WADO-RS frames: each frame as the image holds it (native pixels, or a compressed
    frame with its transfer syntax), for viewers that fetch one frame at a time (OHIF)."""
    if not re.fullmatch(r"[1-9][0-9]{0,5}(,[1-9][0-9]{0,5}){0,99}", numbers):
        abort(400, description="frames: one or more frame numbers from 1, comma separated")
    objects = _objects(_uid(study), _uid(series), _uid(sop))
    if not objects:
        abort(404)
    wanted = _wanted_syntaxes("application/octet-stream")
    try:
        parts, syntax = model.frames(objects[0].path, [int(n) for n in numbers.split(",")])
    except model.FramesRefused as exc:
        abort(404, description=str(exc))
    except (OSError, InvalidDicomError, ValueError, EOFError) as exc:
        log.warning("DICOMweb: frames of %s cannot be read: %s", objects[0].path.name, exc)
        abort(404, description="the image's frames could not be read")
    if wanted is not None and syntax not in wanted:
        abort(406, description=f"{sop} is stored in {syntax}; this box does not transcode "
                               "(ask for transfer-syntax=*)")
    _note_retrieve(study, f"{len(parts)} frames")
    body, content_type = model.multipart_frames(parts, syntax)
    return Response(body, content_type=content_type)


@blueprint.route("/studies/<study>/metadata")
@blueprint.route("/studies/<study>/series/<series>/metadata")
@blueprint.route("/studies/<study>/series/<series>/instances/<sop>/metadata")
def retrieve_metadata(study: str, series: str = "", sop: str = "") -> Response:
    """WADO-RS metadata: each object's header as DICOM JSON, without bulk data."""
    objects = _objects(_uid(study), _uid(series) if series else "", _uid(sop) if sop else "")
    headers = [h for h in (_header(o.path) for o in objects) if h is not None]
    if not headers:
        abort(404)
    _note_retrieve(study, f"{len(headers)} headers")
    return _json([model.metadata(h) for h in headers])
