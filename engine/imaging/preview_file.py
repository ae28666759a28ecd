"""Display preview files: what the worker's decoder sandbox writes beside an object and the
viewer and the printed report read (``engine.imaging.preview`` makes them).

Reading a preview needs numpy only, so the viewer's processes never import
pydicom and its codecs. The file is one uncompressed ``.npz`` (no pickles),
written atomically: ``frame_<n>`` arrays and a ``meta`` JSON string.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clinibox_common.errors import CliniboxError
from engine.imaging.errors import DecodeError

#: Longest side of a stored preview (the viewer's largest rendering).
PREVIEW_SIDE = 2048
#: The preview file format this code writes and reads.
FORMAT = 1


class FrameNotPreviewed(CliniboxError, LookupError):
    """A frame the worker did not analyse, so it has no preview."""

    kind = "no display preview"


@dataclass(frozen=True)
class Window:
    """A linear VOI window in modality units (e.g. HU for CT): centre and width."""

    centre: float
    width: float


@dataclass
class FramePreview:
    """One frame ready to render: modality values (grey) or 0..255 RGB, with its default window.

    ``rows`` and ``columns`` are the source image's (boxes are in source
    pixels); ``values`` may be smaller (at most ``PREVIEW_SIDE`` on a side).
    """

    values: np.ndarray  # [h, w] modality values for grey; [h, w, 3] 0..255 for colour
    colour: bool
    invert: bool  # MONOCHROME1: higher values darker
    default_window: Window
    value_range: tuple[float, float]  # (min, max) of the full frame's values
    frame: int  # 0-based frame index
    total_frames: int
    rows: int
    columns: int
    modality: str
    previewed: tuple[int, ...] = ()  # every frame of the image that has a preview
    #: (row, column) mm per source pixel, as the worker measured the lesions with
    #: (``decode``'s calibration); None when the image has none or the preview predates it
    pixel_spacing: tuple[float, float] | None = None


def fit_size(width: int, height: int, max_side: int, min_side: int = 1) -> tuple[int, int]:
    """(width, height) brought within ``max_side`` (and up to ``min_side``), aspect kept."""
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, not {max_side}")
    longest = max(width, height)
    if longest > max_side:
        scale = max_side / longest
    elif longest < min(min_side, max_side):
        scale = min(min_side, max_side) / longest
    else:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


# -- the file ------------------------------------------------------------------------


def save(previews: list[FramePreview], target: Path) -> None:
    """Write ``previews`` (one image's frames) to ``target`` atomically.

    Not synced to disk: a preview is made from the object beside it, which is durable.
    After a power cut it may be missing or unreadable, and the viewer makes it again
    (``web/render.load_frame``). Syncing it cost the decoder about a tenth of the
    pipeline's throughput (docs/decisions/0006-display-previews.md)."""
    meta = {"format": FORMAT, "frames": []}
    arrays: dict[str, np.ndarray] = {}
    for preview in previews:
        arrays[f"frame_{preview.frame}"] = preview.values
        meta["frames"].append({
            "frame": preview.frame, "colour": preview.colour, "invert": preview.invert,
            "default_window": [preview.default_window.centre, preview.default_window.width],
            "value_range": list(preview.value_range), "total_frames": preview.total_frames,
            "rows": preview.rows, "columns": preview.columns, "modality": preview.modality,
            "pixel_spacing": list(preview.pixel_spacing) if preview.pixel_spacing else None})
    arrays["meta"] = np.array(json.dumps(meta))
    partial = target.with_name(f".{target.name}.part")
    with open(partial, "wb") as handle:
        np.savez(handle, allow_pickle=False, **arrays)
    os.chmod(partial, 0o640)
    os.replace(partial, target)


def load(source: Path, frame: int) -> FramePreview:
    """Frame ``frame``'s preview from the file at ``source``.

    FileNotFoundError when there is no file, FrameNotPreviewed for a frame the
    worker did not analyse, DecodeError for a file that is not a preview.
    """
    try:
        with np.load(source, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            if meta.get("format") != FORMAT:
                raise DecodeError(f"preview format {meta.get('format')!r} is not {FORMAT}")
            frames = {int(item["frame"]): item for item in meta["frames"]}
            if frame not in frames:
                raise FrameNotPreviewed(frame, sorted(frames))
            values = stored[f"frame_{frame}"]
    except (FileNotFoundError, FrameNotPreviewed, DecodeError):
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise DecodeError(f"unreadable preview: {exc}") from exc
    item = frames[frame]
    values.flags.writeable = False
    spacing = item.get("pixel_spacing")
    return FramePreview(
        values=values, colour=bool(item["colour"]), invert=bool(item["invert"]),
        default_window=Window(*map(float, item["default_window"])),
        value_range=(float(item["value_range"][0]), float(item["value_range"][1])),
        frame=frame, total_frames=int(item["total_frames"]), rows=int(item["rows"]),
        columns=int(item["columns"]), modality=str(item["modality"]),
        previewed=tuple(sorted(frames)),
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing else None)
