"""Signed model packages made from the bundled demo package, for the model-lifecycle tests.

``make_package`` copies the demo package under a new version and signs it
again, with the demo key (trusted by a default box), another key (not
trusted) or none; it can also tamper with an artifact after signing or move a
golden case's expected value so the case fails on any backend.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from clinibox_common.bundled import BUNDLED_MODELS_DIR
from clinibox_common.contracts import signing
from clinibox_common.contracts.manifest import sha256_file

DEMO = BUNDLED_MODELS_DIR / "clinibox-demo-lesion" / "1.0.0"
DEMO_PRIVATE_KEY = BUNDLED_MODELS_DIR / "keys" / "DEMO-ONLY-model-signing.pem"
#: the demo package's artifacts a test package keeps (small, and the default runtime runs them)
KEPT_ARTIFACTS = ("model.fp32.onnx", "model.int8.onnx")


def blind_input(onnx_path: Path) -> None:
    """Rewrite an ONNX model so that it multiplies its input by zero first: the same
    answer for every image, as the demo INT8 artifact gave on an AVX2 CPU whose int8
    kernel saturated."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    name = graph.input[0].name
    for node in graph.node:
        node.input[:] = [f"{name}__blind" if i == name else i for i in node.input]
    graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), "blind__zero"))
    graph.node.insert(0, helper.make_node("Mul", [name, "blind__zero"], [f"{name}__blind"]))
    onnx.save(model, str(onnx_path))


FULL_RANGE_INT8 = "model.int8-full-range.onnx"


def quantise_full_range(fp32: Path, out: Path, calibration: list[Path]) -> None:
    """Quantise ``fp32`` as the converter does (QDQ, u8 activations, s8 per-channel
    weights), every layer and **without** ``reduce_range``: 8-bit weights, which
    saturate x86's VPMADDUBSW kernel on CPUs without VNNI (converters/int8_kernels.py)."""
    import numpy as np
    import onnxruntime.quantization as oq
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = "image"
    items = iter([{name: np.load(p).astype(np.float32)} for p in calibration])

    class Reader(oq.CalibrationDataReader):
        def get_next(self):
            return next(items, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    oq.quantize_static(str(pre), str(out), Reader(), quant_format=oq.QuantFormat.QDQ,
                       per_channel=True, activation_type=oq.QuantType.QUInt8,
                       weight_type=oq.QuantType.QInt8, reduce_range=False,
                       extra_options={"WeightSymmetric": True})
    pre.unlink()


def make_package(folder: Path, version: str, *, key: Path | None = DEMO_PRIVATE_KEY,
                 tamper: bool = False, failing_golden: bool = False,
                 blind_int8: bool = False, full_range_int8: bool = False,
                 name: str = "clinibox-demo-lesion", intended_use: str | None = None,
                 trainable: bool = False) -> Path:
    """A copy of the demo package as ``name@version`` in ``folder/<name>/<version>``.

    ``blind_int8`` makes the INT8 artifact answer the same for every image (its
    sha256 in the manifest follows, so the package still verifies);
    ``full_range_int8`` adds a second ONNX INT8 artifact with 8-bit weights
    (:func:`quantise_full_range`, calibrated on the golden inputs);
    ``intended_use`` replaces the demo's intended-use statement; ``trainable`` keeps the
    demo's trainable model (``learning``: converters/learning_artifact.py), else it is left
    out.
    """
    root = folder / name / version
    root.mkdir(parents=True)
    manifest = json.loads((DEMO / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["path"] in KEPT_ARTIFACTS]
    stage_files = [f for stage in manifest.get("stages", []) for f in
                   [*(f for a in stage["artifacts"] for f in a["files"]),
                    *(c["input"] for c in stage["golden_cases"])]]  # its second stage, whole
    for relative in [*KEPT_ARTIFACTS, *(c["input"] for c in manifest["golden_cases"]),
                     *stage_files]:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(DEMO / relative, root / relative)
    manifest["name"], manifest["version"] = name, version
    if intended_use is not None:
        manifest["intended_use"] = intended_use
    if blind_int8:
        blind_input(root / KEPT_ARTIFACTS[1])
        for artifact in manifest["artifacts"]:
            if artifact["path"] == KEPT_ARTIFACTS[1]:
                artifact["files"] = {KEPT_ARTIFACTS[1]: sha256_file(root / KEPT_ARTIFACTS[1])}
    if full_range_int8:
        quantise_full_range(root / KEPT_ARTIFACTS[0], root / FULL_RANGE_INT8,
                            [root / c["input"] for c in manifest["golden_cases"]])
        int8 = next(a for a in manifest["artifacts"] if a["path"] == KEPT_ARTIFACTS[1])
        manifest["artifacts"].append({**int8, "path": FULL_RANGE_INT8, "files": {
            FULL_RANGE_INT8: sha256_file(root / FULL_RANGE_INT8)}})
    if trainable:  # the demo's own trainable model, copied like its artifacts
        learning = manifest["learning"]
        (root / learning["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(DEMO / learning["path"], root / learning["path"])
    else:
        manifest.pop("learning", None)
    if failing_golden:  # three tolerances away, so no backend can pass it
        case = manifest["golden_cases"][0]
        p, off = case["expected"]["probability"], 3 * case["tolerance"]
        case["expected"] = {"probability": round(p + off if p + off <= 1.0 else p - off, 5)}
    manifest.pop("signature", None)
    if key is not None:
        manifest = signing.sign_document(manifest, signing.load_private_key(key))
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if tamper:
        artifact = root / KEPT_ARTIFACTS[1]
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 0xFF
        artifact.write_bytes(bytes(data))
    return root


def last_device_event(database: Path) -> dict:
    """The newest device event the box queued for the hospital (its outbox), as JSON."""
    conn = sqlite3.connect(database)
    try:
        row = conn.execute("SELECT payload FROM outbox WHERE kind='event'"
                           " ORDER BY seq DESC LIMIT 1").fetchone()
        return json.loads(row[0])
    finally:
        conn.close()
