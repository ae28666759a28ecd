"""What the heatmap step writes about the outputs it adds and how it made them.

The conversion report and the manifest's ``output_meanings`` say, for a classifier wrapped
by ``converters.cam.CamModel`` (pooling + linear head: a class-activation map) or
``converters.head_cam.GradCamModel`` (more layers after the pool: Grad-CAM in the graph),
what ``cam`` and ``features`` are and which layers they come from.
"""

from __future__ import annotations

from typing import Any

from converters.cam import CAM_OUTPUT, FEATURES_OUTPUT, PoolLinearHead


def outputs_meaning(head: PoolLinearHead, gradient: bool, projected: int,
                    rows: int) -> dict[str, str]:
    """``cam`` and ``features`` in words; ``projected``: the principal directions kept
    (0: none), fitted on ``rows`` calibration images."""
    features = (f"the {head.channels} pooled feature maps of {head.feature_path!r}"
                + (f", projected on their {projected} principal directions (fitted on "
                   f"{rows} calibration images) plus the norm of the rest"
                   if projected else ""))
    cam = (f"Grad-CAM [N, {head.classes}, h, w] computed in the graph: the gradient of each "
           "score with respect to the pooled features (through the head "
           f"{', '.join(getattr(head, 'chain', ()))}) applied to each position of "
           f"{head.feature_path!r} (before its ReLU, times h·w)"
           if gradient else
           f"class-activation map [N, {head.classes}, h, w]: the linear layer "
           f"{head.linear_path!r} applied to each position of {head.feature_path!r} "
           "(Grad-CAM before its ReLU, up to scale; its mean plus the bias is the logit)")
    return {CAM_OUTPUT: cam, FEATURES_OUTPUT: f"{features} (for the validated range)"}


def step_report(head: PoolLinearHead, feature_size: int, gradient: bool,
                projected: int) -> dict[str, Any]:
    """The heatmap step's entry in the conversion report."""
    method = ("Grad-CAM in the graph: the head's gradient at the pooled features (its "
              "layers' weights and activations' slopes, no autograd) as a 1×1 convolution "
              "of the last feature maps"
              if gradient else
              "class-activation map: the final linear layer's weights as a 1×1 convolution "
              "of the last feature maps (no gradients)")
    return {"added": True, "method": method,
            **({"head_layers": list(getattr(head, "chain", ()))} if gradient else {}),
            "feature_layer": head.feature_path, "linear_layer": head.linear_path,
            "map": [head.classes, *head.map_size],
            "features": {"dimensions": feature_size, "pooled_channels": head.channels,
                         "projected": bool(projected)}}
