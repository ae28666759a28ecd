"""A model's :class:`~converters.spec.ModelSpec` from the converter's config and one run of
the model on zeros: the output names, the score output, its activation and labels, and
every output's shape."""

from __future__ import annotations

import numpy as np
import torch

from converters.config import ConvertConfig, ConvertConfigError, require
from converters.spec import ModelSpec
from converters.training import name_outputs


def spec_from_config(config: ConvertConfig, model: torch.nn.Module) -> ModelSpec:
    """ModelSpec from the config; output names and classes read off one run of the model."""

    require(config, "input_shape")
    shape = (1, *config.input_shape)
    with torch.no_grad():
        try:
            result = model(torch.zeros(shape))
        except Exception as exc:
            raise ConvertConfigError(f"the model does not run on input [1, "
                                     f"{', '.join(map(str, config.input_shape))}]: {exc}") from exc
    if isinstance(result, dict):
        names = list(config.outputs or result)
    elif isinstance(result, (tuple, list)):
        names = list(config.outputs or [f"output_{i}" for i in range(len(result))])
    else:
        names = list(config.outputs or ["logits"])
    # what the converter's wrappers add (CamModel, MaskScore, BoxScore)
    names += [n for n in getattr(model, "added_outputs", ()) if n not in names]
    probe = ModelSpec(shape, tuple(names), config.score_output
                      or getattr(model, "derived_score", None) or names[0])
    outputs = name_outputs(result, probe)
    width = int(np.prod(outputs[probe.score_output].shape[1:]))
    activation = config.activation or ("softmax" if width > 1 else "sigmoid")
    names_given = config.class_names
    mask_labels = list(getattr(model, "labels", ()))
    if not config.score_output and getattr(model, "mask_output", None):
        # a segmenter's class names name its mask's channels; its score is one logit
        _check_mask(outputs, str(getattr(model, "mask_output", "")), mask_labels)
        if len(names_given) > 1 and list(names_given) != mask_labels:
            raise ConvertConfigError(
                f"class_names {list(names_given)} must be the segmentation head's labels "
                f"{mask_labels} (its mask's channels, in order): declare them in the head")
        names_given = names_given if len(names_given) == 1 else ["finding"]
        activation = "sigmoid"  # the added score is the logit of one probability
    elif not config.score_output and getattr(model, "box_labels", None) is not None:
        # a detector's class names name its score columns; its score is one logit
        if len(names_given) > 1 and list(names_given) != list(model.box_labels):
            raise ConvertConfigError(
                f"class_names {list(names_given)} must be the detection head's labels "
                f"{list(model.box_labels)} (its score columns, in order): declare them in "
                "the head")
        names_given = names_given if len(names_given) == 1 else ["finding"]
        activation = "sigmoid"
    labels = names_given or (["finding"] if width == 1 else
                             [f"class_{i}" for i in range(width)])
    if len(labels) != width:
        raise ConvertConfigError(f"class_names lists {len(labels)} names; the score output "
                                 f"{probe.score_output!r} has {width} values")
    negative = config.negative_label
    if negative is None and activation == "softmax":
        negative = labels[0]
    return ModelSpec(shape, tuple(names), probe.score_output, activation, tuple(labels),
                     negative, output_shapes={k: tuple(v.shape) for k, v in outputs.items()})


def _check_mask(outputs: dict[str, torch.Tensor], name: str, labels: list[str]) -> None:
    """A segmenter's mask output [1, K, h, w] has one channel per label of its head."""
    mask = outputs.get(name)
    if mask is None or mask.ndim != 4:
        raise ConvertConfigError(f"the segmentation head's output {name!r} must be a mask "
                                 f"[1, K, h, w]; got {None if mask is None else list(mask.shape)}")
    if labels and mask.shape[1] != len(labels):
        raise ConvertConfigError(f"the segmentation head names {len(labels)} classes "
                                 f"{labels}; its output {name!r} has {mask.shape[1]} channels")
