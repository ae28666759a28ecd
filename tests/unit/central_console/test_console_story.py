"""The console tells one true story, in the reader's words: a radiologist's and an IT person's
day in Chinese (``tests/console_scene.py``), read page by page.

* the whole image's probability and each lesion's model confidence in the box's own words
  and percentages (``contracts/probability_words``);
* the queue, the disk and the audit trail as the box last reported them, with their age; a
  figure not reported yet said so, not a dash;
* a priority column that is a priority, the state in its own column;
* a restart that loads a just-installed model told as such, not as "offline"; a rollout step
  the box reported five times listed once;
* every code (audit heads, audit targets) in words; no English on a Chinese page.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from central import labels
from central.config import CentralConfig
from central.store import Store
from central_console import box_story
from central_console.accounts import ConsoleAccounts
from central_console.app import create_app
from clinibox_common.contracts import probability_words
from clinibox_common.i18n import use_locale
from tests import console_scene
from tests.i18n_text import catalog_sentences, english_sentences, is_chinese, visible_text
from tests.unit.central_console.test_console_web import ADMIN, RADIOLOGIST, ConsoleClient

BOX_PAGE = f"/fleet/{console_scene.CLINIC}/{console_scene.DEVICE}"


@pytest.fixture
def scene(tmp_path) -> Any:
    """A Chinese console over the scene's store: (app, scene)."""
    config = CentralConfig()
    config.database.url = f"sqlite:///{tmp_path}/db/central.db"
    config.web.state_dir = str(tmp_path / "state")
    config.web.language = "zh_CN"
    # a hospital set up as the docs say: the receiver signs what goes down to the boxes
    config.keys.hospital_signing_key = str(tmp_path / "hospital-signing.pem")
    store = Store(config.database.url)
    accounts = ConsoleAccounts(store.database)
    accounts.add(*RADIOLOGIST, "radiologist")
    accounts.add(*ADMIN, "admin")
    made = console_scene.build(store)
    yield create_app(config, store), made
    store.close()


def _page(app: Any, who: tuple[str, str], path: str) -> str:
    client = ConsoleClient(app)
    client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN,zh;q=0.9"
    assert client.login(*who).status_code == 302
    answer = client.get(path)
    assert answer.status_code == 200, path
    return answer.get_data(as_text=True)


def _between(html: str, start: str, end: str) -> str:
    return html[html.index(start):html.index(end, html.index(start))]


@pytest.mark.slow
def test_every_console_page_reads_in_chinese_without_english_or_codes(scene):
    app, made = scene
    with app.config["CONSOLE"].store.database.transaction(write=True) as tx:  # one drifts
        tx.execute("UPDATE box_state SET drift = 1, psi_confidence = 0.41, psi_intensity = 0.02,"
                   " disagree_rate = 0.3 WHERE device = ?", (console_scene.QUIET,))
    pages = [(RADIOLOGIST, "/alerts?state=all"), (RADIOLOGIST, f"/alerts/{made.alert_id}"),
             (ADMIN, "/fleet"), (ADMIN, BOX_PAGE), (ADMIN, "/drift"), (ADMIN, "/audit"),
             (ADMIN, "/users"), (ADMIN, "/rollouts"), (ADMIN, f"/rollouts/{made.rollout_id}"),
             (ADMIN, f"/fleet/{console_scene.CLINIC}/{console_scene.QUIET}")]
    for who, path in pages:
        html = _page(app, who, path)
        assert '<html lang="zh-CN">' in html, path
        text = visible_text(html)
        assert is_chinese(text), path
        assert catalog_sentences(text) == [], (path, catalog_sentences(text))
        assert english_sentences(text) == [], (path, english_sentences(text))
        # the codes a program reads, even where a page marks data as shown as recorded
        for code in ("extends", "first", "box:", "rollout:", "heartbeat", "offline",
                     "model_installed", "downloading"):
            assert not re.search(rf">[^<]*\b{code}", html.split("<main", 1)[-1]), (path, code)


def test_probabilities_read_as_on_the_box(scene):
    app, made = scene
    html = _page(app, RADIOLOGIST, f"/alerts/{made.alert_id}")
    # the whole image's probability in the study page's sentence, the lesion's confidence
    assert "整张图像：&gt;99%（已分析的 3 张图像中最可疑的一张）" in html
    assert "报警阈值 88%" in html
    lesions = _between(html, 'id="lesions"', "</table>")
    assert "模型置信度" in lesions and "<td>77%</td>" in lesions and "12.3 mm" in lesions
    assert "模型概率" not in html
    worklist = _page(app, RADIOLOGIST, "/alerts?state=all")
    assert "整张图像 / 报警阈值" in worklist and "&gt;99%" in worklist


def test_the_study_reference_is_named_for_a_radiologist(scene):
    app, made = scene
    html = _page(app, RADIOLOGIST, f"/alerts/{made.alert_id}")
    reference = _between(html, "<dt>检查参考号</dt>", "</dd>")
    assert "5f" * 16 in reference and "不含任何患者信息" in reference
    assert "密钥哈希" not in html


def test_priority_is_a_priority_and_the_state_has_its_own_column(scene):
    app, _made = scene
    html = _page(app, RADIOLOGIST, "/alerts?state=all")
    head = _between(html, "<thead>", "</thead>")
    assert head.index("优先级") < head.index("状态") < head.index("整张图像")
    rows = re.findall(r"<tr data-alert-id.*?</tr>", html, flags=re.S)
    priorities = [_between(row, 'class="priority', "</td>") for row in rows]
    # in the worklist's order: waiting two hours, then >99 %, then 71 %
    assert ["紧急：等待过久" in priorities[0], "高" in priorities[1],
            "一般" in priorities[2]] == [True, True, True]
    assert not any("新" in priority for priority in priorities)  # the state is elsewhere
    assert all('class="badge state-new"' in _between(row, 'class="state"', "</td>")
               for row in rows)


def test_figures_are_the_latest_the_box_reported_with_their_age(scene):
    app, made = scene
    html = _page(app, ADMIN, BOX_PAGE)
    # the queue of its last heartbeat (0), not the summary's 6, and how old it is
    queue = _between(html, 'id="queue"', "</dd>")
    assert re.search(r'id="queue">0 <small class="as-of">（\d+ 分钟前上报）</small>', queue)
    disk = _between(html, 'id="disk"', "</dd>")
    assert "73%" in disk and "分钟前上报" in disk
    audit = _between(html, 'id="audit-head"', "</dd>")
    assert "第 52 条，与中心医院已见的记录衔接" in audit and "前上报" in audit
    # a box that has sent no summary yet: its disk explained on its page, not a dash
    quiet = _page(app, ADMIN, f"/fleet/{console_scene.CLINIC}/{console_scene.QUIET}")
    assert "尚未上报：设备每小时的汇总中才报告磁盘用量" in _between(quiet, 'id="disk"', "</dd>")
    fleet = _page(app, ADMIN, "/fleet")
    quiet_row = _between(fleet, f'data-box="{console_scene.CLINIC}/{console_scene.QUIET}"',
                         "</tr>")
    assert "尚未上报" in _between(quiet_row, 'class="number disk"', "</td>")
    assert ">–<" not in _between(quiet_row, 'class="number disk"', "</td>")
    # the alert page leaves a disk the box did not report out
    with app.config["CONSOLE"].store.database.transaction(write=True) as tx:
        tx.execute("UPDATE box_state SET disk_used_pct = NULL WHERE device = ?",
                   (console_scene.DEVICE,))
    alert = _page(app, RADIOLOGIST, f"/alerts/{made.alert_id}")
    box = _between(alert, 'id="box-health"', "</section>")
    assert "磁盘" not in box and "–" not in box and 'id="queue">0' in box


def test_a_restart_for_a_model_install_is_not_offline(scene):
    app, _made = scene
    html = _page(app, ADMIN, BOX_PAGE)
    assert "正在重启以安装模型" in _between(html, 'id="box-state"', "</dd>")
    fleet = _page(app, ADMIN, "/fleet")
    row = _between(fleet, f'data-box="{console_scene.CLINIC}/{console_scene.DEVICE}"', "</tr>")
    assert "正在重启以安装模型" in row and "已离线" not in row
    statuses = _between(html, 'id="statuses"', "</ul>")
    assert "正在重启以安装模型" in statuses and "已离线" not in statuses
    # three heartbeats in a row are one line
    assert statuses.count("在线") == 1 and "共 3 次" in statuses


def test_a_box_that_does_not_come_back_is_offline_after_the_restart_time():
    installed_at, went = 1000.0, 1030.0
    assert box_story.restart("offline", went, "model_installed", installed_at, went + 60) \
        == "install"
    assert box_story.restart("offline", went, "model_rolled_back", installed_at, went + 60) \
        == "rollback"
    late = went + box_story.RESTART_SECONDS + 1
    assert box_story.restart("offline", went, "model_installed", installed_at, late) is None
    # an offline without an install just before it, or an old install, is offline
    assert box_story.restart("offline", went, "model_refused", installed_at, went + 60) is None
    assert box_story.restart("offline", went + 3600, "model_installed", installed_at,
                             went + 3660) is None
    assert box_story.restart("online", went, "model_installed", installed_at, went) is None
    # the box's clock a little ahead of the hospital's: its install still explains the offline
    assert box_story.restart("offline", went, "model_installed", went + 40, went + 60) \
        == "install"
    with use_locale("zh_CN"):
        assert labels.box_state("offline", False, "install") == "正在重启以安装模型"
        assert labels.box_state("offline", True, "install") == "失联"
        assert labels.box_state("offline", False) == "已离线"


def test_a_rollout_step_reported_five_times_is_listed_once(scene):
    app, made = scene
    html = _page(app, ADMIN, BOX_PAGE)
    events = _between(html, 'id="events"', "</ul>")
    assert events.count("模型分发：正在下载") == 1 and "共 5 次" in events
    assert "（模型包的 50%）" in events  # the newest report of the run: 5 tenths
    assert events.count(f'href="/rollouts/{made.rollout_id}"') == events.count("<li>")
    # each step once, in the order the box reported them (newest first)
    steps = re.findall(r"模型分发：([^<·（ ]+)", events)
    assert steps == ["基准用例通过", "模型包已校验", "已下载", "正在下载", "设备已收到通知"]


def test_the_audit_trail_names_boxes_and_rollouts_in_words(scene):
    app, made = scene
    html = _page(app, ADMIN, "/audit")
    assert f'<a href="/rollouts/{made.rollout_id}">分发 {made.rollout_id}</a>' in html
    assert (f'<a href="{BOX_PAGE}">诊所 {console_scene.CLINIC} 的设备 '
            f'{console_scene.DEVICE}</a>') in html
    assert "box:" not in html and "rollout:" not in html


def test_ages_and_audit_heads_in_words():
    now = time.time()
    with use_locale("zh_CN"):
        assert labels.as_of(now - 180, now) == "（3 分钟前上报）"
        assert labels.as_of(now - 7200, now) == "（2 小时前上报）"
        assert labels.as_of(None, now) == ""
        assert labels.audit_head(0, "first") == "第 0 条，首次上报"
        assert labels.audit_head(None, None) == "–"
    with use_locale("en"):
        assert labels.as_of(now - 180, now) == "as of 3 min ago"
        assert labels.audit_head(52, "extends") == "row 52, continues the trail the hospital saw"
        assert labels.box_words("qingshan-1", "box-1") == "box box-1 of clinic qingshan-1"


def test_the_console_writes_a_probability_as_the_box_does():
    from firmware_app.words import wording

    for language in ("en", "zh_CN"):
        with use_locale(language):
            for value in (None, 0.0, 0.003, 0.5, 0.77, 0.994, 0.9995, 1.0):
                assert labels.probability(value) == wording.percent(value)
            # the box's sentence for a marked area carries the same words for its confidence
            [line] = wording.finding_lines([{"x0": 0, "y0": 0, "x1": 1, "y1": 1,
                                             "score": 0.77, "label": "lesion"}], None, None)
            assert probability_words.lesion_confidence(0.77) in line
    with use_locale("zh_CN"):
        assert labels.whole_image(0.9995, 3) == "整张图像：>99%（已分析的 3 张图像中最可疑的一张）"
        assert probability_words.lesion_confidence(0.77) == "模型置信度 77%"
