"""The converter's settings: command-line options, optionally read from ``convert.toml``.

Every option has one name: ``--input-shape`` on the command line is
``input_shape`` in the TOML file. Options given on the command line win over
the file. Unknown keys are refused with the key named. Relative paths are
taken from the current directory, as on the command line.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinibox_common.settings_loader import ConfigError, read_toml, suggest
from converters.formats import parse_targets

PATH_KEYS = ("weights", "labels", "out", "key", "teacher_weights", "extra_validation",
             "federated_run")


class ConvertConfigError(ConfigError):
    """A setting the converter cannot use, with the key named."""


@dataclass
class ConvertConfig:
    """Everything one conversion needs; see ``clinibox convert --help`` for each key."""

    # the source model
    model: str = ""
    weights: Path | None = None
    factory_kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, int, int] | None = None
    outputs: list[str] = field(default_factory=list)
    #: each output's meaning in words, by output name (the manifest's ``outputs[].meaning``;
    #: default: "score output (sigmoid)" for the score output, "output" for the others)
    output_meanings: dict[str, str] = field(default_factory=dict)
    score_output: str = ""
    #: ``sigmoid`` or ``softmax``: how the score output's logits become probabilities
    #: (default: softmax for more than one column, else sigmoid)
    activation: str = ""
    class_names: list[str] = field(default_factory=list)
    negative_label: str | None = None
    # data
    data: str = ""
    labels: Path | None = None
    #: the data's split fractions by name (``train``, ``calibration``, ``validation``;
    #: default: 0.3 calibration and 0.7 validation, or 0.6/0.1/0.3 with training when a
    #: step trains); rows with a ``split`` column in the labels CSV keep theirs
    split: dict[str, float] = field(default_factory=dict)
    #: the most calibration images INT8 quantisation and the INT8 guard band use
    calibration_size: int = 256
    #: the seed of the shuffle that splits rows without a ``split`` column
    seed: int = 0
    #: a folder of cases exported by ``clinibox export-disagreements`` (converters/feedback.py):
    #: appended to the validation split only
    extra_validation: Path | None = None
    #: a federated run's folder (``head.npy`` and ``run.json``, decision 0056): its head
    #: replaces the source's ``cam`` before the export (converters/federated_round.py)
    federated_run: Path | None = None
    # how the box feeds and reads the model
    mean: float = 0.0
    std: float = 1.0
    #: the box's preprocessor of each frame (a name of ``imaging/preprocess.py``; the
    #: manifest's ``preprocessing.name``)
    preprocessing: str = "letterbox_grey"
    #: its parameters, by name (the manifest's ``preprocessing.params``)
    preprocessing_params: dict[str, Any] = field(default_factory=dict)
    #: the box's postprocessor of the outputs (a name of ``inference/postprocess.py``:
    #: ``classification``, ``heads``; the manifest's ``postprocessing.name``)
    postprocessing: str = "classification"
    #: its parameters, by name (a classifier's output, activation and labels are filled in)
    postprocessing_params: dict[str, Any] = field(default_factory=dict)
    #: the model's output heads (``clinibox_common/contracts/heads.py``); empty: none declared
    heads: list[dict[str, Any]] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)
    #: operating thresholds given, not measured: ``finding`` (else the highest one keeping
    #: ``target_sensitivity`` on validation), ``alert`` (else where the source model has
    #: 99 % specificity on validation, above the finding one), ``box`` (probabilities 0 … 1)
    thresholds: dict[str, float] = field(default_factory=dict)
    #: what the model does, in words (the manifest's ``task``); a class-activation map is
    #: added only to a ``classification``
    task: str = "classification"
    #: a classifier with a pooling + linear head gets a class-activation map ``cam``
    heatmap: bool = True
    # what a model must reach to be packaged (converters.verify.Floors)
    target_sensitivity: float = 0.95
    floor_auc: float = 0.80
    floor_sensitivity: float = 0.90
    accept_weak_model: bool = False
    # the package
    name: str = ""
    version: str = "1.0.0"
    #: the use the model is validated for, in words (the manifest's ``intended_use``;
    #: default: the task and the warning that it is not for clinical use)
    intended_use: str = ""
    targets: list[str] = field(default_factory=lambda: ["onnx"])
    out: Path | None = None
    key: Path | None = None
    # distillation and pruning
    teacher: str = ""
    teacher_weights: Path | None = None
    #: JSON arguments for the teacher's FACTORY (as ``factory_kwargs`` for the model's)
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)
    #: epochs of distilling the student from the teacher
    distill_epochs: int = 5
    #: the softmax temperature of the teacher's soft targets (distillation and fine-tuning)
    temperature: float = 4.0
    alpha: float = 0.5
    #: refuse, before training, a student needing more than this share of the teacher's
    #: multiply-accumulates (a ratio in (0, 1]; none: no limit)
    max_student_mac_ratio: float | None = None
    prune: float | None = None
    prune_round_to: int | None = 8
    #: epochs of fine-tuning after pruning
    finetune_epochs: int = 2
    #: the learning rate of distillation
    lr: float = 3e-3
    # fidelity gate (converters.verify.Gate keys) and quantisation fallback
    #: the fidelity gate's limits, by key (the ``gate`` keys below): how close each artifact
    #: must stay to the source model on validation
    gate: dict[str, float] = field(default_factory=dict)
    #: an INT8 artifact that breaks the gate is quantised again with its sensitive layers
    #: kept in float, set after set (the closest attempt is kept)
    float_fallback: bool = True
    #: an INT8 artifact runs at its own finding threshold, lowered just enough that it calls a
    #: finding on every calibration image the source calls one (verify.guard_band)
    int8_guard_band: bool = True
    #: an INT8 artifact that breaks the gate is left out of the package with its reason (its
    #: profiles run their float artifact) instead of failing the conversion; a segmenter's
    #: always is
    int8_optional: bool = False
    #: a second stage on each lesion (``[stage]`` in convert.toml; converters/stage.py)
    stage: dict[str, Any] = field(default_factory=dict)

    def split_fractions(self) -> dict[str, float]:
        """Split fractions: the config's, else train/calibration/validation defaults that
        keep training data only when a step trains."""
        if self.split:
            return dict(self.split)
        if self.teacher or self.prune:
            return {"train": 0.6, "calibration": 0.1, "validation": 0.3}
        return {"calibration": 0.3, "validation": 0.7}


FIELDS = {f.name: f for f in dataclasses.fields(ConvertConfig)}


def parse_shape(text: str | list[int] | tuple[int, ...]) -> tuple[int, int, int]:
    """``"1,256,256"`` or ``[1, 256, 256]`` → (C, H, W); error on anything else."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        dims = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConvertConfigError(f"input_shape {text!r} is not C,H,W integers") from None
    if len(dims) != 3 or min(dims) < 1:
        raise ConvertConfigError(f"input_shape {text!r} must be three positive numbers C,H,W")
    return dims  # type: ignore[return-value]


#: the keys of ``[stage]``; ``model``, ``outputs``, ``heads`` and ``crop`` are required
STAGE_KEYS = ("name", "model", "weights", "factory_kwargs", "outputs", "heads", "crop",
              "input_name", "purpose", "output_meanings")


def _stage(value: Any) -> dict[str, Any]:
    """``[stage]``: checked for its keys; the stage itself is checked when it is packaged."""
    if not isinstance(value, dict):
        raise ConvertConfigError("stage must be a table ([stage] in convert.toml)")
    for key in value:
        if key not in STAGE_KEYS:
            raise ConvertConfigError(f"unknown setting stage.{key}{suggest(key, STAGE_KEYS)}")
    missing = [k for k in ("model", "outputs", "heads", "crop") if not value.get(k)]
    if value and missing:
        raise ConvertConfigError(f"[stage] needs {', '.join(missing)}")
    stage = dict(value)
    if stage.get("weights"):
        stage["weights"] = Path(stage["weights"])
    return stage


def _coerce(key: str, value: Any) -> Any:
    if key == "stage":
        return _stage(value)
    if key == "input_shape":
        return parse_shape(value)
    if key == "targets":
        try:
            return parse_targets(value)
        except ValueError as exc:
            raise ConvertConfigError(f"targets: {exc}") from None
    if key in PATH_KEYS or key == "labels":
        return Path(value) if value not in (None, "") else None
    if key in ("outputs", "class_names", "modalities") and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if key in ("target_sensitivity", "floor_auc", "floor_sensitivity"):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConvertConfigError(f"{key} must be a number, got {value!r}") from None
        low, low_ok = (("(0", value > 0.0) if key == "target_sensitivity"
                       else ("[0", value >= 0.0))
        if not (low_ok and value <= 1.0):
            raise ConvertConfigError(f"{key} must lie in {low}, 1], got {value}")
    if key in ("heatmap", "accept_weak_model", "float_fallback", "int8_guard_band",
               "int8_optional") and not isinstance(value, bool):
        raise ConvertConfigError(f"{key} must be true or false, got {value!r}")
    if key in ("prune", "max_student_mac_ratio") and value is not None:
        value = float(value)
        if not 0.0 < value <= 1.0:
            raise ConvertConfigError(f"{key} must be a ratio in (0, 1], got {value}")
    return value


#: file keys named as their command-line switch (``no_heatmap = true`` is
#: ``--no-heatmap``): the setting they turn off
NEGATED = {"no_heatmap": "heatmap"}
#: command-line options that are about the run, not the conversion: no file key
RUN_OPTIONS = ("config", "keep_work", "verbose")


def load_toml(path: Path) -> dict[str, Any]:
    """Read ``convert.toml``; ConvertConfigError for unreadable files and unknown keys.

    A key may be written as its command-line option (``no-heatmap``, ``no_heatmap``)."""
    try:
        raw = read_toml(path)
    except ConfigError as exc:
        raise ConvertConfigError(str(exc)) from exc
    values = {}
    for key, value in raw.items():
        key = key.replace("-", "_")
        if key in NEGATED:
            if not isinstance(value, bool):
                raise ConvertConfigError(f"{key} must be true or false, got {value!r}")
            if NEGATED[key] in values or NEGATED[key] in raw:
                raise ConvertConfigError(f"{key} and {NEGATED[key]} both set; keep one")
            key, value = NEGATED[key], not value
        values[key] = value
    return values


def build(file_values: dict[str, Any], cli_values: dict[str, Any]) -> ConvertConfig:
    """A ConvertConfig from the TOML values overridden by the command line's (None = unset)."""
    merged = dict(file_values)
    merged.update({k: v for k, v in cli_values.items() if v is not None})
    config = ConvertConfig()
    for key, value in merged.items():
        if key not in FIELDS:
            raise ConvertConfigError(f"unknown setting {key!r}{suggest(key, list(FIELDS))}")
        setattr(config, key, _coerce(key, value))
    return config


#: what each step needs before it starts; ``None`` is the whole chain
STEP_NEEDS: dict[str | None, tuple[str, ...]] = {
    None: ("out", "model", "input_shape", "data", "key"),
    "distill": ("out", "model", "teacher", "input_shape", "data"),
    "prune": ("out", "prune"),
    "export": ("out",),
    "quantize": ("out",),
    "verify": ("out",),
    "package": ("out", "key"),
}


def default_name(model: str) -> str:
    """A package name from ``--model``: the factory of ``MODULE:FACTORY``, else the file's stem.

    Lower-case letters, digits, dots, dashes; ``tests.models:tiny_classifier``
    gives ``tiny-classifier`` and ``nets/lesion_v2.pt`` gives ``lesion-v2``.
    """
    text = str(model)
    stem = text.rsplit(":", 1)[1] if ":" in text and not Path(text).exists() else Path(text).stem
    name = re.sub(r"[^a-z0-9.]+", "-", stem.lower()).strip("-.")
    return name or "model"


def preflight(config: ConvertConfig, step: str | None) -> None:
    """Refuse, before any work, a conversion that would fail on a missing option or file.

    Every option the step needs is checked (all missing ones named at once),
    then the signing key and its public half, and the model and data paths
    when they are files. The package name defaults from ``--model``.
    """
    missing = [key for key in STEP_NEEDS[step] if getattr(config, key) in (None, "", [], {})]
    if missing:
        options = ", ".join(f"--{key.replace('_', '-')}" for key in missing)
        raise ConvertConfigError(f"{step or 'convert'} needs {options} (on the command line "
                                 f"or in convert.toml); nothing was done")
    if not config.name and config.model:
        config.name = default_name(config.model)
    if config.key and step in (None, "package"):
        key = Path(config.key)
        for path in (key, key.with_suffix(".pub")):
            if not path.is_file():
                raise ConvertConfigError(
                    f"--key: {path} does not exist (clinibox keys generate --out "
                    f"{key.with_suffix('')} writes the .pem and the .pub beside it); "
                    "nothing was done")
    if config.model and ":" not in str(config.model) and not Path(config.model).exists():
        raise ConvertConfigError(f"--model: {config.model} does not exist; nothing was done")
    data = str(config.data or "")
    if data and not data.startswith("phantoms") and not Path(data).exists():
        raise ConvertConfigError(f"--data: {data} does not exist; nothing was done")
    if config.extra_validation and not Path(config.extra_validation).is_dir():
        raise ConvertConfigError(f"--extra-validation: {config.extra_validation} is not a "
                                 "folder; nothing was done")
    if config.federated_run:
        if not Path(config.federated_run).is_dir():
            raise ConvertConfigError(f"--federated-run: {config.federated_run} is not a "
                                     "folder; nothing was done")
        if config.teacher or config.prune:
            raise ConvertConfigError("--federated-run trains the head over the package's own "
                                     "backbone: it cannot be combined with distillation or "
                                     "pruning, which change that backbone; nothing was done")


def require(config: ConvertConfig, *keys: str) -> None:
    """ConvertConfigError naming the first of ``keys`` that is not set."""
    for key in keys:
        if getattr(config, key) in (None, "", [], {}):
            raise ConvertConfigError(f"--{key.replace('_', '-')} is required for this step "
                                     f"(or {key} in convert.toml)")
