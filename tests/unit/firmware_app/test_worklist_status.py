"""The clinic's worklist in ``clinibox status`` and ``clinibox selftest``: the same truth as
the device page (``storage/worklist.py`` read by ``storage/status.box_status``, said by
``words/worklist_words.py``), codes in ``--json``, words in the terminal's language.
(Against a real worklist: tests/integration/test_worklist_orthanc.py.)"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from clinibox.table import main
from clinibox_common.i18n import gettext, use_locale
from firmware_app.ops import selftest
from firmware_app.ops.selftest import FAIL, SKIP, Check, check_worklist, run_checks
from firmware_app.settings.box import load
from firmware_app.storage import db, worklist
from firmware_app.storage.worklist import WorklistItem, WorklistState
from firmware_app.words import worklist_words
from tests.i18n_text import is_chinese
from tests.ports import free_port


def _box(tmp_path: Path, enabled: bool = True) -> Path:
    """A box with no receiver whose worklist (when ``enabled``) is a port nobody listens on."""
    config = tmp_path / "clinibox.toml"
    config.write_text(f'[storage]\nstate_dir = "{(tmp_path / "state").as_posix()}"\n'
                      "[dicom]\nenabled = false\n"
                      f"[worklist]\nenabled = {str(enabled).lower()}\nhost = \"127.0.0.1\"\n"
                      f"port = {free_port()}\ntimeout = 2\n")
    box = load(config)
    db.private_state_dir(box.state_dir)
    with contextlib.closing(db.open_database(box.database_path)):
        pass
    return config


def _set(config: Path, state: WorklistState, reason: str = "", now: float = 0.0) -> None:
    with contextlib.closing(db.connect(load(config).database_path)) as conn:
        if state == WorklistState.OK:
            worklist.replace_items(conn, [WorklistItem(patient_id="P-1"),
                                          WorklistItem(patient_id="P-2")], now=now)
        else:
            worklist.set_state(conn, state, reason, now=now)


def _status_json(config: Path, capsys) -> dict:
    assert main(["status", "--json", "--config", str(config)]) == 0
    return json.loads(capsys.readouterr().out)["worklist"]


def test_status_json_carries_the_state_code_the_reason_code_and_the_last_answer(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LANG", "C")
    config = _box(tmp_path)
    assert _status_json(config, capsys) == {"state": "off", "reason": "", "items": 0,
                                            "answered_at": None, "checked_at": None,
                                            "enabled": True}
    _set(config, WorklistState.OK, now=1_800_000_000.0)
    _set(config, WorklistState.DOWN, "refused", now=1_800_000_060.0)
    assert _status_json(config, capsys) == {"state": "down", "reason": "refused", "items": 2,
                                            "answered_at": 1_800_000_000.0,
                                            "checked_at": 1_800_000_060.0, "enabled": True}


@pytest.mark.parametrize("language", ["en", "zh_CN"])
def test_status_says_where_the_worklist_stands_in_the_terminals_language(
        tmp_path, capsys, monkeypatch, language):
    monkeypatch.setenv("LANG", "zh_CN.UTF-8" if language == "zh_CN" else "C")
    config = _box(tmp_path)
    _set(config, WorklistState.DOWN, "timeout", now=1_800_000_000.0)
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    with use_locale(language):
        heading = gettext("Today's appointment list (worklist)")
        down = worklist_words.not_answering("timeout")
        never = gettext("never")
    lines = out.splitlines()
    at = lines.index(heading)
    assert down in lines[at + 1] and never in lines[at + 2]
    _set(config, WorklistState.OK, now=1_800_000_100.0)
    assert main(["status", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    with use_locale(language):
        ok = worklist_words.answering(2)
    assert ok in lines[lines.index(heading) + 1] and never not in lines[lines.index(heading) + 2]
    if language == "zh_CN":
        assert is_chinese(down) and is_chinese(ok) and is_chinese(heading)
        assert "timeout" not in out and "down" not in out
    else:
        assert down == "not answering: it did not answer in time"
        assert ok == "answering: 2 appointments today"


def test_status_says_nothing_of_a_worklist_the_box_does_not_ask(tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.setenv("LANG", "C")
    config = _box(tmp_path, enabled=False)
    assert main(["status", "--config", str(config)]) == 0
    assert "appointment list" not in capsys.readouterr().out
    assert _status_json(config, capsys)["enabled"] is False


def test_every_down_reason_has_its_words_in_english_and_chinese():
    assert set(worklist_words.DOWN_WORDS) == set(worklist.DOWN_REASONS)
    for reason in worklist.DOWN_REASONS:
        with use_locale("zh_CN"):
            said = worklist_words.not_answering(reason)
        assert is_chinese(said) and reason not in said, reason
    assert worklist_words.down_reason("no such code") == worklist_words.down_reason("failed")


@pytest.mark.parametrize("language", ["en", "zh_CN"])
def test_selftest_fails_a_worklist_that_does_not_answer_saying_why(tmp_path, language):
    config = load(_box(tmp_path))
    with use_locale(language):
        check = check_worklist(config)
        why = worklist_words.not_answering("unreachable")
    assert check.name == "appointment list" and check.status == FAIL
    assert check.detail == f"WORKLIST@127.0.0.1:{config.worklist.port}: {why}"
    if language == "zh_CN":
        assert is_chinese(check.detail)


def test_selftest_says_nothing_of_a_worklist_the_box_does_not_ask(tmp_path, monkeypatch):
    # the demo model's golden cases take seconds and say nothing of the worklist
    monkeypatch.setattr(selftest, "check_golden_cases",
                        lambda _config, _package: Check("golden cases", SKIP, "not run here"))
    names = [check.name for check in run_checks(load(_box(tmp_path, enabled=False)), 1.0)]
    assert "appointment list" not in names and "disk space" in names
    (tmp_path / "on").mkdir()
    names = [check.name for check in run_checks(load(_box(tmp_path / "on")), 1.0)]
    assert names[-1] == "appointment list"
