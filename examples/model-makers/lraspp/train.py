r"""Train torchvision's LR-ASPP on exactly what the box feeds it, then convert it.

    python train.py             # writes data/ (phantom cases), trains, saves lraspp.pt
    clinibox convert --config convert.toml --key ~/clinibox-keys/maker.pem \
        --out packages/lesion-lraspp/1.0.0

Every training image goes through ``converters.box_input``: the box's own decoding (DICOM
windowing) and preprocessing (letterbox to 96 × 96, ``(x - 0.3) / 0.2``, the grey plane in 3
channels), read from convert.toml; every truth mask is put in the input's pixels by the same
geometry (``item.mask``), its lesion pixels class 1 and the rest (the padding too) class 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lraspp_model import lesion_lraspp
from torch.nn import functional as F

from converters.box_input import BoxFeed, box_input
from phantoms.cases import read_cases, write_cases

HERE = Path(__file__).resolve().parent


def train(folder: Path, epochs: int = 6) -> torch.nn.Module:
    """Adam on the per-pixel cross-entropy, lesion pixels weighted 10×."""
    feed = BoxFeed.from_convert_toml(HERE / "convert.toml")
    xs, ys = [], []
    for case in read_cases(folder):
        item = box_input(case.path, feed)  # what the box will feed the model for this file
        xs.append(item.x[0])
        ys.append(item.mask(case.mask).astype(np.int64))  # 0 background, 1 lesion
    x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
    model = lesion_lraspp()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    weight = torch.tensor([1.0, 10.0])
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(order) - 1, 16):  # never a batch of one (batch norm)
            idx = order[i:i + 16]
            loss = F.cross_entropy(model(x[idx])["out"], y[idx], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return settle_batch_norm(model, x)


def settle_batch_norm(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """The batch-norm statistics over all the training inputs, then eval mode. torchvision's
    MobileNetV3 keeps them with momentum 0.01: after a short training they are still near
    their initial values and the model in eval mode answers the same on every image."""
    for layer in model.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.reset_running_stats()
            layer.momentum = None  # a plain average over the batches below
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 32):
            model(x[i:i + 32])
    return model.eval()


def main(folder: Path = HERE) -> None:
    """Write the cases, train, save ``lraspp.pt`` (all in ``folder``)."""
    torch.manual_seed(0)
    write_cases(folder / "data" / "train", seed=11, count=240)
    write_cases(folder / "data" / "check", seed=12, count=120)  # convert.toml's data
    torch.save(train(folder / "data" / "train").state_dict(), folder / "lraspp.pt")


if __name__ == "__main__":
    main()
