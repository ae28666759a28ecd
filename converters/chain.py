"""The conversion's last step and the whole chain: packaging a :class:`Conversion` (its floors,
heads, golden cases, signed manifest and report, ``converters.package``), and every step in
order. Apart from ``pipeline.py`` so that the package writer, which reads a conversion, and the
conversion do not import each other."""

from __future__ import annotations

from pathlib import Path

from converters.package import write_package
from converters.pipeline import Conversion


def package(conv: Conversion, keep_work: bool = False) -> Path:
    """Refuse a model below the floors (:meth:`Conversion.check_floors`), declare its heads,
    then write the package."""
    conv.claim("package")
    if conv.state["metrics"] and not conv.state.get("gate_failures"):
        conv.check_floors()
    conv.declare_heads()
    return write_package(conv, keep_work)


def run_all(conv: Conversion, keep_work: bool = False) -> Path:
    """The whole chain, from a fresh working folder (:meth:`Conversion.start_afresh`); each
    step only when the config asks for it."""
    conv.start_afresh()
    if conv.config.teacher:
        conv.distill()
    if conv.config.prune:
        conv.prune()
    conv.export()
    conv.quantize()
    conv.verify()
    conv.add_stage()
    return package(conv, keep_work)
