"""Which quantised attempt the converter keeps (converters/quantize_step.quantize).

While an INT8 artifact breaks the fidelity gate, the converter quantises again with more
sensitive layers kept in float (``quantize.fallback_plan``). Keeping more layers in float
does not always bring the artifact nearer its source: a ResNet-18 trained on an AMD EPYC
lost one validation lesion of 99 with every layer quantised, one with up to 11 layers
float, and two with 14. When no plan passes, the attempt that came closest is the one
left on disk and reported, not the last one tried. The quantiser and the measurements are
stand-ins here (their real forms are tested in test_format_roundtrip.py and
test_convert_chain.py): this is the choice between attempts only.
"""

from __future__ import annotations

from types import SimpleNamespace

from converters import formats, pipeline, quantize_step
from converters.verify import Gate

#: kept-float plan -> the sensitivity the attempt keeps (the source's is 0.960)
LOSSES = {(): -0.010, ("head",): -0.010, ("head", "stem"): -0.020}


class StandIn(pipeline.Conversion):
    """No model, no data: ``quantize`` only needs their names."""

    source = SimpleNamespace(exportable=None)
    spec = None


def _conversion(tmp_path, monkeypatch, losses: dict[tuple[str, ...], float]):
    """A Conversion whose quantiser and measurements are stand-ins; its calls are kept."""
    conversion = StandIn.__new__(StandIn)
    conversion.config = SimpleNamespace(targets=["onnx"], float_fallback=True)
    conversion.out = tmp_path
    conversion.stale = []  # its work is its own (converters/workdir.py)
    conversion.state = {}  # where an INT8 artifact the quantiser cannot make is recorded
    (tmp_path / formats.KINDS["onnx-fp32"].path).write_bytes(b"")
    conversion.gate = Gate()
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(quantize_step, "calibration", lambda conv: None)
    monkeypatch.setattr(quantize_step, "kernel_failures", lambda out, record, notes: [])

    def quantize_once(conv, kind, calib, keep):
        calls.append(tuple(keep))
        return {"kept_float": list(keep)}

    monkeypatch.setattr(quantize_step, "_quantize_once", quantize_once)
    conversion.record_artifact = lambda kind, notes: SimpleNamespace(
        kind=kind.key, notes=notes, kept=tuple(notes["kept_float"]))
    conversion.measure = lambda record: {  # as verify.compare words them
        "auc": 0.888, "auc_delta": -0.001, "decision_agreement": 0.99,
        "sensitivity": 0.960 + losses[record.kept], "sensitivity_delta": losses[record.kept]}
    plans = [list(p) for p in losses if p]
    monkeypatch.setattr(quantize_step, "fallback_plan", lambda kind, **_: plans)
    return conversion, calls


def test_when_no_plan_passes_the_closest_attempt_is_kept(tmp_path, monkeypatch):
    conversion, calls = _conversion(tmp_path, monkeypatch, LOSSES)
    [record] = conversion.quantize()
    assert calls == [(), ("head",), ("head", "stem"), ()]  # every plan, then the closest again
    assert record.kept == () and record.notes["kept_float"] == []
    assert [len(a["failures"]) for a in record.notes["attempts"]] == [1, 1, 1]
    assert all("sensitivity fell" in a["failures"][0] for a in record.notes["attempts"])


def test_a_plan_that_passes_ends_the_search_and_is_kept(tmp_path, monkeypatch):
    passing = {(): -0.010, ("head",): 0.0, ("head", "stem"): -0.020}
    conversion, calls = _conversion(tmp_path, monkeypatch, passing)
    [record] = conversion.quantize()
    assert calls == [(), ("head",)]
    assert record.kept == ("head",) and record.notes["attempts"][-1]["failures"] == []


def test_the_last_attempt_is_not_quantised_again_when_it_is_the_closest(tmp_path, monkeypatch):
    closer = {(): -0.020, ("head",): -0.020, ("head", "stem"): -0.010}
    conversion, calls = _conversion(tmp_path, monkeypatch, closer)
    [record] = conversion.quantize()
    assert calls == [(), ("head",), ("head", "stem")]
    assert record.kept == ("head", "stem")
