"""``clinibox convert`` and its steps (workstation only; needs ``pip install 'clinibox[convert]'``).

    clinibox convert --model MODULE:FACTORY --weights FILE --input-shape C,H,W \\
        --data DIR --labels CSV --targets onnx,x86-cpu,arm-cpu,jetson,intel-npu \\
        --out DIR --key FILE [--prune RATIO] [--teacher MODULE:FACTORY --teacher-weights FILE]
    clinibox convert --config convert.toml
    clinibox {distill,prune,export,quantize,verify,package} [same options]   # one step
    clinibox convert STEP [same options]                                  # the same

Exit status: 0 done, 1 the fidelity gate or a step failed, 2 bad options or data, or a
model below the floors (``floor_auc``, ``floor_sensitivity``) without ``--accept-weak-model``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from clinibox_common.arguments import CommandParser
from clinibox_common.errors import EXIT_FAIL, EXIT_OK, CliniboxError, run_command

STEPS = ("distill", "prune", "export", "quantize", "verify", "package")


def _json_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON") from None


def build_parser(prog: str = "clinibox convert") -> argparse.ArgumentParser:
    """Every converter option; each step reads the ones it needs."""
    p = CommandParser(prog=prog, description="Turn a trained PyTorch model into "
                                "signed clinibox model packages.")
    p.add_argument("step", nargs="?", choices=STEPS, help="run one step (default: all)")
    p.add_argument("--config", type=Path, help="convert.toml with any of the options below")
    add = p.add_argument
    add("--model", help="MODULE:FACTORY, or a pickled module / TorchScript / .pt2 file")
    add("--weights", help="state dict for a MODULE:FACTORY model")
    add("--factory-kwargs", type=_json_value, help='JSON arguments for FACTORY, e.g. '
        '\'{"classes": 3}\'')
    add("--input-shape", help="C,H,W of the model input, e.g. 1,256,256")
    add("--outputs", help="comma-separated output names (default: dict keys or 'logits')")
    add("--score-output", help="the output holding the decision logits (default: first)")
    add("--activation", choices=["sigmoid", "softmax"])
    add("--class-names", help="comma-separated class names, in output order")
    add("--negative-label", help="the class that is not a finding (softmax)")
    add("--data", help="folder of DICOM/PNG/JPEG files, or phantoms[:N]")
    add("--labels", help="CSV with columns file,label[,split]")
    add("--extra-validation", metavar="FOLDER", help="cases exported by clinibox "
        "export-disagreements: validation rows labelled by the clinicians' verdicts")
    add("--federated-run", metavar="FOLDER", help="a federated run's folder (head.npy, "
        "run.json): its head replaces the source model's cam before the export")
    add("--calibration-size", type=int)
    add("--mean", type=float, help="normalisation mean the model was trained with")
    add("--std", type=float, help="normalisation std the model was trained with")
    add("--modalities", help="comma-separated DICOM modalities the box may feed it")
    add("--target-sensitivity", type=float, help="the operating point is the highest one "
        "keeping this sensitivity on validation (default 0.95)")
    add("--floor-auc", type=float, help="refuse a model whose validation AUC is below this "
        "(default 0.80)")
    add("--floor-sensitivity", type=float, help="refuse a model with an artifact whose "
        "sensitivity at the operating threshold is below this (default 0.90)")
    add("--accept-weak-model", action="store_true", default=None, help="package a model "
        "below the floors anyway; the weakness is written into the manifest and the report")
    add("--no-heatmap", dest="heatmap", action="store_false", default=None,
        help="do not add a heatmap (cam: a class-activation map, or Grad-CAM in the graph) "
        "to a classifier")
    add("--targets", help="profiles: onnx, x86-cpu, intel-npu, arm-cpu, jetson")
    add("--out", help="output folder: becomes the model package")
    add("--key", help="Ed25519 private key (PEM); its .pub must sit beside it")
    add("--name", help="package name")
    add("--version", help="package version (dotted numbers)")
    add("--intended-use", help="the use the model is validated for, in words (default: the "
        "task and the warning that it is not for clinical use)")
    add("--teacher", help="trained teacher (same forms as --model): distils --model from it")
    add("--teacher-weights", help="state dict for a MODULE:FACTORY teacher")
    add("--teacher-kwargs", type=_json_value)
    add("--distill-epochs", type=int)
    add("--temperature", type=float)
    add("--alpha", type=float, help="weight of the soft (teacher) loss, 0..1")
    add("--lr", type=float, help="learning rate of distillation (default 3e-3)")
    add("--max-student-mac-ratio", type=float)
    add("--prune", type=float, metavar="RATIO", help="keep this fraction of the MACs")
    add("--prune-round-to", type=int, help="keep channel counts multiples of this (default 8; "
        "fast kernels want them)")
    add("--finetune-epochs", type=int)
    add("--seed", type=int)
    add("--keep-work", action="store_true", help="keep OUT/.convert after packaging")
    add("-v", "--verbose", action="store_true")
    return p


def _config(args: argparse.Namespace):
    from converters import config as config_module

    values = {k: v for k, v in vars(args).items()
              if k != "step" and k not in config_module.RUN_OPTIONS}
    file_values = config_module.load_toml(args.config) if args.config else {}
    return config_module.build(file_values, values)


def run(args: argparse.Namespace) -> int:
    """Run the chain or one step; print where the package is."""
    from converters.config import preflight

    config = _config(args)
    preflight(config, args.step)  # under a second, before torch is imported

    from converters import chain
    from converters.pipeline import Conversion
    from converters.workdir import StaleWorkError, describe_left

    conv = None
    try:
        conv = Conversion(config)
        if args.step is None:
            chain.run_all(conv, keep_work=args.keep_work)
        elif args.step == "package":
            chain.package(conv, keep_work=args.keep_work)
        else:
            getattr(conv, args.step)()
    except (CliniboxError, ValueError, RuntimeError) as exc:
        if conv is not None and not isinstance(exc, StaleWorkError) and conv.work.is_dir():
            print(f"{args.step or 'convert'} stopped: {describe_left(conv.work, conv.state)}",
                  file=sys.stderr)
        if isinstance(exc, CliniboxError):
            raise  # mapped by run_command
        # a step refused (e.g. an unreachable prune ratio)
        print(f"{args.step or 'convert'} failed: {exc}", file=sys.stderr)
        return EXIT_FAIL
    done = args.step or "convert"
    print(f"{done}: done; results in {conv.out}"
          + (f" (report: {conv.out / 'report.html'})" if done in ("convert", "package") else ""))
    return EXIT_OK


def main(argv: list[str] | None = None, prog: str = "clinibox convert") -> int:
    """Entry point used by ``clinibox convert`` and ``clinibox <step>``."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("nncf", "openvino", "onnxruntime", "jax", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run_command(prog, lambda: run(args))
