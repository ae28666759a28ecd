"""Routing rules: which model analyses a series, from its DICOM header (``models/routing.py``).

Real images (phantoms written by the project's DICOM writer, pydicom's NM test
file) decoded by the box's decoder; the bundled demo package (phantom-trained,
not for clinical use) as the running model.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from clinibox_common.contracts.reasons import Reason, ReasonCode
from clinibox_common.settings_loader import ConfigError
from engine.imaging.decode import decode
from firmware_app.models.routing import Router
from firmware_app.settings.box import Config, from_dict
from firmware_app.storage.results import ResultStore
from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import generate
from tests.viewer_state import local_box

DEMO = "clinibox-demo-lesion"


def ct_chest(folder: Path, description: str = "CT CHEST PHANTOM", body_part: str = "CHEST"
             ) -> Path:
    """A CT phantom with its series description and body part."""
    ds = ct_dataset(generate("ct", np.random.default_rng(1), size=256, lesion=True),
                    {"SeriesDescription": description})
    ds.BodyPartExamined = body_part
    return write_dicom(ds, folder / f"{description}-{body_part}.dcm".replace(" ", "_"))


def rules(*tables: dict) -> Config:
    """A config with these ``[[routing.rules]]`` tables, parsed as the box parses TOML."""
    return from_dict({"routing": {"rules": list(tables)}})


def test_rules_are_read_in_order_and_bad_ones_are_named():
    config = rules({"name": "ct-chest", "model": DEMO, "modality": ["ct"],
                    "body_part": ["Chest"], "series_description": "chest|thorax",
                    "min_rows": 128},
                   {"name": "us", "model": "another-model", "modality": ["US"]})
    first, second = config.routing.rules
    assert (first.name, first.modality, first.body_part, first.min_rows) == (
        "ct-chest", ["CT"], ["CHEST"], 128)
    assert second.model == "another-model"
    for table, words in (({"name": "x", "model": DEMO, "series_description": "("},
                          "not a regular expression"),
                         ({"name": "x", "model": DEMO, "modalty": ["CT"]}, "modality"),
                         ({"name": "x"}, "needs at least name and model"),
                         ({"name": "bad name!", "model": DEMO}, "letters, digits")):
        with pytest.raises(ConfigError, match=words):
            rules(table)
    with pytest.raises(ConfigError, match="more than once"):
        rules({"name": "a", "model": DEMO}, {"name": "a", "model": DEMO})


def test_the_first_matching_rule_picks_the_model_and_the_rest_is_not_analysed(
        tmp_path, demo_runner):
    limits = Config().limits
    chest = decode(ct_chest(tmp_path), limits, 1)
    head = decode(ct_chest(tmp_path, "CT HEAD", "HEAD"), limits, 1)
    nm = decode(get_testdata_file("JPEG-LL.dcm"), limits, 1)
    package = demo_runner.package
    one = {DEMO: package}
    router = Router(rules({"name": "ct-chest", "model": DEMO, "modality": ["CT"],
                           "body_part": ["CHEST"], "series_description": "chest"},
                          {"name": "ct-head", "model": "head-model", "modality": ["CT"],
                           "body_part": ["HEAD"]}).routing.rules, one, DEMO)
    assert router.refusal(chest) is None
    assert router.rule_for(head).name == "ct-head"
    assert router.refusal(head) == Reason(ReasonCode.MODEL_NOT_INSTALLED, {
        "rule": "ct-head", "model": "head-model", "running": package.model_id})
    assert router.route(chest).model == DEMO
    refusal = router.refusal(nm)
    assert refusal.code == ReasonCode.NO_ROUTING_RULE
    assert refusal.params["series"].startswith("modality NM")
    # size bounds, and the series description matched case-insensitively
    small = Router(rules({"name": "big", "model": DEMO, "min_rows": 512}).routing.rules,
                   one, DEMO)
    assert small.refusal(chest).code == ReasonCode.NO_ROUTING_RULE
    assert "256x256" in small.refusal(chest).params["series"]
    assert Router(rules({"name": "any", "model": DEMO, "series_description": "PHANTOM"}
                        ).routing.rules, one, DEMO).refusal(chest) is None
    # without rules the package's own modality list decides
    plain = Router([], one, DEMO)
    assert plain.refusal(chest) is None
    assert plain.refusal(nm) == Reason(ReasonCode.MODALITY_NOT_ACCEPTED, {
        "modality": "NM", "model": package.model_id, "accepted": ", ".join(package.modalities)})
    # a rule never widens the package's scope
    nm_rule = Router(rules({"name": "nm", "model": DEMO, "modality": ["NM"]}).routing.rules,
                     one, DEMO)
    assert nm_rule.refusal(nm).code == ReasonCode.MODALITY_NOT_ACCEPTED


def test_the_worker_leaves_a_series_no_rule_matches_not_analysed(tmp_path, demo_runner):
    config = rules({"name": "ct-chest", "model": DEMO, "modality": ["CT"],
                    "body_part": ["CHEST"]})
    box = local_box(config, tmp_path / "state", demo_runner)
    conn, lander, worker = box.conn, box.lander, box.worker
    ids = {}
    for name, path in (("chest", ct_chest(tmp_path)),
                       ("head", ct_chest(tmp_path, "CT HEAD", "HEAD"))):
        ids[name] = lander.land(path.read_bytes(), sop_instance_uid=None, source="dicom",
                                origin="TEST").instance_id
    while worker.run_once():
        pass
    rows = {r["id"]: r for r in ResultStore(conn).instances()}
    assert rows[ids["chest"]]["status"] == "processed"
    assert rows[ids["head"]]["status"] == "not_analysed"
    [reason] = rows[ids["head"]]["reason"]
    assert reason["code"] == "no_routing_rule"
    assert reason["params"]["series"].startswith("modality CT, body part HEAD")
    conn.close()


@pytest.mark.slow
def test_two_packages_side_by_side_each_analyses_what_its_rule_routes_to_it(
        tmp_path, demo_runner):
    """A second signed package (the demo under another name) installed beside the demo;
    CT goes to one, US to the other, each with its own store; the study's results come
    as one SR per model."""
    from firmware_app.dicom_out.study_documents import ModelIdentity
    from firmware_app.models.store import package_config, routed_names, store_for
    from firmware_app.service.appliance import load_runner
    from firmware_app.service.study_completion import StudyCompleter
    from phantoms.dicom import us_dataset
    from tests.model_packages import make_package

    packages = tmp_path / "packages"
    make_package(packages, "1.0.0")
    make_package(packages, "2.0.0", name="clinibox-demo-us")
    config = rules({"name": "ct", "model": DEMO, "modality": ["CT"]},
                   {"name": "us", "model": "clinibox-demo-us", "modality": ["US"]})
    config.models.dir = str(packages)
    config.runtime.backend = "onnxruntime"
    config.studies.stable_seconds = 1.0
    assert routed_names(config) == [DEMO, "clinibox-demo-us"]
    us_config = package_config(config, "clinibox-demo-us")
    assert store_for(us_config).name == "clinibox-demo-us" and config.models.name == DEMO
    own, other = load_runner(config), load_runner(us_config)
    assert other.package.model_id == "clinibox-demo-us@2.0.0"
    box = local_box(config, tmp_path / "state", own, more={"clinibox-demo-us": (other, None)})
    conn, lander, worker = box.conn, box.lander, box.worker
    ct = ct_chest(tmp_path)
    study = pydicom.dcmread(ct, stop_before_pixels=True)
    us = write_dicom(us_dataset(generate("us", np.random.default_rng(2), lesion=True), {
        "StudyInstanceUID": str(study.StudyInstanceUID), "PatientID": str(study.PatientID)}),
        tmp_path / "us.dcm")
    for path in (ct, us):
        lander.land(path.read_bytes(), sop_instance_uid=None, source="dicom", origin="TEST")
    while worker.run_once():
        pass
    models = {r["modality"]: r["model_id"] for r in ResultStore(conn).instances()}
    assert models == {"CT": own.package.model_id, "US": "clinibox-demo-us@2.0.0"}
    # the study's documents: one SR per model, each naming its own model
    config.pacs.destinations = from_dict({"pacs": {"destinations": [
        {"name": "pacs", "host": "127.0.0.1", "send": ["sr"]}]}}).pacs.destinations
    completer = StudyCompleter(config, {r.package.model_id: ModelIdentity.from_manifest(
        r.package.manifest) for r in (own, other)}, "box-1")
    assert completer.tick(now=time.time() + 5) == 1
    rows = conn.execute("SELECT kind, path FROM dicom_outbox").fetchall()
    assert [r[0] for r in rows] == ["sr", "sr"]
    named = sorted(model for _kind, path in rows
                   for model in (own.package.model_id, other.package.model_id)
                   if model.encode() in Path(path).read_bytes())
    assert named == sorted([own.package.model_id, other.package.model_id])
    assert len({pydicom.dcmread(path).SeriesInstanceUID for _kind, path in rows}) == 2
    conn.close()


def test_a_routed_model_that_does_not_load_is_reported_to_the_hospital(tmp_path, demo_runner):
    """One package the rules name is tampered with, another is not installed: the box runs
    on, and the hospital gets one ``model_unavailable`` device event for each, with only
    the allow-listed fields (the model's id or name, a fixed reason, never a path)."""
    import json

    from clinibox_common.contracts.egress import SCHEMAS, check_message
    from firmware_app.service.appliance import Appliance
    from firmware_app.storage import db
    from firmware_app.storage.outbox import Outbox
    from tests.model_packages import make_package

    packages = tmp_path / "packages"
    make_package(packages, "2.0.0", name="clinibox-demo-us", tamper=True)
    config = from_dict({"storage": {"state_dir": str(tmp_path / "state")},
                        "models": {"dir": str(packages)},
                        "runtime": {"backend": "onnxruntime"},
                        "routing": {"rules": [
                            {"name": "ct", "model": DEMO, "modality": ["CT"]},
                            {"name": "us", "model": "clinibox-demo-us", "modality": ["US"]},
                            {"name": "mr", "model": "clinibox-demo-mr", "modality": ["MR"]}]}})
    conn = db.open_database(config.database_path)
    own = demo_runner.package
    assert Appliance(config)._load_routed_models(own) == {}  # neither runs; the box goes on
    events = [m["payload"] for m in Outbox(conn, 100, frozenset()).audit(since=0)]
    assert [(e["event"], e["reason"], e["subject_model"], e["model"], e["unit"])
            for e in events] == [
        ("model_unavailable", "tampered", "clinibox-demo-us@2.0.0", own.model_id, "clinibox"),
        ("model_unavailable", "not_installed", "clinibox-demo-mr", own.model_id, "clinibox")]
    for event in events:
        check_message("event", event, None)
        # every field but a rollout's and its download's (these events name none)
        assert set(event) == set(SCHEMAS["event"].fields) - {
            "rollout", "step", "received_bytes", "total_bytes"}
    sent = json.dumps(events)
    assert "/" not in sent and str(tmp_path) not in sent  # no path leaves the box
    # the box's own event log keeps the details (where it looked, what failed)
    logged = [r[0] for r in conn.execute("SELECT message FROM events WHERE level = 'ERROR'")]
    assert len(logged) == 2 and all("routing rules name the model" in m for m in logged)
    # a restart finds the same models missing: the hospital is not told again that day
    assert Appliance(config)._load_routed_models(own) == {}
    assert len(Outbox(conn, 100, frozenset()).audit(since=0)) == 2
    conn.execute("UPDATE events SET at = at - 25 * 3600")  # a day later it is told again
    conn.commit()
    assert Appliance(config)._load_routed_models(own) == {}
    again = [m["payload"] for m in Outbox(conn, 100, frozenset()).audit(since=0)][2:]
    assert [(e["event"], e["subject_model"]) for e in again] == [
        ("model_unavailable", "clinibox-demo-us@2.0.0"), ("model_unavailable", "clinibox-demo-mr")]
    conn.close()
