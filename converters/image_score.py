"""The image-level score the converter adds to a model that has none.

The box takes a package's finding probability from one output. A segmenter or a
candidate-list detector declared without ``score_output`` gets ``finding_logit``
[N, 1] from a wrapper: :class:`MaskScore` (the most probable lesion pixel) or
:class:`BoxScore` (the best lesion candidate's score, as the box computes it), so
that the converter can verify, set the operating threshold and pick golden cases as
for a classifier. :func:`with_image_score` decides which, from ``convert.toml``'s
heads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clinibox_common.contracts.box_lists import DEFAULTS
from converters.box_lists import box_list_head, head_outputs
from converters.cam import named_outputs
from converters.config import ConvertConfig, ConvertConfigError
from converters.source import SourceModel

#: the image-level score the converter adds to a segmentation-only model
MASK_SCORE_OUTPUT = "finding_logit"


class MaskScore(nn.Module):
    """A segmentation model with an image-level score beside its outputs.

    ``finding_logit`` [N, 1] is the logit of the most probable lesion pixel of
    the mask output (every channel but the head's negative label, after the
    head's activation): what the box takes as the finding probability of a
    package with a segmentation head only, so the converter can verify, set
    the operating threshold and pick golden cases as for a classifier.
    """

    def __init__(self, model: nn.Module, output_names: tuple[str, ...], head: dict[str, Any]
                 ) -> None:
        super().__init__()
        self.model = model
        self.output_names = tuple(output_names)
        self.mask_output = str(head["output"])
        self.activation = str(head.get("activation", "sigmoid"))
        self.labels = tuple(head.get("labels", ()))
        self.negative_label = (head.get("background") or head.get("negative_label")
                               or "background")

    #: read by converters.spec_probe.spec_from_config
    added_outputs = (MASK_SCORE_OUTPUT,)
    derived_score = MASK_SCORE_OUTPUT

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image [N, C, H, W] → the model's outputs and ``finding_logit`` [N, 1]."""
        outputs = named_outputs(self.model(image), self.output_names)
        maps = outputs[self.mask_output]
        keep = [i for i, label in enumerate(self.labels) if label != self.negative_label]
        if len(self.labels) != maps.shape[1] or not keep:
            keep = list(range(maps.shape[1]))
        if self.activation == "sigmoid":  # monotonic: the largest logit is the largest p
            logit = maps[:, keep].amax(dim=(1, 2, 3))
        else:
            probs = torch.softmax(maps, dim=1) if self.activation == "softmax" else maps
            p = probs[:, keep].amax(dim=(1, 2, 3)).clamp(1e-6, 1 - 1e-6)
            logit = torch.log(p) - torch.log1p(-p)
        return {**outputs, MASK_SCORE_OUTPUT: logit[:, None]}


class BoxScore(nn.Module):
    """A candidate-list detector with an image-level score beside its outputs.

    ``finding_logit`` [N, 1] is the logit of the best lesion candidate's score
    (after the head's activation, times its objectness, background columns
    left out), the finding probability the box computes from the same outputs.
    """

    #: read by converters.spec_probe.spec_from_config
    added_outputs = (MASK_SCORE_OUTPUT,)
    derived_score = MASK_SCORE_OUTPUT

    def __init__(self, model: nn.Module, output_names: tuple[str, ...],
                 head: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.output_names = tuple(output_names)
        self.head = {**DEFAULTS, **head}
        labels = list(self.head.get("labels", []))
        #: the score columns' names (converters.spec_probe: what class_names may list)
        self.box_labels = tuple(labels)
        # background columns count as 0, as on the box (a float mask: no index tensor for
        # INT8 observers to watch)
        self.register_buffer("lesion_columns", torch.tensor(
            [0.0 if label in self.head["background"] else 1.0 for label in labels]))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image [N, C, H, W] → the model's outputs and ``finding_logit`` [N, 1]."""
        outputs = named_outputs(self.model(image), self.output_names)
        h = self.head
        objectness = None
        if h["layout"] == "yolo":
            rows = outputs[h["output"]]
            if h["transposed"]:
                rows = rows.transpose(1, 2)
            extra = 1 if h["objectness"] else 0
            scores = rows[:, :, 4 + extra:]
            objectness = rows[:, :, 4] if extra else None
        else:
            scores = outputs[h["scores_output"]]
        if h["activation"] == "sigmoid":
            scores = torch.sigmoid(scores)
        elif h["activation"] == "softmax":
            scores = torch.softmax(scores, dim=2)
        if objectness is not None:
            obj = objectness if h["activation"] == "none" else torch.sigmoid(objectness)
            scores = scores * obj[:, :, None]
        p = (scores * self.lesion_columns).amax(dim=(1, 2)).clamp(1e-6, 1 - 1e-6)
        return {**outputs, MASK_SCORE_OUTPUT: (torch.log(p) - torch.log1p(-p))[:, None]}


def with_image_score(source: SourceModel, config: ConvertConfig
                     ) -> tuple[SourceModel, dict[str, str]]:
    """``source`` wrapped in :class:`BoxScore` (a candidate-list detection head) or
    :class:`MaskScore` (a segmentation head only) when ``config`` names no score output,
    with what the added output means; else ``source`` as it is and no meaning."""
    if config.score_output or isinstance(source.module, (BoxScore, MaskScore)):
        return source, {}
    kinds = {h.get("kind") for h in config.heads}
    box_head = box_list_head(config.heads)
    if box_head is not None:
        names = tuple(config.outputs) or head_outputs(box_head)
        module: nn.Module = BoxScore(_eager(source, "a detector"), names, box_head)
        meaning = ("logit of the most probable lesion candidate's score (the image-level "
                   "score, added by the converter)")
    elif "segmentation" in kinds and not kinds & {"classification", "detection"}:
        head = next(h for h in config.heads if h.get("kind") == "segmentation")
        names = tuple(config.outputs) or (str(head.get("output", "")),)
        module = _eager(source, "a segmentation model")
        if head.get("output") not in names:
            raise ConvertConfigError(f"the segmentation head's output {head.get('output')!r} "
                                     f"is not among the outputs {list(names)}")
        module = MaskScore(module, names, head)
        meaning = (f"logit of the most probable lesion pixel of {head['output']!r} (the "
                   "image-level score, added by the converter)")
    else:
        return source, {}
    return (SourceModel(module.eval(), source.kind, source.reference, source.files),
            {MASK_SCORE_OUTPUT: meaning})


def _eager(source: SourceModel, what: str) -> nn.Module:
    """The source's eager module; ConvertConfigError for a program or a scripted model."""
    if source.program is not None or not source.trainable:
        raise ConvertConfigError(
            f"{what} without --score-output must be an eager module (MODULE:FACTORY or a "
            f"pickled module), not {source.kind}: the converter adds its image-level score "
            f"{MASK_SCORE_OUTPUT!r}")
    return source.module
