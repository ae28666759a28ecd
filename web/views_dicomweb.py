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
(``web/security.py``). Each search and each study retrieved is in the audit trail.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from flask import Blueprint, Response, abort, current_app, jsonify, request
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from firmware_app.storage import dicomweb_index, kept_documents
from firmware_app.storage.dicomweb_index import StudyQuery
from web import audit_trail
from web import dicomweb as model
from web.dicomweb_auth import dicomweb_account
from web.security import database

blueprint = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")
blueprint.before_request(dicomweb_account)

#: the study search's attributes the box matches on (keyword: StudyQuery field)
MATCHED = {"StudyInstanceUID": "study_instance_uid", "PatientID": "patient_id",
           "PatientName": "patient_name", "StudyDate": "date", "ModalitiesInStudy": "modality"}
#: the search's parameters that are not attributes
CONTROLS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
#: a searches' audit rows: one per account and address in this many seconds
SEARCH_COALESCE = 300.0
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


def _objects(study: str, series: str = "", sop: str = "") -> list[Served]:
    """The study's images and kept documents (of one series, or the one object)."""
    conn = database()
    found = [Served(i.series_instance_uid, i.sop_instance_uid or _sop_of(i.path), i.modality,
                    i.path) for i in dicomweb_index.images(conn, study, series, sop)
             if i.path.exists()]
    if sop:
        found = [o for o in found if o.sop_instance_uid == sop]
    found += [Served(d.series_instance_uid, d.sop_instance_uid, d.modality, d.path)
              for d in kept_documents.of_study(conn, study)
              if (not series or d.series_instance_uid == series)
              and (not sop or d.sop_instance_uid == sop)]
    return [o for o in found if o.path.exists()]


def _sop_of(path: Path) -> str:
    """The SOP Instance UID in the file (an image the box did not get over DICOM)."""
    return str(_header(path).get("SOPInstanceUID", ""))


def _header(path: Path) -> Dataset:
    try:
        return model.header(path)
    except (OSError, InvalidDicomError) as exc:
        abort(500, description=f"a file of the box could not be read: {exc}")


def _json(items: list[dict], warnings: Iterable[str] = ()) -> Response:
    answer = jsonify(items)
    answer.mimetype = JSON
    for warning in warnings:
        answer.headers.add("Warning", f'299 clinibox "{warning}"')
    return answer


def _study_query() -> tuple[StudyQuery, list[str]]:
    """The search's attributes: what it matches, and the warnings for what it does not."""
    fields: dict[str, str] = {}
    ignored: list[str] = []
    for name, value in request.args.items():
        if name in CONTROLS:
            continue
        keyword = name
        if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
            keyword = keyword_for_tag(int(name, 16)) or name
        if keyword not in MATCHED or not value:
            ignored.append(f"{name} is not matched by this box")
            continue
        if keyword == "StudyDate":
            dates = _DATE.match(value)
            if dates is None:
                abort(400, description="StudyDate: YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
            fields["date_from"] = dates.group(1) or ""
            fields["date_to"] = (dates.group(3) or "") if dates.group(2) else fields["date_from"]
        else:
            fields[MATCHED[keyword]] = value
    if "study_instance_uid" in fields:
        _uid(fields["study_instance_uid"])
    return StudyQuery(**fields), ignored


def _count(name: str, default: int, most: int) -> int:
    text = request.args.get(name, "")
    if not text:
        return default
    if not text.isdigit():
        abort(400, description=f"{name} must be a whole number")
    return min(int(text), most)


@blueprint.route("/studies")
def search_studies() -> Response:
    """QIDO-RS: the studies that match, each with its counts."""
    most = current_app.config["CLINIBOX"].config.dicomweb.max_results
    query, ignored = _study_query()
    found = dicomweb_index.studies(database(), query, _count("limit", most, most),
                                   _count("offset", 0, 10**9))
    matches = []
    for study in found:
        objects = _objects(study)
        if not objects:
            continue
        matches.append(model.study_match(
            _header(objects[0].path), sorted({o.modality for o in objects} - {""}),
            len({o.series_instance_uid for o in objects}), len(objects)))
    audit_trail.note("dicomweb_search", "", f"{len(matches)} studies",
                     coalesce_seconds=SEARCH_COALESCE)
    return _json(matches, ignored)


@blueprint.route("/studies/<study>/series")
def search_series(study: str) -> Response:
    """QIDO-RS: the study's series."""
    by_series: dict[str, list[Served]] = {}
    for found in _objects(_uid(study)):
        by_series.setdefault(found.series_instance_uid, []).append(found)
    return _json([model.series_match(_header(objects[0].path), len(objects))
                  for objects in by_series.values()])


@blueprint.route("/studies/<study>/instances")
@blueprint.route("/studies/<study>/series/<series>/instances")
def search_instances(study: str, series: str = "") -> Response:
    """QIDO-RS: the study's (or series') instances."""
    objects = _objects(_uid(study), _uid(series) if series else "")
    return _json([model.instance_match(_header(o.path)) for o in objects])


def _wanted_syntaxes() -> set[str] | None:
    """The transfer syntaxes the Accept header asks for (None: any). Anything but DICOM
    files (``multipart/related; type="application/dicom"``, ``*/*``) is 406."""
    accept = request.headers.get("Accept", "")
    if not accept.strip():
        return None
    syntaxes: set[str] = set()
    for offer in accept.split(","):
        kind, *params = [part.strip() for part in offer.split(";")]
        values = dict(p.split("=", 1) for p in params if "=" in p)
        media = values.get("type", "").strip('"')
        if kind in ("*/*", "multipart/*") or (kind == "multipart/related"
                                               and media in ("", "application/dicom")):
            syntax = values.get("transfer-syntax", "*").strip('"')
            if syntax == "*":
                return None
            syntaxes.add(syntax)
    if not syntaxes:
        abort(406, description='this box sends DICOM files: multipart/related; '
                               'type="application/dicom"')
    return syntaxes


def _note_retrieve(study: str, what: str) -> None:
    """The audit row of a retrieve: the study by the box's id (its page)."""
    found = dicomweb_index.study_id(database(), study)
    audit_trail.note("dicomweb_retrieve", f"study:{found}" if found is not None else "", what,
                     coalesce_seconds=audit_trail.IMAGE_VIEW_COALESCE)


@blueprint.route("/studies/<study>")
@blueprint.route("/studies/<study>/series/<series>")
@blueprint.route("/studies/<study>/series/<series>/instances/<sop>")
def retrieve(study: str, series: str = "", sop: str = "") -> Response:
    """WADO-RS: the files, as the box holds them (no transcoding: a transfer syntax asked
    for that a file is not in is 406)."""
    objects = _objects(_uid(study), _uid(series) if series else "", _uid(sop) if sop else "")
    if not objects:
        abort(404)
    wanted = _wanted_syntaxes()
    files = []
    for found in objects:
        try:
            syntax = str(read_file_meta_info(found.path).TransferSyntaxUID)
        except (OSError, InvalidDicomError, AttributeError):
            abort(500, description="a file of the box could not be read")
        if wanted is not None and syntax not in wanted:
            abort(406, description=f"{found.sop_instance_uid} is stored in {syntax}; "
                                   "this box does not transcode (ask for transfer-syntax=*)")
        files.append((found.path, syntax))
    _note_retrieve(study, f"{len(files)} objects")
    body, content_type = model.multipart(files)
    return Response(body, content_type=content_type)


def _wanted_frame_syntaxes() -> set[str] | None:
    """The transfer syntaxes the Accept header asks frames in (None: any, as held). The box
    sends frames as ``multipart/related; type="application/octet-stream"``; anything else
    is 406."""
    accept = request.headers.get("Accept", "")
    if not accept.strip():
        return None
    syntaxes: set[str] = set()
    for offer in accept.split(","):
        kind, *params = [part.strip() for part in offer.split(";")]
        values = dict(p.split("=", 1) for p in params if "=" in p)
        media = values.get("type", "").strip('"')
        if kind in ("*/*", "multipart/*") or (
                kind == "multipart/related" and media in ("", "application/octet-stream")):
            syntax = values.get("transfer-syntax", "*").strip('"')
            if syntax == "*":
                return None
            syntaxes.add(syntax)
    if not syntaxes:
        abort(406, description='this box sends frames as they are held: multipart/related; '
                               'type="application/octet-stream"')
    return syntaxes


@blueprint.route("/studies/<study>/series/<series>/instances/<sop>/frames/<numbers>")
def retrieve_frames(study: str, series: str, sop: str, numbers: str) -> Response:
    """WADO-RS frames: each frame as the image holds it (native pixels, or a compressed
    frame with its transfer syntax), for viewers that fetch one frame at a time (OHIF)."""
    if not re.fullmatch(r"[1-9][0-9]{0,5}(,[1-9][0-9]{0,5}){0,99}", numbers):
        abort(400, description="frames: one or more frame numbers from 1, comma separated")
    objects = _objects(_uid(study), _uid(series), _uid(sop))
    if not objects:
        abort(404)
    wanted = _wanted_frame_syntaxes()
    try:
        dataset = pydicom.dcmread(objects[0].path)
        syntax = model.transfer_syntax(dataset)
        if wanted is not None and syntax not in wanted:
            abort(406, description=f"{sop} is stored in {syntax}; this box does not "
                                   "transcode (ask for transfer-syntax=*)")
        parts = model.frames(dataset, [int(n) for n in numbers.split(",")])
    except model.FramesRefused as exc:
        abort(404, description=str(exc))
    except (OSError, InvalidDicomError, ValueError):
        abort(500, description="a file of the box could not be read")
    _note_retrieve(study, f"{len(parts)} frames")
    body, content_type = model.multipart_frames(parts, syntax)
    return Response(body, content_type=content_type)


@blueprint.route("/studies/<study>/metadata")
@blueprint.route("/studies/<study>/series/<series>/metadata")
@blueprint.route("/studies/<study>/series/<series>/instances/<sop>/metadata")
def retrieve_metadata(study: str, series: str = "", sop: str = "") -> Response:
    """WADO-RS metadata: each object's header as DICOM JSON, without bulk data."""
    objects = _objects(_uid(study), _uid(series) if series else "", _uid(sop) if sop else "")
    if not objects:
        abort(404)
    _note_retrieve(study, f"{len(objects)} headers")
    return _json([model.metadata(_header(o.path)) for o in objects])
