"""Structured channel pruning (Torch-Pruning) to a MAC budget, and the fine-tune after it.

Whole channels are removed — convolutions and linear layers really get
narrower — so the pruned network is faster, not merely sparse. The layers
whose output channels *are* the model's outputs (the final Linear, the 1×1
output convolutions) are never pruned on their output side, so every output
keeps its shape; that is checked after pruning.

A pruned network no longer matches the constructor of its class (its widths
changed), so it is saved as a whole pickled module (:func:`save_module`) and
read back with :func:`load_module` (``torch.load(path, weights_only=False)``);
its class must still be importable there, and only trusted files may be loaded.
Prune before folding BatchNorm: the BN scales travel with the pruned channels.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn

from converters.spec import ModelSpec
from converters.training import Task, TrainData, name_outputs, train_epochs

IMPORTANCES = ("l2", "l1", "random")
_MAX_RATIO = 0.9  # no layer loses more than 90 % of its channels
_TOLERANCE = 0.03  # the last step prefers landing within 3 % under the budget


def _zeros(spec: ModelSpec) -> torch.Tensor:
    return torch.zeros(spec.input_shape)


def count_macs(model: nn.Module, spec: ModelSpec) -> int:
    """Multiply-accumulates of one forward pass on a ``spec.input_shape`` input."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            macs, _ = tp.utils.count_ops_and_params(model, _zeros(spec))
    finally:
        model.train(was_training)
    return int(macs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable and frozen parameter values."""
    return sum(p.numel() for p in model.parameters())


def torch_latency_ms(model: nn.Module, spec: ModelSpec, threads: int = 1, runs: int = 30
                     ) -> float:
    """Median eager-mode latency (ms) of one ``spec.input_shape`` forward at ``threads``.

    Warms up first; restores torch's thread count and the model's train/eval mode.
    """
    previous, was_training = torch.get_num_threads(), model.training
    x = _zeros(spec)
    torch.set_num_threads(threads)
    model.eval()
    try:
        times = []
        with torch.inference_mode():
            for i in range(runs + max(3, runs // 5)):
                start = time.perf_counter()
                model(x)
                if i >= max(3, runs // 5):
                    times.append((time.perf_counter() - start) * 1000.0)
        return statistics.median(times)
    finally:
        torch.set_num_threads(previous)
        model.train(was_training)


def _output_shapes(model: nn.Module, spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    with torch.no_grad():
        return {k: tuple(v.shape) for k, v in name_outputs(model(_zeros(spec)), spec).items()}


def output_layers(model: nn.Module, spec: ModelSpec) -> list[nn.Module]:
    """The Conv/Linear layers nearest to each model output on the autograd path.

    Their output channels define the outputs' shapes (the classifier Linear, the
    1×1 head convolutions), so pruning must leave their output side alone.
    Found by walking each output's autograd graph back to the first layer met.
    """
    producers: dict[object, nn.Module] = {}
    hooks = [m.register_forward_hook(lambda mod, _i, out: producers.__setitem__(out.grad_fn, mod))
             for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            outputs = name_outputs(model(_zeros(spec).requires_grad_()), spec)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    found: list[nn.Module] = []
    for out in outputs.values():
        stack, seen = [out.grad_fn], set()
        while stack:
            fn = stack.pop()
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            if fn in producers:
                if all(producers[fn] is not m for m in found):
                    found.append(producers[fn])
                continue
            stack.extend(nxt for nxt, _ in fn.next_functions)
    return found


def _importance(name: str) -> tp.importance.Importance:
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "random":
        return tp.importance.RandomImportance()
    raise ValueError(f"importance must be one of {IMPORTANCES}, not {name!r}")


def _layer_macs(model: nn.Module, spec: ModelSpec) -> tuple[int, dict[nn.Module, int]]:
    with torch.no_grad():
        total, _, layers, _ = tp.utils.count_ops_and_params(model.eval(), _zeros(spec),
                                                            layer_wise=True)
    return int(total), {m: int(v or 0) for m, v in layers.items()}


def _candidate(dg: tp.DependencyGraph, group: tp.Group, start: dict[nn.Module, int],
               round_to: int | None, layer_macs: dict[nn.Module, int]
               ) -> tuple[float, int, int, nn.Module] | None:
    """(width fraction after, channels to drop, estimated MAC saving, root) or None."""
    root = group[0].dep.target.module
    if any(isinstance(d.target.module, nn.modules.conv._ConvNd)
           and 1 < d.target.module.groups < d.target.module.out_channels for d, _ in group):
        return None  # grouped (non-depthwise) convolutions: channels cannot be dropped singly
    c, c0 = dg.get_out_channels(root), start.setdefault(root, dg.get_out_channels(root))
    floor = max(round_to or 1, math.ceil(c0 * (1 - _MAX_RATIO)))
    new = (c - 1) // round_to * round_to if round_to else c - max(1, round(c0 / 16))
    if new < floor:
        return None
    saving = 0
    for dep, _ in group:
        m = dep.target.module
        width = (dg.get_out_channels(m) if dg.is_out_channel_pruning_fn(dep.handler)
                 else dg.get_in_channels(m))
        if width:
            saving += layer_macs.get(m, 0) * (c - new) // width
    return new / c0, c - new, saving, root


def _prune_to_budget(model: nn.Module, spec: ModelSpec, budget: float, keep: list[nn.Module],
                     round_to: int | None, importance: str) -> int:
    """Greedy: drop the least important channels of the relatively widest group until the
    MACs fit ``budget``; at the end, prefer a step that lands just under it."""
    dg = tp.DependencyGraph().build_dependency(
        model, _zeros(spec), output_transform=lambda out: list(name_outputs(out, spec).values()),
        verbose=False)
    imp, start = _importance(importance), {}
    macs, layer_macs = _layer_macs(model, spec)
    while macs > budget:
        options = [(cand, group) for group in dg.get_all_groups(ignored_layers=keep)
                   if (cand := _candidate(dg, group, start, round_to, layer_macs)) is not None]
        if not options:
            break
        options.sort(key=lambda o: (-o[0][0], -o[0][2]))
        chosen = options[0]
        if macs - chosen[0][2] < budget * (1 - _TOLERANCE):  # would overshoot: land closer
            close = [o for o in options if budget * (1 - _TOLERANCE) <= macs - o[0][2] <= budget]
            landing = [o for o in options if macs - o[0][2] <= budget]
            chosen = close[0] if close else min(landing, key=lambda o: o[0][2])
        (_, drop, _, root), group = chosen
        order = torch.argsort(imp(group).flatten())[:drop].tolist()
        dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels,
                             order).prune()
        macs, layer_macs = _layer_macs(model, spec)
    return macs


def prune(model: nn.Module, spec: ModelSpec, *, target_mac_ratio: float,
          ignored: list[nn.Module] | None = None, round_to: int | None = 8,
          importance: str = "l2") -> tuple[nn.Module, dict]:
    """Prune channels from a deep copy of ``model`` until MACs ≤ ``target_mac_ratio`` × before.

    Structured pruning on Torch-Pruning's dependency graph (coupled layers,
    residual adds and BatchNorms are pruned together), magnitude importance
    (``l2``, ``l1``) or ``random``. Iterative and greedy: each step drops the
    least important channels of the group that is relatively widest, keeping
    widths multiples of ``round_to`` (8 by default: oneDNN/NPU kernels run odd
    widths barely faster than the original; ``None`` prunes in ~1/16 steps),
    until the budget is met — the last step picks one that lands within a few %
    under it. ``ignored`` layers keep their output channels; by default the
    layers producing the model outputs (:func:`output_layers`). ``ignored`` names
    modules of ``model`` itself (mapped onto the copy). Raises ``ValueError`` for
    a bad ratio or an unreachable budget and ``RuntimeError`` if an output
    changed shape. Returns the pruned copy in eval mode and a report with MACs,
    parameters and 1-thread latency before/after.
    """
    if not 0.0 < target_mac_ratio < 1.0:
        raise ValueError(f"target MAC ratio must be within (0, 1), not {target_mac_ratio}")
    _importance(importance)  # validate before the (slow) copy
    was_training = model.training
    pruned = copy.deepcopy(model).eval()
    model.train(was_training)
    if ignored is None:
        keep = output_layers(pruned, spec)
    else:
        mapping = dict(zip(model.modules(), pruned.modules(), strict=True))
        missing = [m for m in ignored if m not in mapping]
        if missing:
            raise ValueError(f"ignored layers are not part of the model: {missing}")
        keep = [mapping[m] for m in ignored]
    shapes_before = _output_shapes(pruned, spec)
    macs_before, params_before = count_macs(pruned, spec), count_parameters(pruned)
    ms_before = torch_latency_ms(pruned, spec)
    macs = _prune_to_budget(pruned, spec, target_mac_ratio * macs_before, keep, round_to,
                            importance)
    if macs > target_mac_ratio * macs_before:
        raise ValueError(f"could not prune to {target_mac_ratio:.2f}× the MACs: stopped at "
                         f"{macs / macs_before:.2f}× with every prunable layer at its "
                         f"minimum width (too many ignored layers, or round_to too coarse?)")
    shapes_after = _output_shapes(pruned, spec)
    if shapes_after != shapes_before:
        raise RuntimeError(f"pruning changed the output shapes {shapes_before} → "
                           f"{shapes_after}; pass the output layers in `ignored`")
    pruned.zero_grad(set_to_none=True)
    ms_after = torch_latency_ms(pruned, spec)
    report = {
        "target_mac_ratio": target_mac_ratio, "macs_before": macs_before, "macs_after": macs,
        "mac_ratio": macs / macs_before, "parameters_before": params_before,
        "parameters_after": count_parameters(pruned), "ms_before": round(ms_before, 3),
        "ms_after": round(ms_after, 3), "speedup": round(ms_before / ms_after, 3),
        "importance": importance, "round_to": round_to,
    }
    return pruned.eval(), report


def fine_tune(model: nn.Module, data: TrainData, task: Task, spec: ModelSpec, *,
              teacher: nn.Module | None = None, epochs: int = 2, lr: float = 1e-3,
              temperature: float = 4.0, alpha: float = 0.5, batch: int = 32, seed: int = 0
              ) -> nn.Module:
    """Short retraining of a pruned model (in place), guided by ``teacher`` when given."""
    return train_epochs(model, data, task, spec, epochs=epochs, lr=lr, batch=batch,
                        teacher=teacher, temperature=temperature, alpha=alpha, seed=seed,
                        description="fine-tune")


def save_module(model: nn.Module, path: str | Path) -> Path:
    """Save the whole module (architecture + weights) with ``torch.save``; returns the path.

    Needed for pruned networks, whose widths no longer match their factory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.eval(), path)
    return path


def load_module(path: str | Path) -> nn.Module:
    """Load a module saved by :func:`save_module` (a pickle: trusted files only), in eval."""
    model = torch.load(Path(path), weights_only=False, map_location="cpu")
    if not isinstance(model, nn.Module):
        raise ValueError(f"{path} does not hold a whole torch module (got {type(model).__name__})")
    return model.eval()
