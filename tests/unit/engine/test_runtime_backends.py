"""The three runtime backends, run for real on the fixture models.

Every backend loads its fixture (tests/fixtures/runtime, built by
tests/fixtures/make_runtime_fixtures.py) and must agree with the same model
computed here in plain numpy from the stored weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from engine.runtime import onnxruntime as ort_backend
from engine.runtime import openvino as ov_backend
from engine.runtime import registry
from engine.runtime import tflite as tflite_backend
from engine.runtime.base import ArtifactLoadError, BackendUnavailable, match_names

FIXTURES = Path(__file__).resolve().parent.parent.parent / "fixtures" / "runtime"
INPUTS = ["image"]
OUTPUTS = ["heatmap", "lesion_logit"]
MEAN, STD = 0.5, 0.25

# (backend, fixture file, max abs error heatmap, max abs error lesion_logit)
CASES = [
    ("onnxruntime", "tiny_lesion.onnx", 1e-4, 1e-4),
    ("onnxruntime", "tiny_lesion.int8.onnx", 0.2, 0.05),
    ("openvino", "tiny_lesion.onnx", 1e-4, 1e-4),
    ("openvino", "tiny_lesion.int8.onnx", 0.2, 0.05),
    ("openvino", "tiny_lesion.xml", 1e-4, 1e-4),
    ("tflite", "tiny_lesion.tflite", 1e-4, 1e-4),
    ("tflite", "tiny_lesion.int8.tflite", 0.2, 0.05),
]


# -- the model in numpy -------------------------------------------------------
def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """2-D convolution of one CHW image (float64)."""
    k = w.shape[-1]
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(padded, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("chwij,ocij->ohw", windows, w, optimize=True) + b[:, None, None]


def reference(weights: dict[str, np.ndarray], image: np.ndarray) -> dict[str, np.ndarray]:
    """The fixture model: three conv+relu, a 1x1 heatmap head, pooled linear logit."""
    x = image[0].astype(np.float64)
    for name, stride in (("conv1", 1), ("conv2", 2), ("conv3", 2)):
        x = np.maximum(_conv(x, weights[f"{name}_w"], weights[f"{name}_b"], stride, 1), 0)
    heatmap = _conv(x, weights["head_w"], weights["head_b"], 1, 0)[None]
    logit = weights["fc_w"] @ x.mean(axis=(1, 2)) + weights["fc_b"]
    return {"heatmap": heatmap, "lesion_logit": logit[None]}


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    """Weights and sample images the fixtures were built from."""
    with np.load(FIXTURES / "tiny_lesion.npz") as data:
        return {k: data[k].astype(np.float64) for k in data.files}


@pytest.fixture(scope="module")
def images(weights) -> list[np.ndarray]:
    """The stored sample images, normalised as the manifest says, [1, 1, H, W] float32."""
    return [((s / 255.0 - MEAN) / STD).astype(np.float32)[None, None] for s in weights["samples"]]


@pytest.fixture(scope="module")
def expected(weights, images) -> list[dict[str, np.ndarray]]:
    """The numpy reference output for each sample image."""
    return [reference(weights, image) for image in images]


def load(key: str, name: str, **kwargs):
    """A backend of ``key`` with fixture ``name`` loaded under the manifest's names."""
    backend = registry.create_backend(key)
    kwargs.setdefault("input_names", INPUTS)
    kwargs.setdefault("output_names", OUTPUTS)
    backend.load(FIXTURES / name, threads=2, **kwargs)
    return backend


# -- every backend runs its fixtures ------------------------------------------
@pytest.mark.parametrize(("key", "name", "tol_heatmap", "tol_logit"), CASES)
def test_backend_matches_numpy_reference(key, name, tol_heatmap, tol_logit, images, expected):
    backend = load(key, name)
    assert backend.input_names == INPUTS
    assert backend.output_names == OUTPUTS
    backend.warm_up({"image": images[0]})
    for image, want in zip(images, expected, strict=True):
        got = backend.infer({"image": image})
        assert list(got) == OUTPUTS
        for output, tol in (("heatmap", tol_heatmap), ("lesion_logit", tol_logit)):
            assert got[output].dtype == np.float32
            assert got[output].shape == want[output].shape
            np.testing.assert_allclose(got[output], want[output], rtol=0, atol=tol)
    backend.close()


def test_reference_is_not_trivial(expected):
    """The outputs vary between images, so agreement above means something."""
    logits = [float(e["lesion_logit"][0, 0]) for e in expected]
    assert max(logits) - min(logits) > 0.5
    assert np.ptp(expected[0]["heatmap"]) > 1.0


# -- TFLite: integer I/O and names ----------------------------------------------
def test_int8_tflite_takes_and_returns_float32_close_to_fp32(images):
    fp32 = load("tflite", "tiny_lesion.tflite")
    int8 = load("tflite", "tiny_lesion.int8.tflite")
    assert not fp32.quantized_io
    assert int8.quantized_io  # the model's own tensors are int8
    for image in images:
        want, got = fp32.infer({"image": image}), int8.infer({"image": image})
        for output in OUTPUTS:
            assert got[output].dtype == np.float32
            np.testing.assert_allclose(got[output], want[output], atol=0.25)
            assert not np.array_equal(got[output], want[output])  # really quantised


def test_quantize_dequantize_round_trip():
    values = np.linspace(-2, 2, 101, dtype=np.float32)
    q = tflite_backend.quantize(values, 0.0157, -1, np.int8)
    assert q.dtype == np.int8
    back = tflite_backend.dequantize(q, 0.0157, -1)
    assert back.dtype == np.float32
    assert np.abs(back - values).max() <= 0.0157 / 2 + 1e-6
    clipped = tflite_backend.quantize(np.array([-100.0, 100.0]), 0.0157, -1, np.int8)
    assert clipped.tolist() == [-128, 127]
    assert tflite_backend.quantize(np.array([0.0]), 0.5, 128, np.uint8).tolist() == [128]


def test_tflite_maps_converter_names_to_manifest_names():
    backend = load("tflite", "tiny_lesion.int8.tflite")
    assert backend.tensor_names == {
        "image": "args_0",
        "heatmap": "output_0",
        "lesion_logit": "output_1",
    }
    out = backend.infer({"image": np.zeros((1, 1, 128, 128), np.float32)})
    assert out["heatmap"].shape == (1, 1, 32, 32)
    assert out["lesion_logit"].shape == (1, 1)


def test_tflite_maps_outputs_by_shape_when_the_manifest_order_differs():
    backend = load(
        "tflite",
        "tiny_lesion.tflite",
        output_names=["lesion_logit", "heatmap"],
        output_shapes=[[1, 1], [1, 1, 32, 32]],
    )
    out = backend.infer({"image": np.zeros((1, 1, 128, 128), np.float32)})
    assert out["lesion_logit"].shape == (1, 1)
    assert out["heatmap"].shape == (1, 1, 32, 32)


def test_tflite_refuses_a_manifest_with_another_output_count():
    with pytest.raises(ArtifactLoadError, match=r"2 outputs .* manifest lists 1"):
        load("tflite", "tiny_lesion.tflite", output_names=["heatmap"])


def test_match_names_orders_numbered_names_numerically_and_checks_shapes():
    native = [(f"output_{i}", (1, i + 1)) for i in (10, 2, 1, 0)]  # the model's own order
    mapping = match_names("output", native, ["a", "b", "c", "d"], by_position=True)
    assert mapping == {"a": "output_0", "b": "output_1", "c": "output_2", "d": "output_10"}
    mangled = [("StatefulPartitionedCall:1", (1, 1)), ("StatefulPartitionedCall:0", (1, 4))]
    assert match_names("output", mangled, ["x", "y"], by_position=True) == {
        "x": "StatefulPartitionedCall:0",
        "y": "StatefulPartitionedCall:1",
    }
    assert match_names("output", mangled, ["y", "x"], [[1, 1], [1, 4]], by_position=True) == {
        "y": "StatefulPartitionedCall:1",
        "x": "StatefulPartitionedCall:0",
    }
    plain = [("logits", (1, 2)), ("boxes", (1, 4))]
    assert match_names("output", plain, ["p", "q"], by_position=True) == {
        "p": "logits",
        "q": "boxes",
    }
    with pytest.raises(ArtifactLoadError, match="shape"):
        match_names("output", plain, ["p", "q"], [[1, 2], [1, 5]], by_position=True)
    with pytest.raises(ArtifactLoadError, match="manifest expects"):
        match_names("output", plain, ["p", "q"])  # renaming only where allowed


@pytest.mark.parametrize(
    ("key", "name"), [("onnxruntime", "tiny_lesion.onnx"), ("openvino", "tiny_lesion.xml")]
)
def test_named_formats_refuse_an_artifact_whose_names_differ(key, name):
    with pytest.raises(ArtifactLoadError, match=rf"{key} {name}: .*lesion_score"):
        load(key, name, output_names=["heatmap", "lesion_score"])


# -- bad artifacts -------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "suffix"),
    [("onnxruntime", ".onnx"), ("openvino", ".onnx"), ("openvino", ".xml"), ("tflite", ".tflite")],
)
def test_corrupt_artifact_gives_a_clear_error(tmp_path, key, suffix):
    bad = tmp_path / f"model{suffix}"
    bad.write_bytes(b"\x00garbage, not a model\xff" * 40)
    bad.with_suffix(".bin").write_bytes(b"\x00" * 64)
    backend = registry.create_backend(key)
    with pytest.raises(ArtifactLoadError, match=rf"{key}.*cannot load model{suffix}"):
        backend.load(bad)


@pytest.mark.parametrize("key", ["onnxruntime", "openvino", "tflite"])
def test_missing_artifact_gives_a_clear_error(tmp_path, key):
    with pytest.raises(ArtifactLoadError, match=r"does not exist"):
        registry.create_backend(key).load(tmp_path / "absent.model")


def test_openvino_ir_without_its_weights_is_refused(tmp_path):
    xml = tmp_path / "tiny_lesion.xml"
    xml.write_bytes((FIXTURES / "tiny_lesion.xml").read_bytes())
    with pytest.raises(ArtifactLoadError, match=r"needs its weights tiny_lesion.bin"):
        registry.create_backend("openvino").load(xml)


@pytest.mark.parametrize(("key", "name"), [(k, n) for k, n, *_ in CASES[::2]])
def test_infer_checks_inputs_and_refuses_after_close(key, name):
    backend = load(key, name)
    with pytest.raises(ValueError, match=r"missing \['image'\]"):
        backend.infer({"img": np.zeros((1, 1, 128, 128), np.float32)})
    with pytest.raises(ValueError, match=r"shape \[1, 1, 128, 128\]"):
        backend.infer({"image": np.zeros((1, 1, 64, 64), np.float32)})
    backend.close()
    with pytest.raises(RuntimeError, match="not loaded"):
        backend.infer({"image": np.zeros((1, 1, 128, 128), np.float32)})


# -- onnxruntime ---------------------------------------------------------------
def test_backend_modules_import_the_real_packages_not_themselves():
    ort = ort_backend.runtime()
    assert ort.__name__ == "onnxruntime" and hasattr(ort, "InferenceSession")
    assert "firmware_app" not in str(ort.__file__)
    ov = ov_backend.runtime()
    assert ov.__name__ == "openvino" and hasattr(ov, "Core")
    assert "firmware_app" not in str(ov.__file__)


def test_onnxruntime_prefers_gpu_providers_only_when_listed():
    # The GPU branch is chosen from the provider list alone (no GPU here).
    listed = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert ort_backend.choose_providers(listed) == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert ort_backend.choose_providers(listed, device="CPU") == ["CPUExecutionProvider"]
    assert ort_backend.choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    backend = load("onnxruntime", "tiny_lesion.onnx")
    assert backend.providers == ["CPUExecutionProvider"]
    assert "CPUExecutionProvider" in backend.describe()


# -- openvino ------------------------------------------------------------------
def test_openvino_device_choice_from_injected_device_lists():
    assert ov_backend.choose_device("AUTO", ["CPU", "GPU", "NPU"]) == "NPU"
    assert ov_backend.choose_device("auto", ["CPU", "GPU.0", "GPU.1"]) == "CPU"
    assert ov_backend.choose_device("", ["CPU"]) == "CPU"
    assert ov_backend.choose_device("GPU", ["CPU", "GPU.0"]) == "GPU"
    assert ov_backend.choose_device("cpu", ["CPU", "NPU"]) == "CPU"
    with pytest.raises(BackendUnavailable, match=r"device NPU is not present.*it has CPU, GPU"):
        ov_backend.choose_device("NPU", ["CPU", "GPU"])
    with pytest.raises(ValueError, match="unknown OpenVINO device"):
        ov_backend.choose_device("TPU", ["CPU"])


def test_openvino_refuses_an_absent_device_on_this_machine():
    available = ov_backend.runtime().Core().available_devices
    absent = next(d for d in ("NPU", "GPU") if d not in {a.split(".")[0] for a in available})
    with pytest.raises(BackendUnavailable, match=rf"{absent} is not present"):
        load("openvino", "tiny_lesion.xml", device=absent)


def test_openvino_compiles_for_latency_with_configured_threads_at_f32():
    backend = load("openvino", "tiny_lesion.onnx")  # threads=2
    compiled = backend.compiled_model
    assert backend.device == "CPU"
    assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 2
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov_backend.runtime().Type.f32
