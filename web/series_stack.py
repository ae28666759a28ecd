"""The stack a shown image belongs to: its series' slices in order, for the study page.

A series of more than one single-frame image (a CT or MR series) is shown as a
stack under the image (``templates/series_stack.html``, ``static/series_stack.js``):
a slider, "slice N of M", previous and next, and a strip marking the slices that
show a lesion. A multi-frame image is not a stack here: its frames have their own
navigation.

The order of the slices:

* a series read as a volume (``storage/volumes.py`` → ``inference/volume.py``): its
  slices along the orientation normal (``SeriesVolume.instance_ids``), lowest first
  (for an axial CT of a supine patient: the feet end first). This is the order the
  3-D lesions' ``slice_index`` counts in, so "slice N" means the same everywhere;
* a series read per slice (no positions, gaps, tilt…): the order the box received its
  images (instance id). The Instance Number is not among what the box stores of an
  image (``instances.geometry_json``), and reading it back from every file at each page
  view would cost a header read a slice (and fail once retention deleted the images).

The marks: a volume's 3-D lesions are numbered as the study page's 3-D lesion table
numbers them (``on_image.volume_rows``: 1, 2… over the study's series read as volumes, in
their order, each series' most probable first) and each is marked on the slices of its
parts, with the part's box (source pixels) for the image layer. A series read per slice
marks the slices whose image is a finding with lesion records, each box numbered as on
that image's page.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from flask import request, url_for

from engine.inference.volume import MULTI_FRAME, READ_AS_VOLUME, SeriesVolume
from firmware_app.storage.volumes import FINDING, StudyVolumes

#: PageUp / PageDown move this share of the stack (at least one slice)
PAGE_SHARE = 0.1
#: up to this many slices, every marked slice shows its lesion numbers (not only key slices)
ROOMY_SLICES = 16


class ShownInstance(Protocol):
    """What the stack reads of an instance of the study (``storage.studies.InstanceView``)."""

    id: int
    frames_inferred: int
    assessment: str
    lesions: list[dict[str, Any]]
    image_deleted_at: float | None


def stack_for(study: Mapping[str, Any], instance: ShownInstance) -> dict[str, Any] | None:
    """The stack of the shown ``instance`` of ``study`` (``storage.studies.study``, with its
    ``volumes``), with the study page's and frame images' addresses; None when its series
    is no stack."""
    views = {view.id: view for view in study["instances"]}
    volumes: StudyVolumes = study["volumes"]
    first = 1
    for series in volumes.series:
        if instance.id in series.instance_ids:
            break
        if series.read_as == READ_AS_VOLUME:
            first += len(series.lesions)
    else:
        return None
    window = window_query()

    def page(instance_id: int, **more: Any) -> str:
        return url_for("clinic.study", study_id=study["id"], instance=instance_id, **more)

    def image(instance_id: int) -> str:
        return url_for("clinic.frame_png", instance_id=instance_id, frame=0)

    return build_stack(series, views, instance.id,
                       page=lambda i: page(i, **window), bare_page=page, image=image,
                       window=window, first_number=first)


def build_stack(series: SeriesVolume, views: Mapping[int, ShownInstance], current: int, *,
                page: Callable[[int], str], image: Callable[[int], str],
                bare_page: Callable[[int], str] | None = None,
                window: Mapping[str, Any] | None = None, first_number: int = 1
                ) -> dict[str, Any] | None:
    """The stack as a plain dict for the template (None: not a stack): ``page`` gives an
    instance's study-page address (with the window asked for), ``bare_page`` the same
    without it (the script adds the window it shows), ``image`` its frame 0's PNG;
    ``first_number``: the number of the series' first 3-D lesion in the study."""
    ids = ordered_instances(series, views)
    if current not in ids or len(ids) < 2 or series.reason == MULTI_FRAME:
        return None
    bare_page = bare_page or page
    marks = lesion_marks(series, views, first_number)
    keys = _key_slices(series, ids, first_number)
    index = ids.index(current)
    slices = []
    for k, instance_id in enumerate(ids):
        numbers = sorted({m["number"] for m in marks.get(instance_id, ()) if m["number"]})
        slices.append({
            "index": k, "number": k + 1, "instance_id": instance_id,
            "url": page(instance_id), "image_url": image(instance_id),
            "gone": views[instance_id].image_deleted_at is not None,
            "current": k == index, "marked": instance_id in marks,
            "lesions": numbers, "key_of": keys.get(k, []),
            "marks": list(marks.get(instance_id, ())),
        })
    lesions = _lesion_entries(series, ids, slices, first_number)
    return {
        "series_instance_uid": series.series_instance_uid, "modality": series.modality,
        "read_as": series.read_as, "reason": series.reason,
        "volume": series.read_as == READ_AS_VOLUME,
        "count": len(ids), "index": index, "number": index + 1,
        "current": slices[index], "slices": slices, "lesions": lesions,
        "previous": slices[index - 1] if index > 0 else None,
        "next": slices[index + 1] if index + 1 < len(ids) else None,
        "roomy": len(ids) <= ROOMY_SLICES,
        "window": dict(window or {}),
        "client": {
            "index": index, "current": current, "page_step": page_step(len(ids)),
            "slices": [{"id": s["instance_id"], "page": bare_page(s["instance_id"]),
                        "image": s["image_url"], "gone": s["gone"], "marks": s["marks"],
                        "lesions": s["lesions"]}
                       for s in slices],
        },
    }


def ordered_instances(series: SeriesVolume, views: Mapping[int, ShownInstance]
                      ) -> list[int]:
    """The series' shown instances in stack order (the module's docstring); [] when one of
    them has more than one frame."""
    ids = [i for i in series.instance_ids if i in views]
    if any(views[i].frames_inferred > 1 for i in ids):
        return []  # an image analysed before its geometry was stored (frames unknown)
    return ids if series.read_as == READ_AS_VOLUME else sorted(ids)


def lesion_marks(series: SeriesVolume, views: Mapping[int, ShownInstance],
                 first_number: int = 1) -> dict[int, list[dict[str, Any]]]:
    """Instance id → its marks: {"number": the 3-D lesion's (volume, counted from
    ``first_number``) or the record's on its image (per slice), "box": [x0, y0, x1, y1]
    source pixels or None}."""
    marks: dict[int, list[dict[str, Any]]] = {}
    if series.read_as == READ_AS_VOLUME:
        for number, lesion in enumerate(series.lesions, start=first_number):
            for part in lesion.parts:
                records = views[part.instance_id].lesions if part.instance_id in views else []
                record = records[part.lesion_index] if part.lesion_index < len(records) else {}
                marks.setdefault(part.instance_id, []).append(
                    {"number": number, "box": _box(record)})
        return marks
    for instance_id in series.instance_ids:
        view = views.get(instance_id)
        if view is None or view.assessment != FINDING:
            continue
        for number, record in enumerate(view.lesions, start=1):
            if isinstance(record, Mapping):
                marks.setdefault(instance_id, []).append({"number": number,
                                                          "box": _box(record)})
    return marks


def page_step(count: int) -> int:
    """How many slices PageUp / PageDown move."""
    return max(1, round(count * PAGE_SHARE))


def window_query() -> dict[str, float]:
    """The window (centre, width) the request asked for, to keep while moving through the
    stack; {} when none or not a valid one (the page itself answers 400 to those)."""
    try:
        centre = float(request.args.get("centre", ""))
        width = float(request.args.get("width", ""))
    except ValueError:
        return {}
    if not (math.isfinite(centre) and math.isfinite(width)
            and 0 < width <= 1e7 and abs(centre) <= 1e7):
        return {}
    return {"centre": centre, "width": width}


def _key_slices(series: SeriesVolume, ids: Sequence[int], first_number: int
                ) -> dict[int, list[int]]:
    """Slice index → the numbers of the 3-D lesions whose key slice it is."""
    keys: dict[int, list[int]] = {}
    if series.read_as != READ_AS_VOLUME:
        return keys
    for number, lesion in enumerate(series.lesions, start=first_number):
        if lesion.key_instance_id in ids:
            keys.setdefault(ids.index(lesion.key_instance_id), []).append(number)
    return keys


def _lesion_entries(series: SeriesVolume, ids: Sequence[int],
                    slices: Sequence[Mapping[str, Any]], first_number: int
                    ) -> list[dict[str, Any]]:
    """One entry per 3-D lesion: its number, slices (0-based), first and last slice
    (1-based) and its key slice's page."""
    if series.read_as != READ_AS_VOLUME:
        return []
    out = []
    for number, lesion in enumerate(series.lesions, start=first_number):
        on = sorted({ids.index(i) for i in lesion.instance_ids if i in ids})
        if not on:
            continue
        key = ids.index(lesion.key_instance_id) if lesion.key_instance_id in ids else on[0]
        out.append({"number": number, "slices": on, "first": on[0] + 1, "last": on[-1] + 1,
                    "key_index": key, "key_url": slices[key]["url"]})
    return out


def _box(record: Mapping[str, Any]) -> list[float] | None:
    """A record's box as four finite numbers, or None."""
    box = record.get("box") if isinstance(record, Mapping) else None
    if not isinstance(box, list | tuple) or len(box) != 4:
        return None
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        return None
    return values if all(math.isfinite(v) for v in values) else None
