r"""Train the YOLO-style detector on exactly what the box feeds it, then convert it.

    python train.py             # writes data/ (phantom cases), trains, saves yolo.pt
    clinibox convert --config convert.toml --key ~/clinibox-keys/maker.pem \
        --out packages/tiny-yolo/1.0.0

Every training image goes through ``converters.box_input``: the box's own decoding (DICOM
windowing) and preprocessing (letterbox to 96 × 96, ``(x - 0.3) / 0.2``), read from
convert.toml; every truth box is put in the model input's pixels by the same geometry.
Replace ``phantoms.cases`` with your own labelled files (DICOM + boxes in their pixels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from yolo_model import SIZE, STRIDE, tiny_yolo

from converters.box_input import BoxFeed, box_input
from phantoms.cases import read_cases, write_cases

HERE = Path(__file__).resolve().parent


def targets(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each lesion's cell (the one holding its centre) and its box as that cell predicts it:
    centre offset in the cell, log size in cells. ``boxes``: x0, y0, x1, y1 in input pixels."""
    grid = SIZE // STRIDE
    hit = np.zeros((grid, grid), np.float32)
    where = np.zeros((4, grid, grid), np.float32)
    for x0, y0, x1, y1 in boxes:
        cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
        gx, gy = min(grid - 1, int(cx)), min(grid - 1, int(cy))
        hit[gy, gx] = 1
        where[:, gy, gx] = (cx - gx, cy - gy, np.log((x1 - x0) / STRIDE),
                            np.log((y1 - y0) / STRIDE))
    return hit, where


def train(folder: Path, epochs: int = 30) -> torch.nn.Module:
    """Adam on the lesion cells' BCE (positives weighted 20×) and their boxes' smooth L1."""
    feed = BoxFeed.from_convert_toml(HERE / "convert.toml")
    xs, hits, wheres = [], [], []
    for case in read_cases(folder):
        item = box_input(case.path, feed)  # what the box will feed the model for this file
        hit, where = targets(item.boxes(case.boxes))
        xs.append(item.x[0])
        hits.append(hit)
        wheres.append(where)
    x, hit, where = (torch.from_numpy(np.stack(a)) for a in (xs, hits, wheres))
    model = tiny_yolo()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(order), 32):
            idx = order[i:i + 32]
            p = model.raw(x[idx])
            loss = F.binary_cross_entropy_with_logits(p[:, 4], hit[idx],
                                                      pos_weight=torch.tensor(20.0))
            cells = hit[idx] > 0
            if cells.any():
                box = torch.stack([torch.sigmoid(p[:, 0]), torch.sigmoid(p[:, 1]), p[:, 2],
                                   p[:, 3]], 1).permute(0, 2, 3, 1)[cells]
                loss = loss + 2 * F.smooth_l1_loss(box, where[idx].permute(0, 2, 3, 1)[cells])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def main(folder: Path = HERE) -> None:
    """Write the cases, train, save ``yolo.pt`` (all in ``folder``)."""
    torch.manual_seed(0)
    write_cases(folder / "data" / "train", seed=11, count=300)
    write_cases(folder / "data" / "check", seed=12, count=160)  # convert.toml's data
    model = train(folder / "data" / "train")
    torch.save(model.state_dict(), folder / "yolo.pt")


if __name__ == "__main__":
    main()
