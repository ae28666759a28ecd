"""The stack of a series on the study page (``web/series_stack.py``, its template and script).

The dict the template gets is checked on series built here (slices given shuffled, read as a
volume or per slice), then the page on a box whose CT phantom series was landed shuffled and
analysed by the real worker and demo model (``tests/stack_state.py``): slices in position
order, the lesion's slices marked with its 3-D number, and every move a plain link without
script. The script's arithmetic runs in Node.
"""

from __future__ import annotations

import html as html_module
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.inference.volume import SeriesSlice, series_volume
from tests.stack_state import SLICES, build_stack_state
from tests.viewer_state import CLINICIAN
from tests.web_client import ViewerClient
from web.series_stack import build_stack, page_step

STACK_JS = Path(__file__).resolve().parents[3] / "web" / "static" / "series_stack.js"
NODE = shutil.which("node") or shutil.which("nodejs")
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass
class View:
    """What the stack reads of an instance (``storage.studies.InstanceView``)."""

    id: int
    frames_inferred: int = 1
    assessment: str = "no_finding"
    lesions: list[dict[str, Any]] = field(default_factory=list)
    image_deleted_at: float | None = None


def _record(box: tuple[float, float, float, float] = (40, 40, 60, 60)) -> dict[str, Any]:
    return {"label": "lesion", "probability": 0.8, "box": list(box), "frame": 0,
            "area_mm2": 300.0, "long_axis_mm": 20.0, "short_axis_mm": 18.0}


def _slice(instance_id: int, z: float | None, records: list[dict[str, Any]],
           frames: int = 1) -> SeriesSlice:
    geometry = {"image_position": None if z is None else [-100.0, -100.0, z],
                "image_orientation": list(AXIAL), "pixel_spacing": [1.0, 1.0],
                "frame_of_reference_uid": "1.2.3", "frames": frames}
    return SeriesSlice.from_geometry(instance_id, geometry, records)


def _pages(**more: Any) -> dict[str, Any]:
    return {"page": lambda i: f"/study/9?instance={i}",
            "image": lambda i: f"/instance/{i}/frame/0.png", **more}


def _shuffled_series(z_of: dict[int, float], lesion_at: dict[float, list[dict[str, Any]]]):
    """Slices given in id order (not position order); the views with the stored records."""
    slices = [_slice(i, z, lesion_at.get(z, [])) for i, z in sorted(z_of.items())]
    views = {i: View(i, assessment="finding" if lesion_at.get(z) else "no_finding",
                     lesions=lesion_at.get(z, [])) for i, z in z_of.items()}
    return series_volume(slices, "1.2.3.4", "CT"), views


# -- the dict ----------------------------------------------------------------------------


def test_slices_go_by_position_and_the_lesion_s_slices_carry_its_number():
    z_of = {11: 12.5, 12: 0.0, 13: 7.5, 14: 2.5, 15: 15.0, 16: 5.0, 17: 10.0}
    big, small = _record(), _record((150, 150, 154, 154))
    lesion_at = {5.0: [big], 7.5: [big], 10.0: [big, small]}
    volume, views = _shuffled_series(z_of, lesion_at)
    assert volume.read_as == "volume" and len(volume.lesions) == 2
    stack = build_stack(volume, views, 13, **_pages())
    assert stack is not None
    assert [s["instance_id"] for s in stack["slices"]] == [12, 14, 16, 13, 17, 11, 15]
    assert (stack["count"], stack["index"], stack["number"]) == (7, 3, 4)
    assert stack["previous"]["instance_id"] == 16 and stack["next"]["instance_id"] == 17
    assert [s["lesions"] for s in stack["slices"]] == [[], [], [1], [1], [1, 2], [], []]
    assert [s["marked"] for s in stack["slices"]] == [False, False, True, True, True,
                                                      False, False]
    first, second = stack["lesions"]
    assert (first["number"], first["slices"], first["first"], first["last"]) == (
        1, [2, 3, 4], 3, 5)
    assert (second["number"], second["slices"]) == (2, [4])
    assert stack["slices"][4]["marks"] == [{"number": 1, "box": [40.0, 40.0, 60.0, 60.0]},
                                           {"number": 2, "box": [150.0, 150.0, 154.0, 154.0]}]
    assert sum(bool(s["key_of"]) for s in stack["slices"]) >= 1
    assert stack["slices"][3]["url"] == "/study/9?instance=13"
    assert stack["slices"][3]["image_url"] == "/instance/13/frame/0.png"
    assert stack["volume"] and stack["roomy"]
    client = json.loads(json.dumps(stack["client"]))  # what the page hands the script
    assert client["index"] == 3 and client["current"] == 13
    assert [s["id"] for s in client["slices"]] == [12, 14, 16, 13, 17, 11, 15]
    assert client["slices"][4]["lesions"] == [1, 2]


def test_numbers_follow_the_study_s_3d_table_and_the_window_stays():
    volume, views = _shuffled_series({1: 0.0, 2: 2.5, 3: 5.0}, {2.5: [_record()]})
    stack = build_stack(volume, views, 1, first_number=4, window={"centre": 40.0,
                                                                  "width": 400.0},
                        bare_page=lambda i: f"/bare/{i}", **_pages())
    assert [s["lesions"] for s in stack["slices"]] == [[], [4], []]
    assert stack["lesions"][0]["number"] == 4 and stack["slices"][1]["key_of"] == [4]
    assert stack["window"] == {"centre": 40.0, "width": 400.0}
    assert stack["client"]["slices"][0]["page"] == "/bare/1"
    assert stack["previous"] is None and stack["next"]["instance_id"] == 2


def test_a_series_read_per_slice_goes_by_instance_id_with_its_records_marked():
    slices = [_slice(i, None, []) for i in (7, 3, 5)]  # no positions: read per slice
    volume = series_volume(slices)
    assert (volume.read_as, volume.reason) == ("per_slice", "no_positions")
    views = {3: View(3), 5: View(5, assessment="finding", lesions=[_record(), _record()]),
             7: View(7, assessment="not_assessable", lesions=[_record()])}
    stack = build_stack(volume, views, 5, **_pages())
    assert [s["instance_id"] for s in stack["slices"]] == [3, 5, 7]
    assert [s["marked"] for s in stack["slices"]] == [False, True, False]
    assert [m["number"] for m in stack["slices"][1]["marks"]] == [1, 2]
    assert stack["lesions"] == [] and not stack["volume"]
    assert stack["slices"][1]["key_of"] == []


@pytest.mark.parametrize("case", ["single", "multi_frame", "cine_before_geometry", "elsewhere"])
def test_what_is_no_stack(case):
    views = {1: View(1), 2: View(2)}
    if case == "single":
        volume = series_volume([_slice(1, 0.0, [])])
    elif case == "multi_frame":
        volume = series_volume([_slice(1, 0.0, [], frames=6), _slice(2, 2.5, [], frames=6)])
    elif case == "cine_before_geometry":
        volume = series_volume([SeriesSlice.from_geometry(1, None),
                                SeriesSlice.from_geometry(2, None)])
        views = {1: View(1, frames_inferred=8), 2: View(2, frames_inferred=8)}
    else:
        volume = series_volume([_slice(1, 0.0, []), _slice(2, 2.5, [])])
    current = 3 if case == "elsewhere" else 1
    assert build_stack(volume, views, current, **_pages()) is None


def test_page_keys_move_a_tenth_of_the_stack():
    assert [page_step(n) for n in (2, 8, 40, 300)] == [1, 1, 4, 30]


# -- the page, on a box the real worker filled ---------------------------------------------


@pytest.fixture(scope="module")
def stack_box(tmp_path_factory, demo_runner):
    return build_stack_state(tmp_path_factory.mktemp("stack"), demo_runner)


@pytest.fixture
def stack_client(stack_box):
    from web.app import create_app

    client = ViewerClient(create_app(stack_box.config))
    assert client.login(*CLINICIAN).status_code == 302
    return stack_box, client


def _page(client: ViewerClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def _nav(html: str) -> str:
    found = re.search(r'<nav class="series-stack.*?</nav>', html, re.S)
    assert found, "no stack on the page"
    return found.group(0)


def test_the_page_shows_the_series_as_a_stack_in_position_order(stack_client):
    state, client = stack_client
    assert state.landed != state.ordered  # landed shuffled
    shown = state.landed[0]
    place = state.ordered.index(shown)
    html = _page(client, f"/study/{state.study_id}?instance={shown}")
    nav = _nav(html)
    assert html.index('id="viewer"') < html.index('id="series-stack"') \
        < html.index('id="measurements"')
    assert f"slice {place + 1} of {SLICES}" in nav
    options = [int(v) for v in re.findall(r'<option value="(\d+)"', nav)]
    assert options == state.ordered  # the no-script list, in position order
    assert f'<option value="{shown}" selected>' in nav
    data = json.loads(html_module.unescape(
        re.search(r'id="stack-data" hidden data-stack="([^"]*)"', nav).group(1)))
    assert [s["id"] for s in data["slices"]] == state.ordered and data["index"] == place
    assert all(s["image"] == f"/instance/{s['id']}/frame/0.png" for s in data["slices"])
    # the lesion's slices, as the box read them, are the marked ones with its number
    marked = sorted(int(i) for i in re.findall(r'class="stack-mark[^"]*" href="[^"]+"'
                                               r' data-index="(\d+)"', nav))
    assert marked == sorted({k for slices in state.lesion_slices for k in slices})
    assert marked and len(marked) < SLICES
    chips = {int(n) for n in re.findall(r'<span class="stack-chip">([\d,]+)</span>', nav)
             for n in n.split(",")}
    assert chips == set(range(1, len(state.lesion_slices) + 1))
    for k in state.lesion_slices[0]:
        assert f"slice {k + 1}: lesion 1" in nav


def test_without_script_every_move_is_a_link_to_the_slice_s_page(stack_client):
    state, client = stack_client
    study = state.study_id
    nav = _nav(_page(client, f"/study/{study}?instance={state.ordered[0]}"))
    assert 'id="stack-previous" rel="prev" aria-disabled="true"' in nav
    following = re.search(r'id="stack-next" rel="next" href="([^"]+)"', nav).group(1)
    assert following == f"/study/{study}?instance={state.ordered[1]}"
    assert 'method="get"' in nav and f'action="/study/{study}"' in nav
    assert 'name="instance"' in nav  # the slice list submits ?instance=ID
    nav = _nav(_page(client, following.replace("&amp;", "&")))
    assert f"slice 2 of {SLICES}" in nav
    nav = _nav(_page(client, f"/study/{study}?instance={state.ordered[-1]}"))
    assert 'id="stack-next" rel="next" aria-disabled="true"' in nav
    for k, instance in enumerate(state.ordered):
        if any(k in slices for slices in state.lesion_slices):
            assert f'href="/study/{study}?instance={instance}" data-index="{k}"' in nav
    # the slider and the gesture hint wait for the script
    assert re.search(r'id="stack-slider"[^>]*hidden', nav)
    assert re.search(r'id="stack-hint" hidden', nav)


def test_the_window_asked_for_stays_on_every_slice_s_link(stack_client):
    state, client = stack_client
    nav = _nav(_page(client, f"/study/{state.study_id}?instance={state.ordered[3]}"
                             "&centre=50&width=350"))
    following = re.search(r'id="stack-next" rel="next" href="([^"]+)"', nav).group(1)
    assert "centre=50.0" in following and "width=350.0" in following
    assert '<input type="hidden" name="centre" value="50.0">' in nav
    data = json.loads(html_module.unescape(
        re.search(r'id="stack-data" hidden data-stack="([^"]*)"', nav).group(1)))
    assert "centre" not in data["slices"][0]["page"]  # the script adds the window it shows


def test_a_single_image_has_no_stack(stack_client):
    state, client = stack_client
    html = _page(client, f"/study/{state.single_study_id}")
    assert 'id="series-stack"' not in html and "series_stack.js" not in html


# -- the script's arithmetic (Node) ----------------------------------------------------------

SCRIPT = """
const s = require(process.argv[1]);
console.log(JSON.stringify({
  keys: ["ArrowDown", "ArrowUp", "ArrowRight", "ArrowLeft", "PageDown", "PageUp", "Home",
         "End", "a"].map((k) => s.keyTarget(k, 3, 8, 2)),
  ends: [s.keyTarget("ArrowUp", 0, 8, 1), s.keyTarget("PageDown", 7, 8, 3)],
  notch: s.wheelSteps(0, 100, 0), back: s.wheelSteps(0, -53, 0), lines: s.wheelSteps(0, 3, 1),
  touchpad: [s.wheelSteps(0, 15, 0), s.wheelSteps(15, 15, 0), s.wheelSteps(30, 15, 0)],
  still: s.swipeTarget(2, 4, 6, null, 8, 400),
  up: s.swipeTarget(2, 3, -120, null, 8, 400),
  left: s.swipeTarget(2, -100, 5, null, 8, 400),
  down: s.swipeTarget(2, 0, 500, "y", 8, 400),
  long: s.swipeTarget(0, 0, -80, "y", 300, 600),
  strip: s.stripLayout(544, 44, 6),
  window: s.withWindow("/instance/4/frame/0.png", {centre: "40", width: "400"},
                       "https://box/study/1"),
  none: s.withWindow("/study/1?instance=4", null, "https://box/"),
  label: s.labelFor("第 {n} 层，共 8 层", 3),
}));
"""


def test_the_script_s_moves():
    assert NODE, "Node.js runs the viewer's pure JS functions (Debian: nodejs)"
    out = subprocess.run([NODE, "-e", SCRIPT, str(STACK_JS)], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    got = json.loads(out)
    assert got["keys"] == [4, 2, 4, 2, 5, 1, 0, 7, None]
    assert got["ends"] == [0, 7]
    assert got["notch"] == {"steps": 1, "rest": 0} and got["back"]["steps"] == -1
    assert got["lines"]["steps"] == 1
    assert [t["steps"] for t in got["touchpad"]] == [0, 0, 1]
    assert got["still"] == {"axis": None, "index": 2}
    assert got["up"] == {"axis": "y", "index": 4}  # 120 px up at 48 px a slice: 2 forward
    assert got["left"] == {"axis": "x", "index": 4}
    assert got["down"] == {"axis": "y", "index": 0}
    assert got["long"] == {"axis": "y", "index": 10}  # 300 slices: 8 px each
    assert got["strip"] == {"cell": 100, "margin": -28}
    assert got["window"] == "/instance/4/frame/0.png?centre=40&width=400"
    assert got["none"] == "/study/1?instance=4"
    assert got["label"] == "第 3 层，共 8 层"
