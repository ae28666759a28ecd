"""Load the PyTorch model a technician hands the converter, in any of four forms.

* ``MODULE:FACTORY`` plus a checkpoint: ``MODULE`` is importable from the
  current directory, ``FACTORY(**factory_kwargs)`` builds the network and the
  checkpoint is its state dict (or a dict holding one under ``state_dict`` /
  ``model``);
* a full pickled module (``torch.save(model)``), e.g. a pruned network that no
  longer fits its factory;
* a TorchScript file (``torch.jit.save``);
* a ``torch.export`` ExportedProgram (``.pt2``).

Every form gives a :class:`SourceModel` whose ``module`` is callable on a
float tensor; outputs are named later from the config (see ``spec.py``); a
model with no image-level score gets one in ``converters.image_score``.
"""

from __future__ import annotations

import importlib
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clinibox_common.contracts.manifest import sha256_file
from clinibox_common.errors import EXIT_USAGE, CliniboxError

KINDS = ("factory", "pickled", "torchscript", "exported")


class SourceError(CliniboxError, ValueError):
    """The model reference or checkpoint cannot be turned into a runnable model."""

    kind = "model source refused"
    exit_status = EXIT_USAGE


@dataclass
class SourceModel:
    """A loaded source model and where it came from (for the package's provenance)."""

    module: nn.Module
    kind: str
    reference: str
    files: dict[str, str]  # file name -> sha256
    program: torch.export.ExportedProgram | None = None  # a .pt2 source, exported as given

    @property
    def exportable(self) -> Any:
        """What the exporters take: the ExportedProgram of a .pt2 source, else the module."""
        return self.program if self.program is not None else self.module

    @property
    def trainable(self) -> bool:
        """Whether distillation, pruning and fine-tuning can change it (not TorchScript)."""
        return self.kind != "torchscript"

    def provenance(self) -> dict[str, Any]:
        """What the manifest records about the source."""
        return {"kind": self.kind, "reference": self.reference, "files": self.files}


def _import_factory(reference: str):
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise SourceError(f"model reference {reference!r} is not MODULE:FACTORY")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SourceError(f"cannot import {module_name!r} (from {cwd}): {exc}") from exc
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise SourceError(f"{module_name} has no {attr!r}") from None
    if not callable(factory):
        raise SourceError(f"{reference} is not callable")
    return factory


def _state_dict(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, nn.Module):
        return checkpoint.state_dict()
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(checkpoint.get(key), dict):
                return checkpoint[key]
        if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return checkpoint
    raise SourceError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")


def _from_factory(reference: str, weights: Path | None, kwargs: dict[str, Any]) -> SourceModel:
    factory = _import_factory(reference)
    try:
        # the same initial weights every run: a student built without weights is trained
        # from them, and the same command must give the same package
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = factory(**kwargs)
    except Exception as exc:
        raise SourceError(f"{reference}(**{kwargs}) failed: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise SourceError(f"{reference} returned a {type(model).__name__}, not an nn.Module")
    files = {}
    if weights is not None:
        try:
            checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SourceError(f"cannot read checkpoint {weights}: {exc}") from exc
        try:
            model.load_state_dict(_state_dict(checkpoint, weights))
        except RuntimeError as exc:
            raise SourceError(f"checkpoint {weights} does not fit {reference}: "
                              f"{str(exc).splitlines()[0]}") from exc
        files[weights.name] = sha256_file(weights)
    return SourceModel(model.eval(), "factory", reference, files)


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _from_file(path: Path) -> SourceModel:
    if not path.is_file():
        raise SourceError(f"model file {path} does not exist")
    files = {path.name: sha256_file(path)}
    if path.suffix == ".pt2":
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            raise SourceError(f"{path} is not a torch.export program: {exc}") from exc
        return SourceModel(program.module(), "exported", str(path), files, program)
    if _is_torchscript(path):
        try:
            return SourceModel(torch.jit.load(str(path), map_location="cpu").eval(),
                               "torchscript", str(path), files)
        except Exception as exc:
            raise SourceError(f"{path} is not a loadable TorchScript file: {exc}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    if not isinstance(obj, nn.Module):
        raise SourceError(f"{path} holds a {type(obj).__name__}; a state dict needs "
                          "--model MODULE:FACTORY with --weights FILE")
    return SourceModel(obj.eval(), "pickled", str(path), files)


def load_source(reference: str, weights: Path | None = None,
                factory_kwargs: dict[str, Any] | None = None) -> SourceModel:
    """Load ``reference`` (MODULE:FACTORY, or a path to a pickled module, TorchScript or
    .pt2 file) and, for a factory, its ``weights``; SourceError with the reason otherwise."""
    path = Path(reference)
    if ":" in reference and not path.exists():
        return _from_factory(reference, Path(weights) if weights else None,
                             dict(factory_kwargs or {}))
    if weights is not None:
        raise SourceError(f"--weights is only for MODULE:FACTORY models; {reference} is a file")
    return _from_file(path)
