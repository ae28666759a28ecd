"""PyTorch → FP32 ONNX, FP16 ONNX, OpenVINO IR and float TFLite.

Every export has a static input shape (``spec.input_shape``, batch 1) and the
spec's tensor names. The FP32 ONNX export is checked op by op by
``onnx.checker`` and against torch on a random input before anything else is
built from it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clinibox_common.errors import CliniboxError
from converters.spec import ModelSpec
from converters.training import name_outputs


class ExportError(CliniboxError, RuntimeError):
    """A model that cannot be exported, with a message a person can act on."""

    kind = "export failed"


def model_name(model: Any) -> str:
    """A short name for messages: the module's class name."""
    if isinstance(model, torch.export.ExportedProgram):
        return "ExportedProgram"
    return type(model).__name__


def _first_lines(exc: BaseException, count: int = 3) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    code = [ln for ln in lines if ln.startswith("# File:") or "code:" in ln][:1]
    return " | ".join(lines[:count] + code)[:900]


def _callable(model: Any) -> Any:
    return model.module() if isinstance(model, torch.export.ExportedProgram) else model


def torch_outputs(model: Any, spec: ModelSpec, x: np.ndarray, batch: int = 32
                  ) -> dict[str, np.ndarray]:
    """Run images [N, C, H, W] through the model (eval, no grad) in batches; outputs stacked."""
    fn = _callable(model)
    if isinstance(fn, torch.nn.Module) and not isinstance(model, torch.export.ExportedProgram):
        fn.eval()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in spec.output_names}
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = name_outputs(fn(torch.from_numpy(np.ascontiguousarray(x[i:i + batch],
                                                                         np.float32))), spec)
            for name, value in out.items():
                parts[name].append(value.detach().float().cpu().numpy())
    return {name: np.concatenate(p, axis=0) for name, p in parts.items()}


def _output_order(model: Any, spec: ModelSpec, x: torch.Tensor) -> list[str]:
    """Output names in the order the exporter flattens them (dict outputs: key order)."""
    with torch.no_grad():
        result = _callable(model)(x)
    name_outputs(result, spec)  # raises on a mismatch
    return list(result) if isinstance(result, Mapping) else list(spec.output_names)


class SelectedOutputs(torch.nn.Module):
    """A model whose dict output holds more than the spec names (torchvision's segmenters
    with ``aux_loss``: ``{"out", "aux"}``), returning only the named ones, in order."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.names = model, tuple(names)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named outputs of the model's dict."""
        result = self.model(image)
        return {name: result[name] for name in self.names}


def selected(model: Any, spec: ModelSpec, order: list[str]) -> tuple[Any, list[str]]:
    """The model and its output order, wrapped in :class:`SelectedOutputs` when its dict
    output holds outputs the spec does not name (only an eager module can be)."""
    extra = [n for n in order if n not in spec.output_names]
    if not extra:
        return model, order
    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
        raise ExportError(f"{model_name(model)}: its outputs {order} include {extra}, which "
                          f"--outputs {list(spec.output_names)} leaves out; only an eager "
                          "module's extra outputs can be dropped (list every output)")
    return SelectedOutputs(model, spec.output_names).eval(), list(spec.output_names)


def _capture(model: Any, x: torch.Tensor) -> torch.export.ExportedProgram:
    """torch.export the module, strictly: a failure here is the user's model, not ONNX."""
    if isinstance(model, torch.export.ExportedProgram):
        return model
    try:
        return torch.export.export(model.eval(), (x,), strict=False)
    except Exception as exc:
        hint = ""
        if "data-dependent" in str(exc) or "GuardOnDataDependent" in type(exc).__name__:
            hint = (" The forward pass branches in Python on a tensor's value; use "
                    "torch.where or torch.cond instead.")
        raise ExportError(f"{model_name(model)}: torch.export cannot capture the model "
                          f"({type(exc).__name__}: {_first_lines(exc)}).{hint}") from exc


def export_onnx(model: Any, spec: ModelSpec, path: Path, opset: int = 18) -> ModelSpec:
    """Write an FP32 ONNX model (weights inside the file), checked, simplified, verified.

    nn.Module and ExportedProgram use the dynamo exporter; a ScriptModule the
    TorchScript one. Returns the spec with ``output_shapes`` read from the model.
    """
    import onnx
    import onnxslim

    if opset < 17:
        raise ValueError(f"opset {opset} is too old; use 17 or newer")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.randn(spec.input_shape, generator=torch.Generator().manual_seed(0))
    name = model_name(model)
    try:
        order = _output_order(model, spec, x)
    except ValueError as exc:
        raise ExportError(f"{name}: {exc}") from exc
    except Exception as exc:
        raise ExportError(f"{name}: the model fails on an input of shape "
                          f"{list(spec.input_shape)}: {_first_lines(exc)}") from exc
    model, order = selected(model, spec, order)
    try:
        if isinstance(model, torch.jit.ScriptModule):
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset,
                              input_names=[spec.input_name], output_names=order)
            proto = onnx.load(str(path))
        else:
            program = _capture(model, x)
            onnx_program = torch.onnx.export(program, (x,), dynamo=True, opset_version=opset,
                                             input_names=[spec.input_name], output_names=order,
                                             external_data=False, verbose=False)
            proto = onnx_program.model_proto
        onnx.checker.check_model(proto)
        proto = onnxslim.slim(proto)
        onnx.checker.check_model(proto)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{name}: ONNX export failed ({type(exc).__name__}: "
                          f"{_first_lines(exc)})") from exc
    _check_names(proto, spec, name)
    onnx.save(proto, str(path), save_as_external_data=False)
    for side in path.parent.glob(path.name + "*.data"):
        side.unlink()
    shapes = _check_parity(model, spec, path, x, name)
    return dataclasses.replace(spec, output_shapes=shapes)


def _check_names(proto: Any, spec: ModelSpec, name: str) -> None:
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [spec.input_name] or set(outputs) != set(spec.output_names):
        raise ExportError(f"{name}: the exported ONNX has inputs {inputs} and outputs "
                          f"{outputs}; the spec expects [{spec.input_name!r}] and "
                          f"{list(spec.output_names)}")


def _check_parity(model: Any, spec: ModelSpec, path: Path, x: torch.Tensor, name: str
                  ) -> dict[str, tuple[int, ...]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, {spec.input_name: x.numpy()}), strict=True))
    want = torch_outputs(model, spec, x.numpy())
    for out, ref in want.items():
        value = got[out]
        if value.shape != ref.shape:
            raise ExportError(f"{name}: ONNX output {out!r} has shape {list(value.shape)}, "
                              f"torch gives {list(ref.shape)}")
        tol = 1e-3 * max(1.0, float(np.abs(ref).max()))
        diff = float(np.abs(value - ref).max())
        if diff > tol:
            raise ExportError(f"{name}: ONNX output {out!r} differs from torch by {diff:.3g} "
                              f"(tolerance {tol:.3g}); the exporter changed the model's maths")
    return {out: tuple(int(d) for d in got[out].shape) for out in spec.output_names}


def _topological_sort(graph: Any) -> None:
    """Reorder graph nodes so every input is produced before use (float16 converter
    appends its input Casts at the end, which onnx.checker rejects)."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise ExportError("FP16 ONNX graph has a cycle or a dangling input")
        for node in ready:
            ordered.append(node)
            known.update(node.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def export_onnx_fp16(fp32_onnx: Path, path: Path) -> None:
    """FP16 weights and maths with float32 inputs/outputs (``keep_io_types``), for TensorRT.

    Uses onnxruntime's bundled ``onnxruntime.transformers.float16`` converter
    (onnxconverter-common is not needed).
    """
    import onnx
    from onnxruntime.transformers import float16

    proto = float16.convert_float_to_float16(onnx.load(str(fp32_onnx)), keep_io_types=True)
    _topological_sort(proto.graph)
    onnx.checker.check_model(proto)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path), save_as_external_data=False)


def no_openvino_telemetry() -> None:
    """Stop OpenVINO's converter and NNCF from sending usage telemetry (or writing a
    client-id file in the home folder).

    Without a consent file they post events by default, from a forked process
    (which also warns of deadlocks once JAX, imported by litert-torch, runs
    threads). The toolchain works offline and must not phone home.
    """
    try:
        from openvino_telemetry import Telemetry
    except ImportError:
        return

    def silent(*_args: Any, **_kwargs: Any) -> None:
        return None

    Telemetry.consent = False
    for method in ("init", "send_event", "start_session", "end_session", "send_error",
                   "send_stack_trace", "send_opt_in_event", "force_shutdown"):
        if hasattr(Telemetry, method):
            setattr(Telemetry, method, silent)


def export_openvino(fp32_onnx: Path, xml: Path, spec: ModelSpec) -> None:
    """OpenVINO IR (xml + bin beside it) from the FP32 ONNX, static input shape, FP32 weights."""
    no_openvino_telemetry()
    import openvino as ov

    model = ov.convert_model(str(fp32_onnx))
    model.reshape({spec.input_name: list(spec.input_shape)})
    Path(xml).parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml), compress_to_fp16=False)


def tflite_sample(model: torch.nn.Module, spec: ModelSpec) -> tuple[tuple, dict]:
    """(args, kwargs) for litert-torch: by the spec's input name when forward takes it."""
    zeros = torch.zeros(spec.input_shape)
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        params = {}
    if spec.input_name in params:
        return (), {spec.input_name: zeros}
    return (zeros,), {}


def eager_module(model: Any, what: str) -> torch.nn.Module:
    """The eager nn.Module behind the model; ExportError for TorchScript."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ExportError(f"{model_name(model)}: {what} needs the eager PyTorch module or a "
                          "torch.export program (.pt2); litert-torch cannot read TorchScript")
    if isinstance(model, torch.export.ExportedProgram):
        return model.module()
    return model.eval()


def export_tflite(model: Any, spec: ModelSpec, path: Path) -> None:
    """Float32 TFLite via litert-torch (``litert_torch.convert(...).export``)."""
    import litert_torch

    module = eager_module(model, "TFLite export")
    with torch.no_grad():
        result = module(torch.zeros(spec.input_shape))
    if isinstance(result, Mapping):
        module, _ = selected(module, spec, list(result))
    args, kwargs = tflite_sample(module, spec)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        litert_torch.convert(module, args or None, kwargs or None).export(str(path))
    except Exception as exc:
        raise ExportError(f"{model_name(model)}: TFLite conversion failed "
                          f"({type(exc).__name__}: {_first_lines(exc)})") from exc

