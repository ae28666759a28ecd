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


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _real_rows(ood: dict) -> str:
    """One table row per real file: frames outside the range, for torch and each artifact."""
    names = list(ood["torch"]["real_files"])
    runs = {"torch FP32": ood["torch"], **ood["artifacts"]}
    head = "| run | held-out phantoms flagged | " + " | ".join(f"`{n}`" for n in names) + " |"
    rule = "| --- | --- |" + " --- |" * len(names)
    rows = []
    for label, r in runs.items():
        cells = [f"{r['real_files'][n]['flagged']}/{r['real_files'][n]['frames']} "
                 f"(≥ {r['real_files'][n]['min_ratio']}×)" if n in r["real_files"] else "—"
                 for n in names]
        rows.append(f"| {label} | {_pct(r['phantoms_flagged'])} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def _agreement(lesions: dict) -> str:
    """The sizes' agreement with truth as a measurement's accuracy is stated (a build
    before ``demo_metrics.size_agreement`` has none: nothing is said)."""
    a = lesions.get("agreement")
    if not a or not a.get("measured"):
        return ""
    (long_low, long_high), (short_low, short_high) = (
        a[axis]["central_95pct_of_errors_pct"] for axis in ("long_axis", "short_axis"))
    return (f" As a measurement: bias long axis {a['long_axis']['bias_pct']} %, short axis "
            f"{a['short_axis']['bias_pct']} %; 95 % of the lesions' errors lie within "
            f"{long_low} to {long_high} % (long) and {short_low} to {short_high} % (short) of "
            f"truth; both axes within 15 % for at least "
            f"{_pct(a['both_within_15pct_lower_95pct_bound'])} of such lesions (one-sided 95 % "
            f"confidence).")


def lesion_section(lesions: dict) -> str:
    """The card's paragraph on lesion classes and sizes (held-out test phantoms)."""
    z = lesions["sizes"]
    if not z.get("measured"):
        sizes = f"no lesion over 5 mm was measured ({z['lesions_over_5mm']} in the test set)."
    else:
        sizes = (f"{z['measured']} of the {z['lesions_over_5mm']} lesions over 5 mm were found "
                 f"and measured; long axis within 15 % of truth for "
                 f"{_pct(z['long_axis_within_15pct'])}, short axis for "
                 f"{_pct(z['short_axis_within_15pct'])}, both for "
                 f"{_pct(z['both_within_15pct'])} ({_pct(z['both_within_15pct_of_all_over_5mm'])}"
                 f" of all lesions over 5 mm, unfound ones counted as misses); median error "
                 f"long axis {z['median_long_axis_error_pct']} % "
                 f"({z['median_long_axis_error_mm']} mm), short axis "
                 f"{z['median_short_axis_error_pct']} %; 95th percentile long-axis error "
                 f"{z['p95_long_axis_error_pct']} %. Over all sizes ({z['measured_all_sizes']} "
                 f"lesions) the median long-axis error is "
                 f"{z['median_long_axis_error_pct_all_sizes']} %." + _agreement(lesions))
    return f"""**Lesions: classes and sizes** (held-out test, shipped torch model, decoded by the
box's own heads decoder, each lesion then outlined and classified again by the second stage
on its source crop as the box does, and measured by its RECIST-style axes on the mask, in mm
from the phantoms' pixel spacing).
{lesions['detected']} of {lesions['lesions']} lesions found (IoU ≥ 0.3).
Benign/malignant AUC over found lesions (the second stage's class of the crop):
{lesions['class_auc']} ({lesions['class_lesions']} lesions; by kind
{lesions['class_auc_by_kind']}; accuracy at p = 0.5 {lesions['class_accuracy']}); at the
true centre of every lesion, found or not: {lesions['class_auc_at_truth_centre']}.
Sizes: {sizes}"""


def stage_section(stage: dict, first: dict) -> str:
    """The card's paragraph on the second stage (``demo/crop_stage.py``)."""
    z = first["sizes"]
    depth = stage.get("depth", 3)
    field = " (its coarsest scale's field covers the whole crop)" if depth >= 4 else ""
    bf16 = ", forward pass under bf16 autocast" if stage.get("bf16_autocast") else ""
    return (f"**Second stage** (`stages` in the manifest): a small U-Net of {depth} scales"
            f"{field} with a class head on a "
            f"64 × 64 crop of the source frame around each lesion (1.6 times its box plus "
            f"6 pixels), trained on {stage['training_crops']} crops of lesion phantoms of its "
            f"own seeds ({stage['epochs']} epochs, {stage['seconds']} s{bf16}), FP32 (ONNX, "
            f"TFLite). "
            f"{_looks_sentence(stage.get('mask_calibration'))}"
            f"On its {stage['crops']} validation crops (boxes moved and scaled as the first "
            f"stage's are): both axes within 15 % for {_pct(stage['both_axes_within_15pct'])} "
            f"of {stage['lesions_over_5mm']} lesions over 5 mm, class AUC "
            f"{stage['class_auc']}. Without it, the first stage's own mask puts "
            f"{_pct(z.get('both_within_15pct'))} of the held-out lesions over 5 mm within 15 % "
            f"on both axes (median long-axis error {z.get('median_long_axis_error_pct')} %) and "
            f"its class map gives an AUC of {first.get('class_auc')}.")


def _kept_sentence(kept: dict | None) -> str:
    """Which build trained the first stage, when this package was rebuilt from its
    checkpoint (``train_demo --from-checkpoint``), and whether the checkpoint was read back
    from the package's own float graph (``--recover-checkpoint``)."""
    if not kept:
        return ""
    recovered = kept.get("recovered_from")
    source = (f": the checkpoint was read back from the earlier package's "
              f"`{recovered['artifact']}` (sha256 {recovered['sha256'][:12]}…), BatchNorm "
              f"folded, and gave what it gives on its {recovered['golden_inputs_checked']} "
              f"golden inputs" if recovered else "")
    return (f"\nSteps 1–3 are those of the build of {kept['package_built']}; this package was "
            f"rebuilt from that first stage (`{kept['checkpoint']}`) without training it "
            f"again{source}.\n")


def learning_section(m: dict) -> str:
    """What the clinics may train of this package (its ``learning`` section, decision 0056)
    and, for a version made from a federated run, which rounds made it
    (``provenance.federated``)."""
    learning = m.get("learning")
    if not learning:
        return ("**Learning at the clinics.** This package carries no trainable model: the "
                "boxes cannot fine-tune it.\n")
    run = m["provenance"].get("federated")
    if run:
        privacy = run.get("privacy") or {}
        epsilon = privacy.get("epsilon")
        budget = (f"ε = {epsilon} at δ = {privacy.get('delta')}" if epsilon is not None
                  else "none (no noise was added)")
        origin = (f"This version's head comes from {run['rounds']} federated rounds started "
                  f"from {run.get('package', '?')}, with {run.get('boxes_per_round')} boxes "
                  f"and {run.get('cases_per_round')} labelled cases per round; privacy "
                  f"budget {budget}.")
    else:
        origin = "This version was not fine-tuned in federated rounds."
    return (f"**Learning at the clinics.** `{learning['path']}` is the FP32 model with its "
            f"final {learning['channels']} feature maps exposed as `{learning['maps_output']}`. "
            f"A box may train the 1×1 convolution `{learning['head_output']}` over them "
            f"({learning['channels']} weights and a bias; the log-sum-exp pool's sharpness "
            f"{learning['sharpness']}) on its own labelled cases, in federated rounds "
            f"(`docs/hospital/federated.md`). The backbone never moves, and a trained head "
            f"reaches the boxes only as a new version through the converter's gates. {origin}\n")


def _looks_sentence(calibration: dict | None) -> str:
    """How the shipped stage looks at a crop, and what its looks and mask offset gave on the
    threshold-selection phantoms (``crop_stage.calibrate_stage``)."""
    if not calibration:
        return ""
    looks = calibration["both_axes_within_15pct_by_looks"]
    offsets = calibration["both_axes_within_15pct_by_offset"]
    orientations = calibration["orientations"]
    shipped = ("looks at each crop once, as cut" if orientations == [0] else
               f"looks at each crop in orientations {orientations} and averages the mask "
               f"and class logits")
    count = f"{len(orientations)} look{'s' if len(orientations) > 1 else ''}"
    return (f"The shipped graph {shipped}; its mask logits are shifted by "
            f"{calibration['offset']:+g}. End to end on {calibration['phantoms']} "
            f"threshold-selection phantoms (the box's first stage, crop, second look and "
            f"axes), lesions over 5 mm with both axes within 15 %: by looks (unshifted) "
            f"{', '.join(f'{k}: {_pct(v)}' for k, v in looks.items())}; with {count} by mask "
            f"offset {', '.join(f'{float(k):+g}: {_pct(v)}' for k, v in offsets.items())}. ")


def calibration_line(calibration: dict) -> str:
    """How the mask logits were shifted (chosen on threshold-selection phantoms)."""
    return (f"The mask logits were shifted by {calibration['offset']:+g} (the last decoder "
            f"conv's bias), the offset that put most of {calibration['images']} "
            f"threshold-selection phantoms' lesions over 5 mm within 15 % on both axes "
            f"(shares by offset: {calibration['both_axes_within_15pct_by_offset']}); the "
            f"segmentation threshold stays 0.5.")


def ood_section(ood: dict) -> str:
    """The card's paragraph and table on the validated range (OOD guard)."""
    return f"""**Validated range (out-of-distribution guard).** The manifest's `ood` section holds
the mean and inverse covariance of what it measures ({ood['dimensions']} values: the
input's intensity histogram and its texture at three scales ({ood.get('image_statistics', 0)}
values), which the box computes in float whatever the artifact, then the `features` output,
the global average pool of the final feature maps, log-scaled and standardised on the
training phantoms) over {ood['fit_images']} training phantoms, and a squared-Mahalanobis
threshold of {ood['threshold']} (the {100 * ood['quantile']:g}th percentile of the
{ood['threshold_images']} threshold-selection phantoms' distances, × {ood['margin']}). Both
were measured through the torch model and every INT8 artifact
({', '.join(ood['fitted_through'])}), whose quantisation moves the features, so the range
holds for whichever artifact the box runs. An image
beyond it is `outside_validated_range`: no finding, no alert. Held-out test phantoms flagged,
and real images (pydicom's own test files, decoded and letterboxed exactly as the box does;
frames flagged / frames, and the smallest distance as a multiple of the threshold):

{_real_rows(ood)}
"""


def _counts(f: dict) -> str:
    """``x of n (share; CT a/b, US c/d)`` of a heatmap_check figure."""
    parts = ", ".join(f"{m} {c['inside']}/{c['lesions']}" for m, c in f["by_modality"].items())
    return f"{f['inside']} of {f['lesions']} ({_pct(f['share'])}; {parts})"


def _where(f: dict) -> str:
    """Where a map's hot spot lies from the box centre (median, in box sizes)."""
    o = f.get("median_hot_spot_from_centre_in_box_sizes")
    if not o:
        return ""
    return (f"; its median hot spot lies {abs(o['dy']):.2f} box heights "
            f"{'below' if o['dy'] >= 0 else 'above'} and {abs(o['dx']):.2f} box widths "
            f"{'right' if o['dx'] >= 0 else 'left'} of the box centre")


def _declared_heatmap(m: dict) -> dict:
    return next((h for h in m.get("heads", []) if h["kind"] == "heatmap"), {})


def _shown_sentence(shown_as: str, shown: dict) -> str:
    """What the box shows of a package measured by the bench (``HeadsDecoder.heatmap_shown``)."""
    if shown_as == "lesion map":
        return (f"This manifest records no on-lesion measurement, so the box shows the map "
                f"the lesions come from instead (the segmentation's lesion probability): "
                f"{_counts(shown)}.")
    if shown_as == "none":
        return "Its manifest records a failed on-lesion measurement: the box shows no heatmap."
    return f"The box shows it: {_counts(shown)}."


def heatmap_section(m: dict, report: dict | None, measured: dict | None) -> str:
    """The card's paragraph on whether the heatmap lies on the lesion (issue 42): from the
    build's ``heatmap_on_lesion`` step, else from ``bench/heatmap_on_lesion.py``'s figures
    (``measured``) for a package built before the check."""
    head = _declared_heatmap(m)
    intro = ("**Heatmap on the lesion** (the share of detected lesions, IoU ≥ 0.3 with "
             "truth, whose heatmap hot spot near them, as drawn over the image, lies inside "
             "their box; target ≥ 95 % over all and per modality, or the box shows no "
             "heatmap: `converters/heatmap_check.py`).")
    if report:
        selection = ", ".join(f"`{n}` {_pct(f['share'])}" for n, f in report["selection"].items())
        held = report["held_out"]
        verdict = ("the box shows it" if held["passed"] else
                   "below the target: the box shows no heatmap")
        return (f"{intro} On the threshold-selection phantoms: {selection}. Declared as the "
                f"heatmap: `{report['chosen']}`; on the held-out test phantoms "
                f"{_counts(held)}{_where(held)}: {verdict}.")
    if measured:
        f = measured["figures"]
        declared = f.get(f"candidate:{head.get('output')}")
        shown = f["shown"]
        cpu = f"{measured['machine']['cpu']}, {measured['machine']['cpu_features']}"
        before = (f"The declared heatmap `{head.get('output')}` has its hot spot inside the "
                  f"box for {_counts(declared)}{_where(declared)}. The trained weights put it "
                  f"there: the centre heatmap and the mask, computed from the same feature "
                  f"maps through the same transform, lie on the lesion. " if declared else "")
        return (f"{intro} Measured after the build by `bench/heatmap_on_lesion.py` "
                f"({measured['phantoms']}; the box's own analysis, {measured['backend']}, "
                f"{cpu}). {before}{_shown_sentence(measured['heatmap_shown'], shown)} A "
                f"rebuilt package declares the map that passes, with its measurement "
                f"(`on_lesion` in its heatmap head).")
    return f"{intro} Not measured for this package."


def make_card(m: dict, steps: dict, summaries: dict, heatmap: dict | None = None) -> str:
    """The card's Markdown text (``heatmap``: ``bench/heatmap_on_lesion.py``'s figures, for a
    package whose build did not measure its heatmap against the lesions)."""
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

**Data.** Procedural phantoms (`phantoms/images.py`): CT-like slices 256–512 px (body,
fat, organs, spine, ribs, vessels, water cysts, gas; a 300–420 mm field of view) and
ultrasound sector frames 240×320 to 480×640 px (speckle, attenuation, anechoic cysts with
posterior enhancement, vessels; 40–70 mm deep). Half hold 1–2 lesions (radius 2–15 % of the
width, hypo/hyper), each with a class drawn first and a look to match — benign: round to oval,
smooth, sharp margin, homogeneous (US: wider than tall, no shadow); malignant: lobulated, often
spiculated, ill-defined margin, heterogeneous (US: often taller than wide and shadowing) — and
its truth mask, long and short axis and area in mm. Lesion-like distractors (vessels, cysts)
are drawn on purpose. Training,
threshold-selection and held-out test phantoms come from different seeds; calibration used
{rows['calibration']} training phantoms, verification the {rows['validation']} held-out ones.

**How it was built** (`python -m demo.train`, the converter pipeline):
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
{_kept_sentence(steps.get('from_checkpoint'))}
Input [1,1,256,256] from `letterbox_grey` (mean {norm['mean']}, std {norm['std']}). Outputs,
declared as heads in the manifest: detection (CenterNet-style `centre_heatmap` + `box_size`
on an 8-pixel grid, scored by `lesion_logit`, the log-sum-exp pool of the 1×1-conv
class-activation map `cam`), per-lesion classification (`lesion_class`, benign/malignant
logits per 8-pixel cell, read under each lesion), segmentation (`lesion_mask`, 4-pixel cells,
from a light decoder with a skip connection from the stride-4 features), the heatmap `cam`,
and `features` for the validated range.

**Thresholds.** finding {t['finding']} (highest operating point with sensitivity ≥ 0.95 on the
threshold-selection phantoms), alert {t['alert']} (≥ 99 % specificity there), box {t['box']}
(best box F1 at IoU ≥ 0.3).

**Held-out test, torch FP32** (finding threshold {t['finding']}):

| model | parameters | MACs | AUC | sensitivity | specificity |
| --- | --- | --- | --- | --- | --- |
{models}

Shipped model: boxes at IoU ≥ 0.3: lesion recall {boxes['lesion_recall']}, box precision
{boxes['box_precision']}. False positives {fpa['false_positives']}/{fpa['negatives']}, peaking
on a distractor: {fpa['false_positives_peaking_on']}; AUC by kind {fpa['auc_by_kind']}.

{lesion_section(p['steps']['lesions'])}

{heatmap_section(m, p['steps'].get('heatmap_on_lesion'), heatmap)}

{stage_section(p['steps']['stage'], p['steps']['lesions_first_stage'])}
{calibration_line(p['steps']['mask_calibration'])}

{ood_section(p['steps']['ood'])}
{learning_section(m)}
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
whatever a clinic sends, but it learnt CT- and US-like phantoms only, and real CT and MR
images fall outside its validated range (above). Synthetic data; no calibration to real
prevalence; boxes on an 8-pixel grid, masks on a 4-pixel grid; the benign/malignant classes
are drawn by the phantom generator's rules, not pathology. TFLite INT8 is full-integer (int8
input and outputs). OpenVINO IRs carry `runtime_config` asking for f32 inference precision
(the CPU plugin would otherwise run bf16 on AMX CPUs).
"""


def write_card(out: Path, steps: dict, summaries: dict, heatmap: dict | None = None) -> Path:
    """Write ``MODEL_CARD.md`` beside the manifest."""
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    path = out / "MODEL_CARD.md"
    path.write_text(make_card(manifest, steps, summaries, heatmap), encoding="utf-8")
    return path


def rewrite_card(out: Path, heatmap: dict | None = None) -> Path:
    """``MODEL_CARD.md`` written again from the signed manifest alone (its training report
    and held-out figures), with ``heatmap`` figures when given. The card is not signed:
    nothing else of the package changes."""
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    steps = manifest["provenance"]["steps"]
    return write_card(out, steps, steps["detection"]["torch_test_metrics"], heatmap)


def main(argv: list[str] | None = None) -> int:
    """``python -m demo.card``: write the demo package's card again."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m demo.card",
                                     description="Write a demo package's MODEL_CARD.md again "
                                                 "from its signed manifest.")
    parser.add_argument("--package", type=Path, default=Path(__file__).resolve().parent.parent
                        / "models" / "clinibox-demo-lesion" / "1.0.0")
    parser.add_argument("--heatmap", type=Path,
                        help="bench/out/heatmap_on_lesion.json, for a package whose build did "
                             "not measure its heatmap against the lesions")
    args = parser.parse_args(argv)
    heatmap = (json.loads(args.heatmap.read_text(encoding="utf-8")) if args.heatmap
               else None)
    print(rewrite_card(args.package, heatmap))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
