"""Put a federated run's head into the source model, for the converter's ordinary pipeline
(issue 60, decisions 0056 and 0057).

A run (``central/federated/server_app.py``) leaves a folder with ``head.npy`` (the
aggregated head: [C weights, bias]) and ``run.json`` (its record,
``clinibox_common/contracts/federated.py``), which names the head it started from. That
head is the package's own ``cam``: one 1×1 convolution of the source model with one output
channel. :func:`apply_round` finds the convolution whose numbers are the starting head's,
refuses when none or several are, and writes the run's head in its place. Everything after
it is the ordinary conversion: the export, INT8, the gate against the hospital's
validation set, the floors, the signature of a person, the rollout with its canaries.
:func:`provenance` is what the manifest and the report say of the run.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clinibox_common.contracts.federated import FederatedRun
from clinibox_common.contracts.run_claim import CLAIM_FILE, holds_claim
from clinibox_common.errors import EXIT_USAGE, CliniboxError

#: how close a convolution's numbers must be to the starting head (float32 round trips)
MATCH_TOLERANCE = 1e-5


class RunRefused(CliniboxError, ValueError):
    """The federated run cannot be put into this source model."""

    kind = "federated run refused"
    exit_status = EXIT_USAGE


def read_run(folder: Path) -> tuple[FederatedRun, np.ndarray]:
    """The run's record and head; RunRefused when the folder is not a finished run."""
    record_path, head_path = folder / "run.json", folder / "head.npy"
    if not record_path.is_file() or not head_path.is_file():
        raise RunRefused(f"{folder}: not a federated run's folder (it needs run.json and "
                           "head.npy, which the hospital's ServerApp writes when its last "
                           "round is aggregated)")
    try:
        record = FederatedRun.read(record_path)
        head = np.load(head_path, allow_pickle=False).astype(np.float64).reshape(-1)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise RunRefused(f"{folder}: the run's record or head cannot be read: {exc}") from None
    start = np.asarray(record.initial_head, np.float64)
    if start.size < 2 or start.size != head.size:
        raise RunRefused(f"{folder}: the record names no starting head of the head's size "
                           f"({head.size} numbers); runs before the record kept it cannot be "
                           "packaged")
    if not np.isfinite(head).all():
        raise RunRefused(f"{folder}: the run's head holds numbers that are not finite")
    if record.run_id <= 0 or not holds_claim(folder, record.run_id):
        raise RunRefused(f"{folder}: the folder's claim ({CLAIM_FILE}) does not name the run "
                           "its record names, so the head may not be the run the hospital "
                           "started: run it again with clinibox central federated-run")
    return record, head


def _candidates(module: nn.Module, start: np.ndarray) -> list[tuple[str, nn.Conv2d]]:
    """The 1×1, one-output convolutions whose weights and bias are ``start``."""
    found = []
    for name, layer in module.named_modules():
        if not isinstance(layer, nn.Conv2d) or layer.bias is None:
            continue
        if layer.out_channels != 1 or tuple(layer.kernel_size) != (1, 1) or \
                layer.in_channels != start.size - 1:
            continue
        numbers = np.concatenate([layer.weight.detach().double().reshape(-1).numpy(),
                                  layer.bias.detach().double().reshape(-1).numpy()])
        if np.allclose(numbers, start, atol=MATCH_TOLERANCE, rtol=0.0):
            found.append((name, layer))
    return found


def apply_round(module: nn.Module, record: FederatedRun, head: np.ndarray) -> str:
    """Write ``head`` into the convolution of ``module`` that holds the run's starting head;
    the convolution's name."""
    found = _candidates(module, np.asarray(record.initial_head, np.float64))
    if not found:
        raise RunRefused("no 1×1 convolution of the source model holds the head the run "
                           f"started from (the run fine-tuned {record.package!r}): convert "
                           "the source of the package the boxes trained on")
    if len(found) > 1:
        names = ", ".join(name for name, _ in found)
        raise RunRefused(f"several convolutions hold the head the run started from ({names}); "
                           "the converter cannot tell which one the boxes trained")
    name, layer = found[0]
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(head[:-1], dtype=layer.weight.dtype)
                           .reshape(layer.weight.shape))
        layer.bias.copy_(torch.as_tensor(head[-1:], dtype=layer.bias.dtype))
    return name


def provenance(record: FederatedRun, layer: str) -> dict[str, Any]:
    """What the manifest's ``provenance.federated`` says of the run: rounds, boxes, cases,
    the protection and the privacy budget (boxes counted, never named)."""
    kept = asdict(record)
    kept.pop("initial_head", None)
    return {**kept, "layer": layer}
