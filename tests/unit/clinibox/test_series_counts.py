"""One lesion on six contiguous CT slices is one lesion, with its volume, everywhere.

A phantom CT series (``phantoms/series.py``: a sphere with its truth volume) goes
through the real Lander and Worker with the demo model, so every slice has its stored
geometry and previews. The demo model, trained on 2-D phantoms, misses most of such a
lesion's small end slices (bench/results/*/volume_lesions.json), so this test then
writes the phantom's own cross-sections as each slice's lesion records: it is about how the
box counts and says a lesion across slices, not about how the demo model detects it.
"""

from __future__ import annotations

import io
import json
import math
import re

import pytest
from pypdf import PdfReader

from tests.viewer_state import CLINICIAN, add_ct_series, copy_viewer_state
from tests.viewer_state import SERIES_SLICES as SLICES
from tests.web_client import ViewerClient
from web.app import create_app


@pytest.fixture(scope="module")
def series_box(tmp_path_factory, viewer_template, demo_runner):
    """The populated box with one more study: a CT series whose one lesion lies on six
    contiguous slices of ten 2 mm apart (landed in shuffled order)."""
    root = tmp_path_factory.mktemp("series-box")
    state = copy_viewer_state(viewer_template, root)
    series = add_ct_series(state, demo_runner, root)
    return state, series.study_id, series.ids, series.on, series.truth


@pytest.mark.slow
def test_one_lesion_on_six_slices_is_one_lesion_with_its_volume_everywhere(series_box,
                                                                           capsys):
    state, study, ids, on, truth = series_box
    assert len(on) >= 6 and on == list(range(on[0], on[0] + len(on)))  # contiguous
    client = ViewerClient(create_app(state.config))
    client.login(*CLINICIAN)

    page = client.get(f"/study/{study}").get_data(as_text=True)
    summary = re.search(r'<p class="summary" id="summary">([^<]+)</p>', page).group(1)
    assert summary.startswith("1 lesion in the study"), summary
    table = re.search(r'<table class="lesion-table" id="volume-table">.*?</table>', page,
                      re.S).group(0)
    rows = re.findall(r"<tr id=\"lesion-3d-\d+\"", table)
    assert len(rows) == 1 and f"{len(on)} slices" in table
    volume = float(re.search(r"([\d,]+) mm³", table).group(1).replace(",", ""))
    assert volume == pytest.approx(truth.volume_mm3, rel=0.2)

    report = client.get(f"/study/{study}/report").get_data(as_text=True)
    assert f"3-D lesion 1: possible malignant on {len(on)} slices" in report
    assert "3-D lesion 2" not in report and "1 lesion in the study" in report
    pdf = client.get(f"/study/{study}/report.pdf")
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.data)).pages)
                    .split())
    assert f"3-D lesion 1: possible malignant on {len(on)} slices" in text
    assert "1 lesion in the study" in text

    from clinibox.table import main
    config = state.config.state_dir.parent / "box.toml"
    config.write_text(f'[storage]\nstate_dir = "{state.config.state_dir}"\n')
    assert main(["results", "--studies", "--json", "--config", str(config)]) == 0
    studies = {s["id"]: s for s in json.loads(capsys.readouterr().out)}
    ours = studies[study]
    assert ours["lesion_count"] == 1
    (series,) = ours["series"]
    assert series["read_as"] == "volume" and series["slices"] == SLICES
    assert series["instance_ids"] == [ids[k] for k in range(SLICES)]  # ordered by position
    (lesion,) = series["lesions"]
    assert lesion["slices"] == len(on) and lesion["volume_from"] == "box"
    assert lesion["volume_mm3"] == pytest.approx(truth.volume_mm3, rel=0.2)
    assert math.dist(lesion["centre_mm"], truth.centre_mm) < 2.0


def test_the_batch_counts_a_lesion_across_slices_once():
    """``clinibox infer``'s study roll-up counts as the box does: one lesion on six
    contiguous slices of a series with positions is one; without positions, six."""
    from firmware_app.cli.batch_studies import FileResult, roll_up_studies
    from tests.viewer_state import lesion_record

    def report(k: int, positioned: bool) -> dict:
        geometry = {"image_position": [0.0, 0.0, 2.5 * k],
                    "image_orientation": [1, 0, 0, 0, 1, 0], "pixel_spacing": [0.5, 0.5],
                    "frame_of_reference_uid": "1.2.3", "frames": 1} if positioned else None
        box = {"long_axis_px": 20.0, "short_axis_px": 20.0, "area_px2": 300.0}
        lesion = {**lesion_record((40, 40, 60, 60), 78.0, 0.5), **box}
        return {"file": f"s{k}.dcm", "status": "processed", "study_key": "1.2",
                "series_uid": "1.2.1", "assessment": "finding", "alert": False,
                "probability": 0.9, "assessment_reason": "", "geometry": geometry,
                "lesions": [lesion] if 1 <= k <= 6 else []}

    for positioned, lesions in ((True, 1), (False, 6)):
        (study,) = roll_up_studies([FileResult(report(k, positioned)) for k in range(8)])
        assert study.lesions == lesions, positioned
    assert study.lesion_3d == {}  # read per slice: no 3-D lesion to belong to
    (study,) = roll_up_studies([FileResult(report(k, True)) for k in range(8)])
    assert study.lesion_3d == {(f"s{k}.dcm", 0): 1 for k in range(1, 7)}  # the CSV's lesion_3d
