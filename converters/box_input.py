"""Train on exactly what the box feeds the model: the public training transform.

The box turns every received image into a model input in two steps, both its own code:
it decodes the file (``imaging/wrap.decode_file``: DICOM, or a PNG/JPEG export wrapped as
Secondary Capture; rescale, windowing, photometric interpretation → a grey frame in
[0, 1]) and runs the manifest's preprocessing on each frame (``imaging/preprocess.py``,
``letterbox_grey``: the frame letterboxed to the input's height and width, keeping its aspect
and padding with 0, then ``(x - mean) / std``, the grey plane repeated for 3 channels).
A model trained on anything else (torchvision's own resize and ImageNet normalisation, a
different window) meets other pixels on the box.

:func:`box_input` runs those same two steps (it calls them; there is no second copy) for a
file or for a grey frame already decoded, with the preprocessing a ``convert.toml`` or a
package's manifest declares (:class:`BoxFeed`), and returns the tensor with the way back to
the source pixels, so that a detector's truth boxes and a segmenter's truth masks are put in
the input's coordinates as the box will read the model's outputs::

    from converters.box_input import BoxFeed, box_input

    feed = BoxFeed.from_convert_toml("convert.toml")   # input_shape, mean, std
    item = box_input("case-0001.dcm", feed)
    item.x                    # float32 [1, C, H, W]: what the box feeds the model
    item.boxes(truth_boxes)   # x0, y0, x1, y1 in source pixels → input pixels
    item.mask(truth_mask)     # a source-sized class mask → the input's H × W
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.imaging.preprocess import Transform, get_preprocessor
from engine.imaging.wrap import decode_file
from engine.settings import LimitsConfig


@dataclass(frozen=True)
class BoxFeed:
    """How the box makes a model input: the preprocessing's name and parameters, the input's
    shape ``(1, C, H, W)``, its mean and std (the manifest's ``preprocessing`` and
    ``inputs[0]``; ``convert.toml``'s ``preprocessing``, ``input_shape``, ``mean``, ``std``)."""

    shape: tuple[int, int, int, int]
    mean: float = 0.0
    std: float = 1.0
    name: str = "letterbox_grey"
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_convert_toml(cls, path: str | Path) -> BoxFeed:
        """The feed a ``convert.toml`` declares (its ``input_shape`` is required here)."""
        from converters.config import build, load_toml

        config = build(load_toml(Path(path)), {})
        if config.input_shape is None:
            raise ValueError(f"{path} has no input_shape; write input_shape = [C, H, W]")
        return cls((1, *config.input_shape), config.mean, config.std, config.preprocessing,
                   dict(config.preprocessing_params))

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> BoxFeed:
        """The feed an installed package's ``manifest.json`` (as a dict) declares."""
        [spec] = manifest["inputs"]
        norm, prep = spec["normalisation"], manifest["preprocessing"]
        return cls(tuple(spec["shape"]), float(norm["mean"]), float(norm["std"]), prep["name"],
                   dict(prep.get("params", {})))


@dataclass(frozen=True)
class BoxInput:
    """One frame as the box feeds it to the model, and the way back to its source pixels."""

    #: float32 [1, C, H, W], the tensor the box's runner gives the model
    x: np.ndarray
    #: model-input pixels → source pixels: ``source = (input - offset) / scale``
    transform: Transform
    #: the grey frame in [0, 1] the box decoded (source pixels)
    frame: np.ndarray
    feed: BoxFeed

    def boxes(self, boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """Boxes ``x0, y0, x1, y1`` in source pixels → the same boxes in input pixels
        (float64 [M, 4]), where a detector trained on ``x`` must put them."""
        t = self.transform
        corners = np.asarray(boxes, np.float64).reshape(-1, 4)
        return corners * t.scale + [t.offset_x, t.offset_y] * 2

    def boxes_to_source(self, boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """Boxes in input pixels → source pixels, as the box reports a lesion."""
        t = self.transform
        corners = np.asarray(boxes, np.float64).reshape(-1, 4)
        return (corners - [t.offset_x, t.offset_y] * 2) / t.scale

    def mask(self, mask: np.ndarray, classes: int | None = None) -> np.ndarray:
        """A source-sized mask → the input's H × W, by the box's own preprocessing geometry.

        A bool mask comes back bool; an integer class mask (0 background, 1…K-1 the classes)
        comes back int64 with each input pixel the class covering most of it (the padding is
        background). ``classes`` defaults to the mask's largest value + 1."""
        mask = np.asarray(mask)
        if mask.shape != self.frame.shape:
            raise ValueError(f"the mask is {mask.shape}, the frame {self.frame.shape}")
        binary = mask.dtype == bool
        labels = mask.astype(np.int64)
        count = 2 if binary else int(classes or labels.max(initial=0) + 1)
        planes = np.stack([self._geometry((labels == k).astype(np.float32))
                           for k in range(count)])
        out = planes.argmax(0)
        return out.astype(bool) if binary else out.astype(np.int64)

    def _geometry(self, plane: np.ndarray) -> np.ndarray:
        """``plane`` (values in [0, 1]) through the box's preprocessing without its
        normalisation: the input's H × W."""
        f = self.feed
        tensor, _ = get_preprocessor(f.name)(plane, (1, 1, *f.shape[2:]), 0.0, 1.0, f.params)
        return tensor[0, 0]


def box_input(source: str | Path | np.ndarray, feed: BoxFeed, frame: int = 0,
              limits: LimitsConfig | None = None, max_frames: int = 8) -> BoxInput:
    """What the box feeds the model for ``source``: a DICOM (or PNG/JPEG) file decoded as the
    box decodes it (its ``frame``-th of the ``max_frames`` it selects, the box's
    ``[worker] max_frames_per_instance``), or a grey frame in [0, 1] already decoded;
    preprocessed by the box's own preprocessing as ``feed`` declares."""
    if isinstance(source, np.ndarray):
        grey = source
    else:
        limits = limits or LimitsConfig()
        grey = decode_file(Path(source), limits, max_frames).frames[frame]
    x, transform = get_preprocessor(feed.name)(grey, feed.shape, feed.mean, feed.std,
                                               feed.params)
    return BoxInput(x, transform, grey, feed)
