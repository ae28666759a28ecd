"""The heads a package declares, completed from what the conversion knows.

A config with no heads gets a classifier's classification head; a model whose heatmap
the converter added (``cam``) gets a heatmap head beside its declared heads. Every head
is checked against the contract (``clinibox_common.contracts.heads``) and against the
model's outputs.
"""

from __future__ import annotations

from typing import Any

from clinibox_common.contracts.heads import HeadsError, parse_heads
from converters.cam import CAM_OUTPUT
from converters.config import ConvertConfigError
from converters.spec import ModelSpec


def declared_heads(heads: list[dict[str, Any]], spec: ModelSpec, postprocessing: str,
                   heatmap_added: bool) -> list[dict[str, Any]]:
    """``heads`` completed and checked; ConvertConfigError naming what does not fit."""
    heads = [dict(h) for h in heads]
    if not heads and postprocessing == "classification":
        heads.append({"kind": "classification", "output": spec.score_output,
                      "activation": spec.activation, "labels": list(spec.labels),
                      "negative_label": spec.negative_label, "per": "image"})
    if heads and heatmap_added and not any(h.get("kind") == "heatmap" for h in heads):
        heads.append({"kind": "heatmap", "output": CAM_OUTPUT, "activation": "none"})
    if heads:
        try:
            parsed = parse_heads(heads)
        except HeadsError as exc:
            raise ConvertConfigError(f"heads: {exc}") from exc
        unknown = sorted({o for h in parsed for o in h.outputs.values()}
                         - set(spec.output_names))
        if unknown:
            raise ConvertConfigError(f"heads name output(s) {unknown} the model does not "
                                     f"have (it has {list(spec.output_names)})")
    return heads
