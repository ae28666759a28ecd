"""Knowledge distillation: train a smaller student from a trained teacher.

The student learns from the teacher's softened outputs (temperature ``T``) and
the hard labels at once, ``(1 - alpha)·hard + alpha·soft``, through the one
training loop (:func:`converters.training.train_epochs`).
"""

from __future__ import annotations

import time

from torch import nn

from converters.prune import count_macs, count_parameters
from converters.spec import ModelSpec
from converters.training import Task, TrainData, train_epochs


def distill(teacher: nn.Module, student: nn.Module, data: TrainData, task: Task,
            spec: ModelSpec, *, epochs: int, temperature: float = 4.0, alpha: float = 0.5,
            lr: float = 3e-3, max_mac_ratio: float | None = None, batch: int = 32,
            seed: int = 0) -> tuple[nn.Module, dict]:
    """Train ``student`` (in place) from ``teacher``; returns it in eval mode and a report.

    Raises ``ValueError`` before any training when ``max_mac_ratio`` is given and
    the student needs more than ``max_mac_ratio`` × the teacher's MACs. The
    report holds teacher/student MACs and parameters, the MAC ratio, the
    settings and the training time in seconds.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, not {temperature}")
    teacher_macs, student_macs = count_macs(teacher, spec), count_macs(student, spec)
    ratio = student_macs / max(1, teacher_macs)
    if max_mac_ratio is not None and ratio > max_mac_ratio:
        raise ValueError(
            f"the student needs {student_macs / 1e6:.1f} M MACs, {ratio:.2f}× the teacher's "
            f"{teacher_macs / 1e6:.1f} M; at most {max_mac_ratio:.2f}× is allowed — choose a "
            f"narrower or shallower student")
    start = time.monotonic()
    student = train_epochs(student, data, task, spec, epochs=epochs, lr=lr, batch=batch,
                           teacher=teacher, temperature=temperature, alpha=alpha, seed=seed,
                           description="distill")
    report = {
        "teacher_macs": teacher_macs, "student_macs": student_macs, "mac_ratio": ratio,
        "teacher_parameters": count_parameters(teacher),
        "student_parameters": count_parameters(student),
        "epochs": epochs, "temperature": temperature, "alpha": alpha,
        "seconds": round(time.monotonic() - start, 2),
    }
    return student, report
