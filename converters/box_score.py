"""The image-level score of a detector that outputs candidate boxes (converters/box_lists.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from converters.cam import named_outputs
from converters.source import MASK_SCORE_OUTPUT
from firmware_app.contracts.box_lists import DEFAULTS


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
