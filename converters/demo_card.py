"""``MODEL_CARD.md`` for the demo package, from its signed manifest and training figures."""

from __future__ import annotations

import json
from pathlib import Path


def _row(name: str, s: dict) -> str:
    return (f"| {name} | {s['parameters']:,} | {s['macs'] / 1e6:.1f} M | {s['auc']} | "
            f"{s['sensitivity']} | {s['specificity']} |")


def _artifact_row(a: dict) -> str:
    v = a["validation"]
    return (f"| {a['format']} {a['precision']} | `{a['path']}` | {', '.join(a['profiles'])} | "
            f"{v['auc']} | {v['auc_delta']:+.4f} | {v['sensitivity']} | {v['specificity']} | "
            f"{v['max_abs_delta_probability']:.4f} | {v['decision_agreement']:.4f} | "
            f"{v['ms_per_image']:.2f} | {v['size_bytes'] / 1024:.0f} KiB |")


def make_card(m: dict, steps: dict, summaries: dict) -> str:
    """The card's Markdown text."""
    p, t, norm = m["provenance"], m["thresholds"], m["inputs"][0]["normalisation"]
    det = p["steps"]["detection"]
    fpa, boxes = det["false_positive_analysis"], det["boxes"]
    d, pr = steps["distill"], steps["prune"]
    models = "\n".join(_row(k, v) for k, v in summaries.items())
    arts = "\n".join(_artifact_row(a) for a in m["artifacts"])
    rows = p["data"]["rows"]
    return f"""# Model card — {m['name']} {m['version']}

**NOT FOR CLINICAL USE. {m['intended_use']}.** It has never seen a patient image; on real
images its output means nothing. It lets clinibox be demonstrated and tested without patients.

**Data.** Procedural phantoms (`converters/phantoms.py`): CT-like slices 256–512 px (body,
fat, organs, spine, ribs, vessels, water cysts, gas) and ultrasound sector frames 240×320 to
480×640 px (speckle, attenuation, anechoic cysts with posterior enhancement, vessels). Half
hold 1–2 lesions (radius 2–15 % of the width, hypo/hyper, lobulated or spiculated, US
shadowing). Lesion-like distractors (vessels, cysts) are drawn on purpose. Training,
threshold-selection and held-out test phantoms come from different seeds; calibration used
{rows['calibration']} training phantoms, verification the {rows['validation']} held-out ones.

**How it was built** (`python -m converters.train_demo`, the converter pipeline):
1. Teacher `{steps['teacher']['architecture']}`, {steps['teacher']['epochs']} epochs,
   {steps['teacher']['seconds']} s on 2 CPU cores.
2. Distilled student (soft targets at T = {d['temperature']}, α = {d['alpha']}, plus the hard
   labels): {d['student_macs'] / 1e6:.1f} M MACs = {d['mac_ratio']:.3f} of the teacher's,
   {d['epochs']} epochs, {d['seconds']} s.
3. Structured channel pruning (Torch-Pruning) to {pr['mac_ratio']:.3f} of the student's MACs
   ({pr['macs_before'] / 1e6:.1f} M → {pr['macs_after'] / 1e6:.1f} M), torch latency
   {pr['ms_before']} → {pr['ms_after']} ms at 1 thread, then {pr['finetune_epochs']} epochs of
   fine-tuning guided by the teacher.
4. BatchNorm folded; exported, quantised (calibrated on phantoms), verified against the torch
   model and signed by the converter for the profiles {', '.join(sorted({
       x for a in m['artifacts'] for x in a['profiles']}))}.

Input [1,1,256,256] from `letterbox_grey` (mean {norm['mean']}, std {norm['std']}). Outputs:
CenterNet-style `centre_heatmap` + `box_size` on an 8-pixel grid, and a 1×1-conv
class-activation map `cam` whose log-sum-exp pool is `lesion_logit`.

**Thresholds.** finding {t['finding']} (Youden's J on the threshold-selection phantoms), alert
{t['alert']} (≥ 99 % specificity there), box {t['box']} (best box F1 at IoU ≥ 0.3).

**Held-out test, torch FP32** (finding threshold {t['finding']}):

| model | parameters | MACs | AUC | sensitivity | specificity |
| --- | --- | --- | --- | --- | --- |
{models}

Shipped model: boxes at IoU ≥ 0.3: lesion recall {boxes['lesion_recall']}, box precision
{boxes['box_precision']}. False positives {fpa['false_positives']}/{fpa['negatives']}, peaking
on a distractor: {fpa['false_positives_peaking_on']}; AUC by kind {fpa['auc_by_kind']}.

**Artifacts** (held-out test, through the box's own runtime backends; Δ against the shipped
torch model; ms: median single-image latency at 1 thread on the 2-core build machine):

| artifact | file | profiles | AUC | ΔAUC | sens. | spec. | max Δp | agreement | ms | size |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{arts}

Every artifact passed the fidelity gate {json.dumps(p['gate'])}. Golden cases (`golden/`,
exact preprocessed inputs) hold for every artifact within
{m['golden_cases'][0]['tolerance'] if m['golden_cases'] else 'n/a'}. `report.html` has the
ROC curves, latency and size charts.

**Limitations.** Modalities CT, US, MR, CR, DX, MG, OT are accepted so the demo runs on
whatever a clinic sends, but it learnt CT- and US-like phantoms only. Synthetic data; no
calibration to real prevalence; boxes on an 8-pixel grid. TFLite INT8 is full-integer (int8
input and outputs). OpenVINO IRs carry `runtime_config` asking for f32 inference precision
(the CPU plugin would otherwise run bf16 on AMX CPUs).
"""


def write_card(out: Path, steps: dict, summaries: dict) -> Path:
    """Write ``MODEL_CARD.md`` beside the manifest."""
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    path = out / "MODEL_CARD.md"
    path.write_text(make_card(manifest, steps, summaries), encoding="utf-8")
    return path
