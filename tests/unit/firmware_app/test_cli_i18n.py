"""The ``clinibox`` commands in Simplified Chinese: the terminal's language, else the clinic's.

``clinibox selftest``, ``status``, ``results`` and ``user`` print for people in the
language of ``LC_ALL`` / ``LC_MESSAGES`` / ``LANG`` (``zh_CN.UTF-8``), or, on a
terminal that names none, ``[web] language``; ``--json`` stays English (a contract);
services (``serve``, ``web`` …) never switch.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys

import pytest

from clinibox.table import main
from firmware_app.cli.language import ENGLISH_COMMANDS, command_language
from firmware_app.ops.selftest import FAIL, PASS, SKIP, WARN, Check, render_table
from tests.i18n_text import english_sentences, is_chinese

GOOD = "correct horse battery"


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "clinibox.toml"
    path.write_text(f'[storage]\nstate_dir = "{(tmp_path / "state").as_posix()}"\n'
                    "[dicom]\nenabled = false\n")
    return path


def _chinese_terminal(monkeypatch) -> None:
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")


@pytest.mark.parametrize(("environ", "configured", "expected"), [
    ({"LANG": "zh_CN.UTF-8"}, "", "zh_CN"),
    ({"LANG": "en_US.UTF-8"}, "zh_CN", "en"),  # the terminal names English: English
    ({"LANG": "C.UTF-8"}, "zh_CN", "zh_CN"),  # it names none: the clinic's setting
    ({}, "zh_CN", "zh_CN"), ({}, "", "en"), ({"LC_ALL": "zh_CN.UTF-8"}, "en", "zh_CN"),
])
def test_the_command_language(tmp_path, environ, configured, expected):
    path = tmp_path / "c.toml"
    path.write_text(f'[web]\nlanguage = "{configured}"\n')
    args = argparse.Namespace(command="status", config=str(path), json=False)
    assert command_language(args, environ) == expected
    args.json = True
    assert command_language(args, environ) == "en"
    assert {"serve", "web", "service-failed", "usb-import", "config"} <= ENGLISH_COMMANDS


def test_a_bad_config_leaves_the_language_to_the_command(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[web]\nlanguage = \"klingon\"\n")
    args = argparse.Namespace(command="status", config=str(path), json=False)
    assert command_language(args, {}) == "en"


@pytest.mark.slow
def test_the_selftest_table_in_chinese(config_path, capsys, monkeypatch):
    _chinese_terminal(monkeypatch)
    status = main(["selftest", "--config", str(config_path), "--timeout", "0.5"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert status == 1  # no device identity in a fresh state folder
    assert lines[0].split() == ["检查项", "结果", "详情"]
    names = [line.split("  ")[0].strip() for line in lines[1:-1]]
    assert names == ["模型包", "基准用例", "DICOM 连通测试", "磁盘空间", "时钟", "消息服务器",
                     "设备身份", "医院公钥", "签名密钥"]
    rows = dict(zip(names, lines[1:-1], strict=True))
    assert "通过" in rows["模型包"] and "个模型文件与其 sha256 一致" in rows["模型包"]
    assert "通过" in rows["基准用例"] and "个基准用例在" in rows["基准用例"]
    assert "跳过" in rows["DICOM 连通测试"] and "DICOM 接收服务已关闭" in rows["DICOM 连通测试"]
    assert "失败" in rows["设备身份"] and "请运行 clinibox provision" in rows["设备身份"]
    assert "注意" in rows["签名密钥"] and "仅供演示" in rows["签名密钥"]
    assert lines[-1].startswith("自检未通过：设备身份（通过 ")
    # columns line up on a terminal: each status starts at the same column
    from clinibox_common.i18n.text import display_width

    starts = {display_width(line[:line.index(word)]) for line in lines[1:-1]
              for word in ("通过", "注意", "跳过", "失败") if f"  {word}  " in line}
    assert len(starts) == 1
    # what is left in English is data: paths, ids, key ids, [section] keys, numbers
    prose = re.sub(r"\S*/\S*", "", " ".join(line.split("  ", 2)[-1] for line in lines))
    for data in ("min_free_mb", "max_disk_used_pct", "trust_demo_key"):
        prose = prose.replace(data, "")
    assert english_sentences(prose) == []

    main(["selftest", "--json", "--config", str(config_path), "--timeout", "0.5"])
    report = json.loads(capsys.readouterr().out)  # the contract: English, whatever the terminal
    assert [c["name"] for c in report["checks"]][:3] == ["model package", "golden cases",
                                                          "DICOM echo"]
    assert not any(is_chinese(c["detail"]) for c in report["checks"])


def test_render_table_in_english_is_unchanged():
    from clinibox_common.i18n import use_locale

    checks = [Check("clock", PASS, "fine"), Check("broker", SKIP, "none"),
              Check("disk space", WARN, "low"), Check("DICOM echo", FAIL, "no")]
    assert render_table(checks).splitlines() == [
        "CHECK       RESULT  DETAIL", "clock       PASS    fine", "broker      SKIP    none",
        "disk space  WARN    low", "DICOM echo  FAIL    no",
        "selftest FAILED: DICOM echo (1 pass, 1 warn, 1 skip, 1 fail)"]
    with use_locale("zh_CN"):
        assert render_table(checks).splitlines()[-1] == \
            "自检未通过：DICOM 连通测试（通过 1 项、注意 1 项、跳过 1 项、失败 1 项）"


def test_status_results_and_user_in_chinese(config_path, capsys, monkeypatch):
    _chinese_terminal(monkeypatch)
    assert main(["status", "--config", str(config_path)]) == 0
    out = capsys.readouterr().out
    assert "已接收: 0" in out and "上次按期清理: 从未" in out
    assert main(["status", "--json", "--config", str(config_path)]) == 0
    assert json.loads(capsys.readouterr().out)["received"] == 0
    assert main(["results", "--config", str(config_path)]) == 0

    monkeypatch.setattr(sys, "stdin", io.StringIO(GOOD + "\n"))
    assert main(["user", "add", "nadia", "--role", "clinician", "--password-stdin",
                 "--config", str(config_path)]) == 0
    assert capsys.readouterr().out.strip() == "已添加账号 nadia（临床人员）"
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["user", "add", "olga", "--role", "clinician", "--password-stdin",
                 "--config", str(config_path)]) == 1
    assert "密码少于 10 个字符" in capsys.readouterr().err
    assert main(["user", "add", "nadia", "--role", "clinician",
                 "--config", str(config_path)]) == 1
    assert "账号 nadia 已存在" in capsys.readouterr().err
    assert main(["user", "list", "--config", str(config_path)]) == 0
    assert capsys.readouterr().out.split() == ["nadia", "临床人员"]
    assert main(["audit", "--verify", "--config", str(config_path)]) == 0
    assert capsys.readouterr().out.strip().startswith("审计链：完好（")


def test_the_clinics_setting_speaks_on_a_neutral_terminal(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(f'[storage]\nstate_dir = "{(tmp_path / "state").as_posix()}"\n'
                    '[web]\nlanguage = "zh_CN"\n')
    assert main(["audit", "--verify", "--config", str(path)]) == 0  # LANG=C.UTF-8 (conftest)
    assert capsys.readouterr().out.strip().startswith("审计链：完好")


@pytest.mark.slow
def test_infer_batch_in_chinese(tmp_path, capsys, monkeypatch):
    """``clinibox infer`` in batch speaks Chinese on a Chinese terminal, its HTML summary
    too (data — paths, ids, names — shown as recorded); ``--json`` stays English."""
    import numpy as np

    from phantoms.dicom import ct_dataset, write_dicom
    from phantoms.images import generate
    from tests.i18n_text import visible_text

    _chinese_terminal(monkeypatch)
    write_dicom(ct_dataset(generate("ct", np.random.default_rng(2), lesion=True)),
                tmp_path / "a.dcm")
    config = tmp_path / "box.toml"
    config.write_text('[runtime]\nbackend = "onnxruntime"\n')
    missing, html = tmp_path / "missing.dcm", tmp_path / "summary.html"
    assert main(["infer", "--config", str(config), "--no-progress", str(tmp_path / "a.dcm"),
                 str(missing), "--html", str(html)]) == 1
    out = capsys.readouterr().out
    assert f"未找到：{missing}" in out
    assert "已分析图像：1；检查：1" in out and "1 个路径或文件没有结果" in out
    page = html.read_text(encoding="utf-8")
    assert 'lang="zh-CN"' in page and "演示模型" in page and "每项检查的病灶数" in page
    assert english_sentences(visible_text(page)) == []
    assert main(["infer", "--config", str(config), "--json", str(missing)]) == 2
    assert json.loads(capsys.readouterr().out) == [
        {"file": str(missing), "status": "not_found", "reason": ""}]


@pytest.mark.slow
def test_rollback_selftest_and_the_live_lines_of_status_in_chinese(tmp_path, capsys,
                                                                   monkeypatch):
    """``model rollback`` (done and refused), a failing ``selftest`` and the live lines of
    ``status`` print Chinese words, not the English refusal, log lines or an exception's
    words ("[Errno 1414092869] Immediate exit requested")."""
    from firmware_app.models.install import install
    from firmware_app.settings.box import load
    from firmware_app.storage.live_frames import FrameWriter, live_root
    from tests.model_packages import make_package

    path = tmp_path / "clinibox.toml"
    path.write_text(f'[storage]\nstate_dir = "{(tmp_path / "state").as_posix()}"\n'
                    '[dicom]\nenabled = false\n[runtime]\nbackend = "onnxruntime"\n'
                    'precision = "fp32"\n'
                    '[[live.sources]]\nname = "us-1"\nurl = "rtsp://127.0.0.1:9/live"\n')
    config = load(str(path))
    install(config, make_package(tmp_path / "packages", "1.1.0"))
    _chinese_terminal(monkeypatch)
    capsys.readouterr()
    assert main(["model", "install", str(make_package(tmp_path / "packages", "1.2.0")),
                 "--config", str(path)]) == 0
    installed = capsys.readouterr()
    assert "个基准用例在" in installed.out and "golden" not in installed.out, installed.out
    assert english_sentences(re.sub(r"\S*/\S*", "", installed.out)) == [], installed.out
    assert main(["model", "status", "--config", str(path)]) == 0
    history = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert history[-1].endswith("已安装 1.2.0，签名密钥 " + history[-1].split()[-1])
    assert all(english_sentences(line) == [] for line in history), history

    assert main(["model", "rollback", "--config", str(path)]) == 0
    done = capsys.readouterr()
    assert done.out.strip() == ("已从 clinibox-demo-lesion@1.2.0 退回到 "
                                "clinibox-demo-lesion@1.1.0；正在运行的服务现在就切换")
    assert "rolled back" not in done.err and "WARNING" not in done.err  # no English log line
    assert main(["model", "rollback", "--config", str(path)]) == 1
    refused = capsys.readouterr()
    assert refused.err.strip() == "已拒绝：没有可退回的旧模型包", refused.err

    FrameWriter(live_root(config.state_dir), "us-1", 5.0).write_state(
        {"state": "disconnected", "fps": 0.0, "analysed": 0, "dropped": 0,
         "detail": {"error": "[Errno 1414092869] Immediate exit requested"}})
    assert main(["status", "--config", str(path)]) == 0
    status = capsys.readouterr().out
    live = next(line for line in status.splitlines() if line.startswith("  us-1: "))
    assert "Errno" not in status and "Immediate" not in status and "disconnected" not in live
    assert is_chinese(live) and english_sentences(live) == [], live

    (config.model_store_dir / "clinibox-demo-lesion" / "1.1.0" / "manifest.json").write_text(
        "{}")  # the running package broken: the self-test fails it
    main(["selftest", "--config", str(path), "--timeout", "0.5"])
    table = capsys.readouterr().out
    details = " ".join(line.split("  ", 2)[-1] for line in table.splitlines())
    prose = re.sub(r"\S*/\S*|\[\w+\] \w+|\w+_\w+(\.\w+)?", "", details)
    assert "manifest" not in table and "Errno" not in table, table
    assert english_sentences(prose) == [], english_sentences(prose)
    assert main(["model", "status", "--config", str(path)]) == 0
    running = capsys.readouterr().out.splitlines()[0]
    assert "manifest" not in running and english_sentences(running) == [], running


def test_a_chinese_command_leaves_the_callers_logging_as_it_was(config_path, monkeypatch):
    """A command in Chinese keeps English log lines for the journal (ERROR and above on the
    terminal) only while it runs: a caller in the same process (a script, the next test)
    still gets its WARNING lines."""
    import logging

    _chinese_terminal(monkeypatch)
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.INFO)
    assert main(["status", "--config", str(config_path)]) == 0
    assert root.level == logging.INFO
