"""``clinibox learning status``: where the box's learning service stands, in the reader's
language, from what its supervisor last wrote (``learning/state.py``): running, nothing to
train on and why, a service that stopped (its last word too old), one that never ran, and
learning switched off; status 1 where it is on but not running."""

from __future__ import annotations

import json
import re
import time

import pytest

from clinibox.table import main
from firmware_app.learning.state import (
    NO_LABELLED_CASES,
    STALE_AFTER_S,
    LearningState,
    StateRecord,
    read_state,
    write_state,
)
from tests.i18n_text import english_sentences
from tests.unit.firmware_app.test_chinese_sweep import readable

SUPERLINK = "federation.hospital.example:9092"
LEARNING = ('[learning]\nenabled = true\nsuperlink = "federation.hospital.example:9092"\n'
            'root_certificates = "{ca}"\n')


@pytest.fixture
def box(tmp_path, monkeypatch):
    """A box's config with [learning] on, and where its supervisor writes its state."""
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    (tmp_path / "ca.pem").write_text("a CA")
    config = tmp_path / "clinibox.toml"
    config.write_text(f'[storage]\nstate_dir = "{tmp_path / "state"}"\n'
                      + LEARNING.format(ca=tmp_path / "ca.pem"))
    return config, tmp_path / "state" / "learning" / "state.json"


#: the service manager's command lines the words name (commands, not sentences)
SYSTEMD_LINE = re.compile(r"(?:systemctl|journalctl)(?: -{0,2}[a-z-]+)+")


def _english(said: str) -> list[str]:
    """English sentences left once the command lines and the SuperLink's address (data) are
    taken out."""
    return english_sentences(readable(SYSTEMD_LINE.sub(" ", said.replace(SUPERLINK, " "))))


def _status(config, capsys, *extra: str) -> tuple[int, str]:
    code = main(["learning", "status", "--config", str(config), *extra])
    said = capsys.readouterr()
    return code, said.out + said.err


def test_a_running_service_is_said_with_its_cases(box, capsys):
    config, path = box
    now = time.time()
    write_state(path, StateRecord(LearningState.RUNNING, now - 600, now, 12, 30))
    code, said = _status(config, capsys)
    assert code == 0 and "12" in said and "30" in said and "federation.hospital.example" in said
    assert _english(said) == [], said
    code, said = _status(config, capsys, "--json")
    answer = json.loads(said)
    assert code == 0 and answer["running"] is True and answer["state"] == "running"


def test_nothing_to_train_on_says_why(box, capsys):
    config, path = box
    now = time.time()
    write_state(path, StateRecord(LearningState.NO_CASES, now, now, reason=NO_LABELLED_CASES))
    code, said = _status(config, capsys)
    assert code == 0 and "确认" in said and _english(said) == [], said


def test_a_stopped_service_and_one_that_never_ran_are_status_1(box, capsys):
    config, path = box
    code, said = _status(config, capsys)
    assert code == 1 and "clinibox-learning" in said and _english(said) == [], said
    old = time.time() - STALE_AFTER_S - 60
    write_state(path, StateRecord(LearningState.RUNNING, old, old, 3, 4))
    code, said = _status(config, capsys)
    assert code == 1 and "systemctl status clinibox-learning" in said, said
    assert _english(said) == [], said
    code, said = _status(config, capsys, "--json")
    assert code == 1 and json.loads(said)["running"] is False


def test_learning_off_is_said_with_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    config = tmp_path / "clinibox.toml"
    config.write_text(f'[storage]\nstate_dir = "{tmp_path / "state"}"\n')
    code, said = _status(config, capsys)
    assert code == 0 and "enabled = true" in said and _english(said) == [], said


def test_a_damaged_state_file_is_none(tmp_path):
    path = tmp_path / "state.json"
    for text in ("", "{", '{"state": "dancing", "since": 1, "updated_at": 1}', "[1]"):
        path.write_text(text)
        assert read_state(path) is None, text


def test_learning_switched_off_while_the_service_still_runs_says_restart_it(box, capsys):
    config, path = box
    now = time.time()
    write_state(path, StateRecord(LearningState.RUNNING, now, now, 1, 1))
    config.write_text(config.read_text().replace("enabled = true", "enabled = false"))
    code, said = _status(config, capsys)
    assert code == 1 and "systemctl restart clinibox-learning" in said, said
    assert _english(said) == [], said


def test_a_state_from_a_clock_since_set_back_is_not_taken_for_now(box, capsys):
    """The hospital may set a box's clock back: a state written "in the future" is the old
    clock's, and a service that died since must not look alive."""
    config, path = box
    ahead = time.time() + 3600
    write_state(path, StateRecord(LearningState.RUNNING, ahead, ahead, 1, 1))
    code, _said = _status(config, capsys)
    assert code == 1
