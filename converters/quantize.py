"""Post-training INT8: ONNX Runtime QDQ, NNCF for OpenVINO, litert-torch PT2E for TFLite.

Calibration data is always float32 images [N, C, H, W], already normalised, from
the user's own data. Every quantizer takes ``keep_float``: layers left in float
(named the way that quantizer names them), and :func:`fallback_plan` proposes
growing sets of such layers when an INT8 artifact fails the fidelity gate.
"""

from __future__ import annotations

import math
import operator
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters.artifacts import zero_points
from converters.export import eager_module, export_onnx, no_openvino_telemetry, tflite_sample
from converters.formats import ArtifactKind
from converters.spec import ModelSpec

#: ONNX ops whose weights are quantised (and that fallback_plan may keep in float)
WEIGHTED_ONNX = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: the OpenVINO ops they become (Conv → Convolution "<node>/WithoutBiases" + Add "<node>")
WEIGHTED_OPENVINO = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")
RANK_IMAGES = 32  # calibration images used to measure per-layer sensitivity
MAX_STEPS = 4


def check_calibration(calibration: Any, spec: ModelSpec) -> np.ndarray:
    """Calibration images as float32 [N, C, H, W]; ValueError naming expected vs got shape."""
    x = np.asarray(calibration)
    want = tuple(spec.input_shape[1:])
    if x.ndim != 4 or tuple(x.shape[1:]) != want or len(x) == 0:
        raise ValueError(f"calibration images must have shape [N, {', '.join(map(str, want))}] "
                         f"(N >= 1, the model input is {list(spec.input_shape)}); got "
                         f"{list(x.shape)}")
    if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise ValueError("calibration images must be finite floating-point values "
                         "(normalised the way the model expects)")
    return np.ascontiguousarray(x, dtype=np.float32)


def _unknown(names: Sequence[str], known: set[str], what: str,
             examples: Sequence[str] | None = None) -> None:
    missing = [n for n in names if n not in known]
    if missing:
        shown = list(examples) if examples is not None else sorted(known)
        raise ValueError(f"keep_float names {missing} are not {what} of this model "
                         f"(e.g. {shown[:8]})")


# -- ONNX Runtime --------------------------------------------------------------------------


def quantize_onnx(fp32_onnx: Path, out: Path, calibration: np.ndarray, spec: ModelSpec, *,
                  symmetric: bool = False, keep_float: Sequence[str] = ()) -> dict:
    """Static QDQ INT8 with per-channel 7-bit int8 weights and asymmetric uint8 activations
    (U8S8, see :func:`_ort_quantize`); ``symmetric`` makes every zero point 0, with int8
    activations (what TensorRT takes). ``keep_float``: ONNX node names left unquantised."""
    import onnx

    x = check_calibration(calibration, spec)
    nodes = onnx.load(str(fp32_onnx)).graph.node
    _unknown(keep_float, {n.name for n in nodes}, "ONNX nodes",
             [n.name for n in nodes if n.op_type in WEIGHTED_ONNX])
    _ort_quantize(fp32_onnx, out, x, spec, symmetric=symmetric, keep_float=keep_float)
    if symmetric and any(zero_points(Path(out)).values()):  # what TensorRT requires
        raise RuntimeError(f"{out.name}: symmetric quantisation left non-zero zero points")
    return {"method": "onnxruntime quantize_static, QDQ", "calibration": "minmax",
            "activations": "int8 symmetric" if symmetric else "uint8 asymmetric",
            "weights": "int8 symmetric per-channel, 7-bit range (reduce_range)"
                       + (", float with Q/DQ pair (TensorRT)" if symmetric else ""),
            "kept_float": list(keep_float), "calibration_images": len(x)}


def _ort_quantize(fp32_onnx: Path, out: Path, x: np.ndarray, spec: ModelSpec, *,
                  symmetric: bool, keep_float: Sequence[str] = (),
                  keep_activations: bool = False) -> None:
    """quant_pre_process + quantize_static; ``keep_activations`` keeps the Relu/Clip nodes
    QDQ would fold away, so every float tensor name still means the same thing.

    ``symmetric`` follows Optimum's TensorRT preset: symmetric int8 activations and
    weights, float weights behind their own Q/DQ pair (the form every TensorRT ONNX
    parser reads) and one Q/DQ pair per consumer.

    Otherwise activations are asymmetric **uint8**: ONNX Runtime's CPU provider fuses a
    QDQ graph into its integer kernels (QLinearConv, QLinearAdd, QGemm) on x86 only for
    uint8 activations (int8 ones only where ``session.qdqisint8allowed`` holds, i.e. on
    ARM). With int8 activations a ResNet-18 kept 11 of its 20 convolutions in float
    between DequantizeLinear and QuantizeLinear and ran no faster than its FP32 (1.0x);
    with uint8 all 20 are integer (bench/int8_resnet.py). ARM's kernels take uint8 too,
    and the int8 weights keep their 7-bit range (int8_kernels.py).
    """
    import onnxruntime.quantization as oq
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(oq.CalibrationDataReader):
        items = iter([{spec.input_name: x[i : i + 1]} for i in range(len(x))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
        oq.quantize_static(
            str(pre), str(out), Reader(), quant_format=oq.QuantFormat.QDQ, per_channel=True,
            activation_type=oq.QuantType.QInt8 if symmetric else oq.QuantType.QUInt8,
            weight_type=oq.QuantType.QInt8,
            nodes_to_exclude=list(keep_float), calibrate_method=oq.CalibrationMethod.MinMax,
            reduce_range=True,  # 7-bit weights: right on CPUs without VNNI (int8_kernels.py)
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                           "AddQDQPairToWeight": symmetric, "DedicatedQDQPair": symmetric,
                           "QDQKeepRemovableActivations": keep_activations})


# -- OpenVINO / NNCF -----------------------------------------------------------------------


def quantize_openvino(fp32_xml: Path, out_xml: Path, calibration: np.ndarray, spec: ModelSpec,
                      *, keep_float: Sequence[str] = ()) -> dict:
    """NNCF post-training INT8 of the FP32 IR; ``keep_float``: OpenVINO op names
    (``nncf.IgnoredScope(names=...)``).

    Min-max ranges and the full (not the fast) bias correction: on a small
    classifier the fast one left 8 % of decisions flipped, the full one none.
    """
    no_openvino_telemetry()
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    x = check_calibration(calibration, spec)
    model = ov.Core().read_model(str(fp32_xml))
    _unknown(keep_float, {op.get_friendly_name() for op in model.get_ordered_ops()},
             "OpenVINO ops", [op.get_friendly_name() for op in model.get_ordered_ops()
                              if op.get_type_name() in WEIGHTED_OPENVINO])
    # overflow_fix ENABLE: 7-bit weights in every layer (NNCF's default fixes only the
    # first), so oneDNN's u8×s8 kernels cannot saturate on CPUs without VNNI
    params = AdvancedQuantizationParameters(
        overflow_fix=OverflowFix.ENABLE,
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    quantized = nncf.quantize(
        model, nncf.Dataset([x[i : i + 1] for i in range(len(x))]), subset_size=len(x),
        advanced_parameters=params, fast_bias_correction=False,
        ignored_scope=nncf.IgnoredScope(names=list(keep_float)) if keep_float else None)
    Path(out_xml).parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return {"method": "nncf.quantize (post-training, min-max ranges, full bias correction)",
            "preset": "performance (symmetric activations)",
            "overflow_fix": "enable (7-bit weights in every layer: right without VNNI)",
            "kept_float": list(keep_float),
            "calibration_images": len(x)}


# -- TFLite / litert-torch PT2E ------------------------------------------------------------


def _keep_float_quantizer(keep_float: Sequence[str]) -> Any:
    """litert-torch's PT2EQuantizer, leaving the named modules (and their children) float.

    ``PT2EQuantizer.set_module_name(name, None)`` asserts on None and its name filter
    misreads torch.export's module-stack keys, so the module filter is done here from
    the fully qualified names in ``nn_module_stack``.
    """
    from litert_torch.quantize import pt2e_quantizer as pt2e

    keep = tuple(keep_float)

    def outside(node: Any) -> bool:
        stack = node.meta.get("nn_module_stack") or {}
        names = [str(v[0]).removeprefix("L['self'].") for v in stack.values()]
        return not any(n == k or n.startswith(k + ".") for n in names for k in keep)

    class KeepFloatQuantizer(pt2e.PT2EQuantizer):
        def _annotate_for_static_quantization_config(self, model: Any) -> Any:
            return self._annotate_all_static_patterns(model, self.global_config,
                                                      outside if keep else None)

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            return _float_annotations_only(super().annotate(model))

    config = pt2e.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    return KeepFloatQuantizer().set_global(config)


def _is_float(node: Any, model: torch.fx.GraphModule) -> bool:
    """Whether a graph node holds a floating-point tensor (or something not a tensor)."""
    value = node.meta.get("val")
    if value is None and node.op == "get_attr":
        value = operator.attrgetter(str(node.target))(model)
    dtype = getattr(value, "dtype", None)
    return not isinstance(dtype, torch.dtype) or dtype.is_floating_point


def _float_annotations_only(model: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The quantizer's annotations without those on integer tensors: its patterns also
    match an add or a multiply fed an integer constant (a detector's grid offsets, an index
    table), whose histogram observer cannot run (``"histogram_cpu" not implemented for
    'Long'``); integers stay integers in the INT8 model."""
    for node in model.graph.nodes:
        annotation = node.meta.get("quantization_annotation")
        if annotation is None:
            continue
        annotation.input_qspec_map = {source: spec for source, spec
                                      in annotation.input_qspec_map.items()
                                      if _is_float(source, model)}
        if not _is_float(node, model):
            annotation.output_qspec = None
    return model


def _calibration_graph(module: torch.nn.Module, spec: ModelSpec, by_name: bool
                       ) -> tuple[Any, int]:
    """The module exported with a dynamic batch, calibrated 32 images a call (~10x faster);
    batch-1-only models image by image. The TFLite file is converted at batch 1."""
    two = torch.zeros((2, *spec.input_shape[1:]))
    dims = {0: torch.export.Dim("batch", min=1, max=4096)}
    try:
        if by_name:
            program = torch.export.export(module, (), {spec.input_name: two},
                                          dynamic_shapes={spec.input_name: dims})
        else:
            program = torch.export.export(module, (two,), dynamic_shapes=(dims,))
        return program.module(), 32
    except Exception:  # batch-1-only models (e.g. a reshape with a literal 1)
        args, kwargs = tflite_sample(module, spec)
        return torch.export.export(module, args, kwargs).module(), 1


def quantize_tflite(model: torch.nn.Module, spec: ModelSpec, calibration: np.ndarray, out: Path,
                    *, keep_float: Sequence[str] = ()) -> dict:
    """Full-integer TFLite (int8 weights, activations, input and outputs) via PT2E.

    ``keep_float``: torch module names (``"fc"``, ``"stages.2.conv1"``) left in
    float; a kept output head makes that model output float32.
    """
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    module = eager_module(model, "TFLite INT8")
    x = check_calibration(calibration, spec)
    _unknown(keep_float, {n for n, _ in module.named_modules() if n}, "torch module names")
    args, kwargs = tflite_sample(module, spec)
    quantizer = _keep_float_quantizer(keep_float)
    graph, batch = _calibration_graph(module, spec, bool(kwargs))
    graph = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i in range(0, len(x), batch):
            image = torch.from_numpy(x[i : i + batch])
            _ = graph(**{spec.input_name: image}) if kwargs else graph(image)
    move_exported_model_to_eval(graph)
    graph = convert_pt2e(graph, fold_quantize=False)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    litert_torch.convert(graph, args or None, kwargs or None,
                         quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(out))
    return {"method": "litert-torch PT2E static INT8 (full integer I/O)", "weights":
            "int8 symmetric per-channel", "activations": "int8 symmetric",
            "kept_float": list(keep_float), "calibration_images": len(x)}


# -- fallback plan -------------------------------------------------------------------------


def _weighted_nodes(proto: Any) -> list[Any]:
    return [n for n in proto.graph.node if n.op_type in WEIGHTED_ONNX]


def _heads(proto: Any, spec: ModelSpec) -> list[str]:
    """The weighted nodes nearest each model output (walking producers backwards)."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    found: list[str] = []
    for output in spec.output_names:
        stack, seen = [output], set()
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in WEIGHTED_ONNX:
                found.append(node.name)
            else:
                stack.extend(node.input)
    order = {n.name: i for i, n in enumerate(proto.graph.node)}
    return sorted(set(found), key=order.__getitem__)


def _sensitivity(fp32_onnx: Path, qdq_onnx: Path, x: np.ndarray, spec: ModelSpec,
                 proto: Any) -> dict[str, float]:
    """Per weighted node: relative error of its output in the QDQ model minus the error
    already on its input activation (the error the layer itself adds), over images ``x``."""
    import onnx
    import onnxruntime as ort

    inferred = onnx.shape_inference.infer_shapes(proto)
    floats = {v.name for v in inferred.graph.value_info
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    tensors = sorted(floats | set(spec.output_names))
    sums = {t: np.zeros(2) for t in tensors}
    sessions, options = [], ort.SessionOptions()
    options.intra_op_num_threads = 1
    for path in (fp32_onnx, qdq_onnx):
        model = onnx.load(str(path))
        present = {o for n in model.graph.node for o in n.output} - set(spec.output_names)
        model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT,
                                                                     None)
                                  for t in tensors if t in present)
        sessions.append(ort.InferenceSession(model.SerializeToString(), options,
                                             providers=["CPUExecutionProvider"]))
    for i in range(len(x)):
        runs = [dict(zip([o.name for o in s.get_outputs()],
                         s.run(None, {spec.input_name: x[i : i + 1]}), strict=True))
                for s in sessions]
        for t in tensors:
            if t in runs[0] and t in runs[1]:
                ref = runs[0][t].astype(np.float64)
                sums[t] += (np.sum((runs[1][t] - ref) ** 2), np.sum(ref**2))
    err = {t: math.sqrt(s[0] / s[1]) if s[1] > 0 else 0.0 for t, s in sums.items()}
    return {n.name: err.get(n.output[0], 0.0) - err.get(n.input[0], 0.0)
            for n in _weighted_nodes(proto)}


def _onnx_steps(fp32_onnx: Path, spec: ModelSpec, x: np.ndarray, symmetric: bool
                ) -> list[list[str]]:
    import onnx

    proto = onnx.load(str(fp32_onnx))
    weighted = _weighted_nodes(proto)
    if not weighted:
        return []
    order = {n.name: i for i, n in enumerate(proto.graph.node)}
    steps = [_heads(proto, spec)]
    steps.append(steps[-1] + [weighted[0].name])
    with tempfile.TemporaryDirectory() as tmp:
        qdq = Path(tmp) / "qdq.onnx"
        _ort_quantize(fp32_onnx, qdq, x, spec, symmetric=symmetric, keep_activations=True)
        score = _sensitivity(fp32_onnx, qdq, x, spec, proto)
    ranked = sorted((n for n in score if n not in steps[-1]),
                    key=lambda n: (-round(score[n], 6), order[n]))
    k = max(1, math.ceil(len(weighted) / 8))
    for j in range(MAX_STEPS - 2):
        steps.append(steps[-1] + ranked[j * k : (j + 1) * k])
    return _growing(steps)


def _growing(steps: list[list[str]]) -> list[list[str]]:
    """De-duplicated steps, dropping any that is empty or adds nothing."""
    plan: list[list[str]] = []
    for step in steps:
        names = list(dict.fromkeys(step))
        if names and (not plan or len(names) > len(plan[-1])):
            plan.append(names)
    return plan


def _openvino_names(fp32_onnx: Path, onnx_names: list[str]) -> dict[str, str]:
    """ONNX node name → the OpenVINO op NNCF quantises for it (``<node>/WithoutBiases``)."""
    no_openvino_telemetry()
    import openvino as ov

    ops = [op.get_friendly_name() for op in ov.convert_model(str(fp32_onnx)).get_ordered_ops()
           if op.get_type_name() in WEIGHTED_OPENVINO]
    matches = {name: [op for op in ops if op == name or op.startswith(name + "/")]
               for name in onnx_names}
    return {name: found[0] for name, found in matches.items() if found}


def _torch_names(fp32_onnx: Path, model: torch.nn.Module) -> dict[str, str]:
    """ONNX node name → torch module name, through the weight initializer's name
    (the dynamo exporter keeps ``stages.0.conv1.weight``)."""
    import onnx

    modules = {n for n, _ in eager_module(model, "TFLite INT8").named_modules() if n}
    mapping = {}
    for node in _weighted_nodes(onnx.load(str(fp32_onnx))):
        if len(node.input) > 1 and node.input[1].endswith(".weight"):
            owner = node.input[1].removesuffix(".weight")
            if owner in modules:
                mapping[node.name] = owner
    return mapping


def fallback_plan(kind: ArtifactKind, *, fp32_onnx: Path | None, model: torch.nn.Module | None,
                  spec: ModelSpec, calibration: np.ndarray) -> list[list[str]]:
    """Growing sets of layers to keep in float, in the naming ``kind``'s quantizer takes.

    Step 1: the output heads; step 2: + the first layer; steps 3-4: + the layers
    whose quantisation adds the most error (measured on an ONNX Runtime QDQ copy
    over up to 32 calibration images). Deterministic for the same inputs.
    """
    if not kind.quantized:
        raise ValueError(f"{kind.key} is not an INT8 artifact; nothing to fall back from")
    x = check_calibration(calibration, spec)[:RANK_IMAGES]
    with tempfile.TemporaryDirectory() as tmp:
        if fp32_onnx is None:
            if model is None:
                raise ValueError("fallback_plan needs the FP32 ONNX or the torch model")
            fp32_onnx = Path(tmp) / "model.fp32.onnx"
            export_onnx(model, spec, fp32_onnx)
        plan = _onnx_steps(Path(fp32_onnx), spec, x, symmetric=kind.key == "onnx-int8-trt")
        if kind.format == "onnx":
            return plan
        if kind.format == "openvino-ir":
            mapping = _openvino_names(Path(fp32_onnx), sorted({n for s in plan for n in s}))
        elif model is None:
            raise ValueError(f"{kind.key}: fallback_plan needs the torch model (TFLite INT8 "
                             "keeps torch modules in float)")
        else:
            mapping = _torch_names(Path(fp32_onnx), model)
    return _growing([[mapping[n] for n in step if n in mapping] for step in plan])


def distance_from_source(failures: list[str], metrics: dict) -> tuple[int, float, float]:
    """How far a quantised attempt is from its source, for choosing among attempts that all
    break the gate: fewer failed limits first, then the smaller loss of sensitivity, then of
    AUC."""
    return (len(failures), -min(0.0, float(metrics.get("sensitivity_delta") or 0.0)),
            abs(float(metrics.get("auc_delta") or 0.0)))
