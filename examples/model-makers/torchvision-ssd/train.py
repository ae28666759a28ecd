r"""Train torchvision's SSD on exactly what the box feeds it, then convert its wrapper.

    python train.py             # writes data/ (phantom cases), trains, saves ssd.pt
    clinibox convert --config convert.toml --key ~/clinibox-keys/maker.pem \
        --out packages/torchvision-ssd/1.0.0

Every training image goes through ``converters.box_input``: the box's own decoding (DICOM
windowing) and preprocessing (letterbox to 96 × 96, ``(x - 0.3) / 0.2``), read from
convert.toml; every truth box is put in the model input's pixels by the same geometry, and
torchvision's own losses train on them. The saved weights are the wrapper's (``Candidates``),
which is what the converter loads.
"""

from __future__ import annotations

from pathlib import Path

import torch
from ssd_model import Candidates, ssd

from converters.box_input import BoxFeed, box_input
from phantoms.cases import read_cases, write_cases

HERE = Path(__file__).resolve().parent


def train(folder: Path, epochs: int = 15) -> torch.nn.Module:
    """torchvision's training: the SSD's own classification and box losses, Adam."""
    feed = BoxFeed.from_convert_toml(HERE / "convert.toml")
    images, targets = [], []
    for case in read_cases(folder):
        item = box_input(case.path, feed)  # what the box will feed the model for this file
        images.append(torch.from_numpy(item.x[0]))
        boxes = torch.tensor(item.boxes(case.boxes), dtype=torch.float32).reshape(-1, 4)
        targets.append({"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.long)})
    model = ssd()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images)).tolist()
        for i in range(0, len(order), 16):
            batch = order[i:i + 16]
            losses = model([images[j] for j in batch], [targets[j] for j in batch])
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def main(folder: Path = HERE) -> None:
    """Write the cases, train, save the wrapper's weights ``ssd.pt`` (all in ``folder``)."""
    torch.manual_seed(0)
    write_cases(folder / "data" / "train", seed=11, count=300)
    write_cases(folder / "data" / "check", seed=12, count=160)  # convert.toml's data
    torch.save(Candidates(train(folder / "data" / "train")).state_dict(), folder / "ssd.pt")


if __name__ == "__main__":
    main()
