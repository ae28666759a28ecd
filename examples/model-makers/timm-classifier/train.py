r"""Train timm's MobileNetV3 classifier on exactly what the box feeds it, then convert it.

    python train.py             # writes data/ (phantom cases), trains, saves classifier.pt
    clinibox convert --config convert.toml --key ~/clinibox-keys/maker.pem \
        --out packages/lesion-mobilenet/1.0.0

Every training image goes through ``converters.box_input``: the box's own decoding (DICOM
windowing) and preprocessing (letterbox to 96 × 96, ``(x - 0.3) / 0.2``, the grey plane in 3
channels), read from convert.toml; the label is the file's own (1: a lesion is drawn).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from classifier_model import lesion_mobilenet
from torch.nn import functional as F

from converters.box_input import BoxFeed, box_input
from phantoms.cases import read_cases, write_cases

HERE = Path(__file__).resolve().parent


def train(folder: Path, epochs: int = 8) -> torch.nn.Module:
    """AdamW on the cross-entropy of the two classes, half the batches mirrored."""
    feed = BoxFeed.from_convert_toml(HERE / "convert.toml")
    cases = read_cases(folder)
    x = torch.from_numpy(np.stack([box_input(case.path, feed).x[0] for case in cases]))
    y = torch.tensor([case.label for case in cases])
    model = lesion_mobilenet()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=1e-4)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(order) - 1, 16):  # never a batch of one (batch norm)
            idx = order[i:i + 16]
            batch = x[idx].flip(-1) if torch.rand(()) < 0.5 else x[idx]
            loss = F.cross_entropy(model(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def main(folder: Path = HERE) -> None:
    """Write the cases, train, save ``classifier.pt`` (all in ``folder``)."""
    torch.manual_seed(0)
    write_cases(folder / "data" / "train", seed=11, count=240)
    write_cases(folder / "data" / "check", seed=12, count=120)  # convert.toml's data
    torch.save(train(folder / "data" / "train").state_dict(), folder / "classifier.pt")


if __name__ == "__main__":
    main()
