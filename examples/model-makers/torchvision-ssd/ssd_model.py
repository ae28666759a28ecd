"""torchvision's SSD, wrapped for the box: `clinibox convert --model ssd_model:torchvision_ssd`.

torchvision's own ``SSD`` (its head, default boxes, box coder, hard-negative-mining loss and
postprocessing) on a small two-level backbone, so that it learns in seconds on a CPU. Any
torchvision detector is brought the same way: train it as torchvision trains it, then wrap it
so that ``forward`` returns every candidate *before* torchvision's NMS (decoded boxes
``x0, y0, x1, y1`` in input pixels and each class's logit, background first); the box runs
the NMS itself (``layout = "boxes_scores"`` in convert.toml). torchvision's NMS and its
data-dependent shapes cannot be exported; the candidates can.
"""

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.ops import boxes as box_ops

SIZE = 96


class Backbone(nn.Module):
    """Two feature levels (strides 4 and 8) of 32 channels, as an FPN would give."""

    out_channels = 32

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.fine = nn.Sequential(*block(1, 16, 2), *block(16, 32, 2), *block(32, 32, 1))
        self.coarse = nn.Sequential(*block(32, 32, 2), *block(32, 32, 1))

    def forward(self, x: torch.Tensor) -> OrderedDict:
        fine = self.fine(x)
        return OrderedDict([("0", fine), ("1", self.coarse(fine))])


def ssd() -> SSD:
    """torchvision's SSD for one lesion class (and its background). It is fed what the box
    feeds (``image_mean`` 0 and ``image_std`` 1, its own resize a no-op at 96 × 96: the box
    has already letterboxed and normalised), its postprocessing the box head's: score > 0.3,
    NMS 0.4, at most 5."""
    anchors = DefaultBoxGenerator([[], []], scales=[0.06, 0.11, 0.18], steps=[4, 8])
    head = SSDHead([32, 32], anchors.num_anchors_per_location(), 2)
    return SSD(Backbone(), anchors, (SIZE, SIZE), 2, image_mean=[0.0], image_std=[1.0],
               head=head, score_thresh=0.3, nms_thresh=0.4, detections_per_img=5,
               topk_candidates=5000)


class Candidates(nn.Module):
    """The SSD before its NMS: every default box decoded and clipped to the input (as its
    postprocessing does), and its class logits (background first)."""

    def __init__(self, detector: SSD) -> None:
        super().__init__()
        self.detector = detector.eval()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.detector
        features = list(d.backbone(image).values())
        head = d.head(features)
        anchors = d.anchor_generator(ImageList(image, [(SIZE, SIZE)]), features)[0]
        n = image.shape[0]
        boxes = d.box_coder.decode_single(head["bbox_regression"].reshape(-1, 4),
                                          anchors.repeat(n, 1))
        boxes = box_ops.clip_boxes_to_image(boxes, (SIZE, SIZE))
        return boxes.reshape(n, -1, 4), head["cls_logits"]


def torchvision_ssd() -> Candidates:
    """The factory `clinibox convert` calls: the wrapper, its weights from ``ssd.pt``."""
    return Candidates(ssd())
