"""Export the demo model: ONNX, ONNX Runtime QDQ INT8, OpenVINO IR (NNCF INT8), TFLite."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from converters.demo_model import (
    OUTPUTS,
    REPO_ROOT,
    SHAPE,
    LesionNet,
    fuse_batchnorm,
    torch_outputs,
)

# -- TFLite worker (runs under the litert-torch interpreter) ---------------------------------


def tflite_worker(work: Path) -> None:
    """Convert ``work/state_dict.pt`` to ``model.fp32.tflite`` and ``model.int8.tflite``."""
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer as pt2e
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = fuse_batchnorm(LesionNet())
    model.load_state_dict(torch.load(work / "state_dict.pt", weights_only=True))
    sample = {"image": torch.zeros(SHAPE)}
    litert_torch.convert(model, sample_kwargs=sample).export(str(work / "model.fp32.tflite"))
    quantizer = pt2e.PT2EQuantizer().set_global(
        pt2e.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    graph = torch.export.export(model, (), sample).module()
    graph = prepare_pt2e(graph, quantizer)
    for x in np.load(work / "calibration.npy"):
        graph(image=torch.from_numpy(x[None]))
    graph = convert_pt2e(graph, fold_quantize=False)
    litert_torch.convert(graph, sample_kwargs=sample,
                         quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(
        str(work / "model.int8.tflite"))


def export_tflite(model: LesionNet, calibration: np.ndarray, out: Path, python: str,
                  log=print) -> list[str]:
    """Run :func:`tflite_worker` on the (BN-fused) model in the litert-torch interpreter."""
    if not python or not Path(python).exists():
        log(f"TFLite skipped: no litert-torch interpreter at {python!r} (--litert-python)")
        return []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.save(model.state_dict(), work / "state_dict.pt")
        np.save(work / "calibration.npy", calibration.astype(np.float32))
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
        run = subprocess.run([python, "-m", "converters.train_demo", "--tflite-worker", tmp],
                             cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
        written = [n for n in ("model.fp32.tflite", "model.int8.tflite") if (work / n).exists()]
        if run.returncode != 0:
            log(f"TFLite export failed after {written}; shipping those only:\n"
                + run.stderr[-3000:])
        for name in written:
            shutil.copy(work / name, out / name)
        return written


# -- exports ---------------------------------------------------------------------------------


def export_onnx(model: LesionNet, path: Path) -> None:
    """FP32 ONNX via the dynamo exporter (opset 18, static shape, weights inside the file);
    checked output by output against torch."""
    import onnx

    x = torch.randn(SHAPE)
    program = torch.onnx.export(model.eval(), (x,), dynamo=True, opset_version=18,
                                input_names=["image"], output_names=list(OUTPUTS),
                                external_data=False)
    program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path), save_as_external_data=False)
    for side in path.parent.glob(path.name + "*.data"):
        side.unlink()
    got, want = runner("onnx", path)(x.numpy()), torch_outputs(model, x.numpy()[:, 0], 0.0, 1.0)
    for name in OUTPUTS:
        if not np.allclose(got[name], want[name], atol=1e-3):
            raise RuntimeError(f"ONNX output {name!r} does not match torch")


def quantize_onnx(fp32: Path, out: Path, calibration: np.ndarray, exclude_heads: bool) -> list:
    """ORT static QDQ int8 (per-channel weights), calibrated on phantoms; returns float nodes."""
    import onnx
    import onnxruntime.quantization as oq
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(oq.CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {"image": x[None].astype(np.float32)}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        shapes = {t.name: list(t.dims) for t in graph.initializer}
        excluded = [n.name for n in graph.node if exclude_heads and n.op_type == "Conv"
                    and shapes.get(n.input[1], [0] * 4)[2:] == [1, 1]]  # cam + output heads
        oq.quantize_static(str(pre), str(out), Reader(), quant_format=oq.QuantFormat.QDQ,
                           per_channel=True, activation_type=oq.QuantType.QInt8,
                           weight_type=oq.QuantType.QInt8, op_types_to_quantize=["Conv", "Relu"],
                           nodes_to_exclude=excluded, calibrate_method=oq.CalibrationMethod.MinMax)
    return excluded


def quantize_openvino(out_dir: Path, calibration: np.ndarray, exclude_heads: bool) -> list:
    """NNCF INT8 of the FP32 IR, calibrated on phantoms; returns the ops kept in float."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    model = ov.Core().read_model(str(out_dir / "model.fp32.xml"))
    excluded = []
    if exclude_heads:
        excluded = [op.get_friendly_name() for op in model.get_ordered_ops()
                    if op.get_type_name() == "Convolution"
                    and list(op.input(1).get_partial_shape().to_shape())[2:] == [1, 1]]
    minmax = AdvancedQuantizationParameters(
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    quantized = nncf.quantize(model, nncf.Dataset([x[None] for x in calibration]),
                              subset_size=len(calibration), advanced_parameters=minmax,
                              fast_bias_correction=False,
                              ignored_scope=nncf.IgnoredScope(names=excluded) if excluded else None)
    ov.save_model(quantized, str(out_dir / "model.int8.xml"), compress_to_fp16=False)
    return excluded


def runner(fmt: str, path: Path):
    """A function ``image [1,1,H,W] float32 -> {output name: array}`` for one artifact."""
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        return lambda x: dict(zip(names, sess.run(None, {"image": x}), strict=True))
    if fmt == "openvino-ir":
        import openvino as ov

        # the CPU plugin defaults to bf16 on AMX/AVX512-BF16 CPUs: ask for real f32
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        outs = compiled.outputs

        def run_ov(x):
            res = compiled([x])
            return {o.get_any_name(): np.asarray(res[o]) for o in outs}

        return run_ov
    from ai_edge_litert.interpreter import Interpreter

    sig = Interpreter(model_path=str(path), num_threads=2).get_signature_runner()
    qin = sig.get_input_details()["image"]
    qout = sig.get_output_details()

    def run_tflite(x):
        if qin["dtype"] != np.float32:
            scale, zero = qin["quantization"]
            info = np.iinfo(qin["dtype"])
            x = np.clip(np.rint(x / scale + zero), info.min, info.max).astype(qin["dtype"])
        res = sig(image=x)
        for name, detail in qout.items():
            if detail["dtype"] != np.float32:
                scale, zero = detail["quantization"]
                res[name] = (res[name].astype(np.float32) - zero) * scale
        return res

    return run_tflite


