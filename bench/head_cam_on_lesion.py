"""Does a classifier's heatmap peak on the lesion, whatever its head? The share, per head style.

Small classifiers with the heads hospitals' models end in
(``tests/conversion/head_models.py``: ResNet-style pooling + linear, timm's
MobileNetV3 and EfficientNet heads, torchvision's MobileNetV3 MLP head) are
trained briefly on disc phantoms (``tests/conversion/tiny_models.shapes_with_masks``),
several seeds each; on held-out phantoms holding a disc, the heatmap as the box
draws it peaks inside the disc's box or not (``converters.head_cam.peak_on_lesion``).
Two maps are measured where the head is not pooling + linear:

* ``grad_cam``: the converter's ``cam`` (Grad-CAM computed in the graph,
  ``converters.head_cam.GradCamModel``; for pooling + linear the exact CAM);
* ``per_position``: the whole head applied at each position of the last maps.

    .venv/bin/python -m bench.head_cam_on_lesion [--seeds 5] [--images 400] [--epochs 6]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import figure, machine, save
from converters.head_cam import find_pooled_head, peak_on_lesion, per_position_cam, wrap
from tests.conversion.head_models import STYLES
from tests.conversion.tiny_models import as_input, shapes_with_masks, train_quickly

MAPS = ("grad_cam", "per_position")


def measure(style: str, seed: int, images: int, epochs: int) -> dict:
    """One style, one training seed: accuracy and the lesions whose peak lies on them."""
    train, labels, _ = shapes_with_masks(240, 64, 2, seed=100 + seed)
    torch.manual_seed(seed)
    model = train_quickly(STYLES[style](), as_input(train, 1), labels, epochs=epochs, seed=seed)
    test, truth, masks = shapes_with_masks(images, 64, 2, seed=900 + seed)
    x = torch.from_numpy(as_input(test, 1))
    head = find_pooled_head(model, x[:2], lambda r: r).head
    assert head is not None, style
    wrapper = wrap(model, head, ("logits",))
    maps: list[torch.Tensor] = []
    layer = model.get_submodule(head.feature_path)
    handle = layer.register_forward_hook(lambda _m, _a, out: maps.append(out))
    with torch.no_grad():
        out = wrapper(x)
    handle.remove()
    with torch.no_grad():
        positions = per_position_cam(model, head, maps[-1]).numpy()
    cams = {"grad_cam": out["cam"].numpy(), "per_position": positions}
    lesions = np.nonzero(truth == 1)[0]
    return {"accuracy": float((out["logits"].argmax(1).numpy() == truth).mean()),
            "lesions": len(lesions),
            **{name: int(sum(peak_on_lesion(cam[i], masks[i]) for i in lesions))
               for name, cam in cams.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    results: dict[str, dict] = {}
    for style in STYLES:
        runs = [measure(style, seed, args.images, args.epochs) for seed in range(args.seeds)]
        lesions = sum(r["lesions"] for r in runs)
        results[style] = {"lesions": lesions, "runs": runs,
                          **{f"{name}_share": round(sum(r[name] for r in runs) / lesions, 4)
                             for name in MAPS}}
    details = {"machine": machine("torch"), "seconds": round(time.perf_counter() - started, 1),
               "seeds": args.seeds, "images_per_seed": args.images, "epochs": args.epochs,
               "styles": results}
    save("head_cam_on_lesion", details, {
        f"{style}_{name}_on_lesion": figure(r[f"{name}_share"], "share")
        for style, r in results.items() for name in MAPS})


if __name__ == "__main__":
    main()
