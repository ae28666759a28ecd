"""A YOLO-style detector, as `clinibox convert --model yolo_model:tiny_yolo` imports it.

An anchor-free grid (YOLOX-like, one box per cell): each cell of a stride-8 grid predicts its
box's centre within the cell, its size on a log scale and a lesion logit. ``forward`` is what
the box runs: every cell's candidate *before any NMS*, ``[N, cells, 4 + 1]`` (``cx, cy, w, h``
in model-input pixels and the lesion probability); the box decodes them and runs its own
class-aware NMS (``layout = "yolo"`` in convert.toml). ``raw`` gives the maps training needs.
"""

import torch
from torch import nn

SIZE, STRIDE = 96, 8


class TinyYolo(nn.Module):
    """Five 3×3 conv blocks (stride 8 in all) and a 1×1 prediction of 5 maps per cell."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(*block(1, width, 2), *block(width, 2 * width, 2),
                                      *block(2 * width, 2 * width, 2),
                                      *block(2 * width, 2 * width, 1),
                                      *block(2 * width, 2 * width, 1))
        self.pred = nn.Conv2d(2 * width, 5, 1)
        grid = SIZE // STRIDE
        gy, gx = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        self.register_buffer("gx", gx.float())
        self.register_buffer("gy", gy.float())

    def raw(self, image: torch.Tensor) -> torch.Tensor:
        """The prediction maps [N, 5, grid, grid]: centre offsets, log sizes, lesion logit."""
        return self.pred(self.features(image))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        p = self.raw(image)
        cx = (self.gx + torch.sigmoid(p[:, 0])) * STRIDE
        cy = (self.gy + torch.sigmoid(p[:, 1])) * STRIDE
        w = torch.exp(p[:, 2].clamp(-4, 4)) * STRIDE
        h = torch.exp(p[:, 3].clamp(-4, 4)) * STRIDE
        return torch.stack([cx, cy, w, h, torch.sigmoid(p[:, 4])], dim=-1).flatten(1, 2)


def tiny_yolo() -> TinyYolo:
    """The factory `clinibox convert` calls (``--model yolo_model:tiny_yolo``)."""
    return TinyYolo()
