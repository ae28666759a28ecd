"""The fidelity gate's defaults: every ``[gate]`` key documented with its default in
floors.md, the issue's loose INT8 artifact refused, the shipped demo package accepted."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from converters.verify import Gate, check_gate

REPO = Path(__file__).resolve().parents[3]
FLOORS = REPO / "docs" / "model-makers" / "floors.md"
DEMO = REPO / "models" / "clinibox-demo-lesion" / "1.0.0" / "manifest.json"


def _documented() -> dict[str, str]:
    """The `[gate]` keys table of floors.md: key -> default, as written."""
    text = FLOORS.read_text(encoding="utf-8")
    table = text.split("### The `[gate]` keys", 1)[1]
    return dict(re.findall(r"^\| `([a-z0-9_]+)` \| ([^|]+?) \|", table, flags=re.M))


def test_floors_md_names_every_gate_key_with_its_default():
    documented = _documented()
    fields = {f.name: f.default for f in dataclasses.fields(Gate)}
    assert sorted(documented) == sorted(fields)
    for key, default in fields.items():
        assert float(documented[key]) == default, key


def _int8(specificity: float, delta: float, agreement: float) -> dict:
    return {"auc": 0.70, "auc_delta": -0.002, "sensitivity": 1.0, "sensitivity_delta": 0.0,
            "specificity": specificity, "specificity_delta": delta,
            "decision_agreement": agreement, "non_finite_values": {"logit": 0}}


def test_the_issue_s_int8_artifact_is_refused_by_default():
    # probabilities moved by 0.4-0.5: specificity 0.25 -> 0.04 at its guard-band threshold
    failures = check_gate(_int8(0.04, -0.21, 0.86), "int8", Gate())
    assert any(f.startswith("specificity fell from 0.250 to 0.040 (loss 0.210 > allowed "
                            "0.100)") for f in failures), failures
    assert any("agreement" in f and "86.000%" in f and "95.000%" in f for f in failures)
    # switched off deliberately ([gate] in convert.toml), it passes
    loose = Gate.from_dict({"int8_min_agreement": 0, "int8_max_specificity_loss": 1})
    assert check_gate(_int8(0.04, -0.21, 0.86), "int8", loose) == []
    # within both limits it passes; float artifacts are not judged on specificity loss
    assert check_gate(_int8(0.74, -0.09, 0.951), "int8", Gate()) == []
    assert not any("specificity" in f for f in check_gate(_int8(0.04, -0.21, 1.0), "fp32",
                                                          Gate(float_max_auc_delta=1.0)))


@pytest.mark.parametrize("value", [-0.1, "none", True])
def test_a_bad_specificity_limit_is_refused_with_its_key(value):
    with pytest.raises(ValueError, match="int8_max_specificity_loss"):
        Gate.from_dict({"int8_max_specificity_loss": value})


def test_the_shipped_demo_package_passes_the_default_gate():
    manifest = json.loads(DEMO.read_text(encoding="utf-8"))
    int8 = [a for a in manifest["artifacts"] if a["precision"] == "int8"]
    assert len(int8) >= 3
    for artifact in manifest["artifacts"]:
        validation = artifact["validation"]
        assert check_gate(validation, artifact["precision"], Gate()) == [], artifact["path"]
    assert min(a["validation"]["decision_agreement"] for a in int8) >= Gate().int8_min_agreement
