"""A package's model made trainable: the maps exposed, the head read, its pool's sharpness
recovered from the model's own logits (demo model, trained on phantoms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from converters.trainable import MAPS_OUTPUT, NotTrainable, fit_sharpness, trainable_model
from phantoms.images import generate

DEMO = Path(__file__).resolve().parents[3] / "models" / "clinibox-demo-lesion" / "1.0.0"


def _outputs(model, count: int = 6):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    maps, logits = [], []
    for i in range(count):
        image = generate("us", rng, size=256, lesion=bool(i % 2)).image
        x = ((image - 0.2093) / 0.2732).astype(np.float32)[None, None]
        logit, m = session.run(["lesion_logit", MAPS_OUTPUT], {"image": x})
        maps.append(m[0])
        logits.append(float(logit.reshape(-1)[0]))
    return np.stack(maps), np.asarray(logits)


def test_the_demo_models_head_reproduces_its_logit_from_the_exposed_maps():
    model = trainable_model(DEMO / "model.fp32.onnx")
    assert model.head.channels == 24
    maps, logits = _outputs(model.model)
    assert maps.shape == (6, 24, 32, 32)
    head = fit_sharpness(model.head, maps, logits)
    assert head.sharpness == 4.0
    np.testing.assert_allclose(head.logits(maps), logits, atol=1e-4)


def test_a_model_whose_score_is_no_pool_of_a_one_by_one_convolution_is_refused():
    with pytest.raises(NotTrainable, match="no convolution produces the output 'nothing'"):
        trainable_model(DEMO / "model.fp32.onnx", cam_output="nothing")
    model = trainable_model(DEMO / "model.fp32.onnx")
    maps, logits = _outputs(model.model, 4)
    with pytest.raises(NotTrainable, match="not a log-sum-exp pool"):
        fit_sharpness(model.head, maps, logits + np.array([0.0, 0.3, -0.2, 0.1]))
