"""The one training loop of the converter: plain training, distillation and fine-tuning.

A :class:`Task` says how to score a model's named outputs against the targets
(hard loss), against a teacher's outputs (soft loss) and how to augment a
batch; :func:`train_epochs` runs AdamW + OneCycle over a :class:`TrainData`,
in bf16 autocast where the CPU supports it, optionally guided by a teacher.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clinibox_common.errors import CliniboxError
from converters.progress import progress
from converters.spec import ModelSpec


@dataclass
class TrainData:
    """Training inputs and per-sample targets (everything indexed on axis 0)."""

    x: np.ndarray  # float32 [N, C, H, W], already normalised
    targets: dict[str, np.ndarray]  # per-sample arrays with leading N; classification: "label"

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(f"training inputs must be N,C,H,W; got shape {self.x.shape}")
        for name, value in self.targets.items():
            if len(value) != len(self.x):
                raise ValueError(f"target {name!r} has {len(value)} rows, inputs have "
                                 f"{len(self.x)}")

    def __len__(self) -> int:
        return len(self.x)


class Task(Protocol):
    """How a model's outputs are trained: hard loss, soft (teacher) loss, augmentation."""

    def hard_loss(self, outputs: dict[str, torch.Tensor],
                  targets: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def soft_loss(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                  temperature: float) -> torch.Tensor: ...

    def augment(self, x: torch.Tensor, targets: dict[str, torch.Tensor],
                rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


class ClassificationTask:
    """Image-level classification on the spec's score output, ``targets["label"]`` int64 [N].

    softmax: cross-entropy hard loss, ``KL(softmax(t/T) ‖ softmax(s/T))·T²`` soft loss;
    sigmoid: BCE-with-logits hard loss (one-vs-rest targets from the spec), BCE
    against ``sigmoid(t/T)`` times ``T²`` soft loss. Augmentation: horizontal flip
    of half the batches (labels are flip-invariant).
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.output = spec.score_output

    def _logits(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return outputs[self.output].float().reshape(len(outputs[self.output]), -1)

    def hard_loss(self, outputs: dict[str, torch.Tensor],
                  targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """Loss of the score output against the integer labels."""
        logits, labels = self._logits(outputs), targets["label"].long().reshape(-1)
        if self.spec.activation == "softmax":
            return F.cross_entropy(logits, labels)
        k = logits.shape[1]
        onehot = (labels[:, None] == 1) if k == 1 else (labels[:, None] == torch.arange(k))
        return F.binary_cross_entropy_with_logits(logits, onehot.float())

    def soft_loss(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                  temperature: float) -> torch.Tensor:
        """Distillation loss between the student's and teacher's score outputs at ``T``."""
        s, t = self._logits(student) / temperature, self._logits(teacher).detach() / temperature
        if self.spec.activation == "softmax":
            loss = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="batchmean",
                            log_target=True)
        else:
            loss = F.binary_cross_entropy_with_logits(s, torch.sigmoid(t))
        return loss * temperature**2

    def augment(self, x: torch.Tensor, targets: dict[str, torch.Tensor],
                rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Flip the batch horizontally with probability 0.5."""
        return (x.flip(-1), targets) if rng.random() < 0.5 else (x, targets)


def model_outputs(model: nn.Module, x: torch.Tensor, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """Run ``model`` and name its outputs after ``spec.output_names``.

    A tensor (one output), a tuple/list in the spec's order, or a dict holding
    every named output are accepted; anything else raises a ``ValueError`` that
    says what was expected and what came back.
    """
    return name_outputs(model(x), spec)


def name_outputs(out: object, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The naming half of :func:`model_outputs`, for outputs already computed."""
    names = list(spec.output_names)
    if isinstance(out, torch.Tensor):
        if len(names) != 1:
            raise ValueError(f"the model returned 1 output, one tensor but the spec names "
                             f"{len(names)} outputs {names}; return a tuple or dict of them")
        return {names[0]: out}
    if isinstance(out, (tuple, list)):
        if len(out) != len(names):
            raise ValueError(f"the model returned {len(out)} outputs but the spec names "
                             f"{len(names)}: {names}")
        return dict(zip(names, out, strict=True))
    if isinstance(out, Mapping):
        missing = [n for n in names if n not in out]
        if missing:
            raise ValueError(f"the model's outputs {sorted(out)} lack {missing} named in the "
                             f"spec (spec outputs: {names})")
        return {n: out[n] for n in names}
    raise ValueError(f"the model returned {type(out).__name__}; expected a tensor, a tuple or "
                     f"a dict of tensors named {names}")


class TrainingDiverged(CliniboxError, RuntimeError):
    """Training produced a non-finite loss; the model would be garbage."""

    kind = "training diverged"


def bf16_supported() -> bool:
    """True where CPU bf16 autocast runs natively (AVX512-BF16 / AMX)."""
    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def train_epochs(model: nn.Module, data: TrainData, task: Task, spec: ModelSpec, *, epochs: int,
                 lr: float = 3e-3, batch: int = 32, teacher: nn.Module | None = None,
                 temperature: float = 4.0, alpha: float = 0.5, seed: int = 0,
                 description: str = "train") -> nn.Module:
    """Train ``model`` in place for ``epochs`` and return it in eval mode.

    AdamW + OneCycle, bf16 autocast on CPUs that support it. Tensors stay in the
    contiguous (NCHW) layout: with torch 2.13 on an AMD EPYC with AVX-512 (Zen 4),
    channels-last convolution backward corrupted the heap (a crash in the resnet
    chain, NaN losses in the demo training); NCHW is right on every CPU measured.
    A non-finite loss stops training with ``TrainingDiverged``. With
    a ``teacher`` (kept in eval, no grad, same autocast) the loss is
    ``(1 - alpha)·hard + alpha·soft``. A progress bar advances per step and
    shows the running loss.
    """
    if epochs < 1 or len(data) == 0:
        raise ValueError(f"nothing to train: {epochs} epochs over {len(data)} samples")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within [0, 1], not {alpha}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    bf16 = bf16_supported()
    x_all = torch.from_numpy(np.ascontiguousarray(data.x, dtype=np.float32))
    y_all = {k: torch.from_numpy(np.asarray(v)) for k, v in data.targets.items()}
    n = len(data)
    per_epoch = math.ceil(n / batch)
    if n > batch and n % batch == 1:
        per_epoch -= 1  # a last batch of one sample breaks BatchNorm; drop it
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * per_epoch,
                                                pct_start=0.15)
    teacher_was_training = teacher.training if teacher is not None else False
    if teacher is not None:
        teacher.eval()
    try:
        with progress(description, total=epochs * per_epoch) as bar:
            for epoch in range(epochs):
                model.train()
                order, total, seen = rng.permutation(n), 0.0, 0
                for step in range(per_epoch):
                    idx = torch.from_numpy(order[step * batch : (step + 1) * batch])
                    x, y = task.augment(x_all[idx], {k: v[idx] for k, v in y_all.items()}, rng)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        out = {k: v.float() for k, v in model_outputs(model, x, spec).items()}
                        loss = task.hard_loss(out, y)
                        if teacher is not None:
                            with torch.no_grad():
                                ref = {k: v.float()
                                       for k, v in model_outputs(teacher, x, spec).items()}
                            loss = (1 - alpha) * loss + alpha * task.soft_loss(out, ref,
                                                                               temperature)
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(
                            f"{description}: the loss is not finite at epoch {epoch + 1}, "
                            f"step {step + 1}; training diverged (check the data for NaN or "
                            "infinite values, or lower the learning rate)")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += loss.item() * len(idx)
                    seen += len(idx)
                    bar.note(f"epoch {epoch + 1}/{epochs} loss {total / seen:.4f}")
                    bar.advance(1)
    finally:
        if teacher is not None and teacher_was_training:
            teacher.train()
    return model.to(memory_format=torch.contiguous_format).eval()
