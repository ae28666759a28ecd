"""A rollout's canary count and wave size are decided in one place (issue 57):
``central.rollouts.waves_problem``.

The same bad numbers are refused, with the same problem code, by the console's rollout form,
``clinibox central rollout`` (before it reads the package) and ``rollouts.create``; each only
says the code in its own words. A fake rule patched in at that one function is obeyed by every
side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from central import rollouts
from central.config import CANARY_RANGE, WAVE_SIZE_RANGE
from clinibox import central_command
from clinibox_common.i18n import CHINESE, ENGLISH, use_locale
from tests.unit.central_console.test_console_rollouts import (  # noqa: F401
    ADMIN,
    DEMO_PUBLIC_KEY,
    _client,
    _db,
    _start_form,
    archives,
    console,
)

Problem = rollouts.WavesProblem
PAGE_WORDS = "The canary count is a number from 0 and the wave size a number from 1."
CASES = [
    (CANARY_RANGE[0] - 1, 10, Problem.CANARY),
    (CANARY_RANGE[1] + 1, 10, Problem.CANARY),
    (1, -1, Problem.WAVE_SIZE),
    (1, WAVE_SIZE_RANGE[1] + 1, Problem.WAVE_SIZE),
]


def _page(app: Any, archive: Path, canary: Any, wave_size: Any) -> tuple[int, str]:
    answer = _start_form(_client(app, ADMIN), archive.name, canary=str(canary),
                         wave_size=str(wave_size))
    return answer.status_code, answer.get_data(as_text=True)


def _cli(tmp_path: Path, archive: Path, canary: int, wave_size: int,
         capsys: Any) -> tuple[int, str]:
    config = tmp_path / "central.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/db/central.db"\n')
    code = central_command.main(["rollout", "--config", str(config), str(archive), "--to",
                                 "c1/box-1", "--canary", str(canary), "--wave-size",
                                 str(wave_size)])
    return code, capsys.readouterr().err


def _create(app: Any, archive: Path, canary: int, wave_size: int) -> str:
    package = rollouts.check_package(archive, [DEMO_PUBLIC_KEY])
    with pytest.raises(rollouts.RolloutError) as refused, \
            _db(app).transaction(write=True) as tx:
        rollouts.create(tx, package, [("c1", "box-1")], canary=canary, wave_size=wave_size,
                        pause_on_failure=False, chunk_kib=256, by="it1")
    return str(refused.value)


def _none_started(app: Any) -> bool:
    with _db(app).transaction(write=False) as tx:
        return rollouts.rollouts(tx) == []


@pytest.mark.parametrize(("canary", "wave_size", "problem"), CASES)
def test_every_side_refuses_the_same_numbers(console, archives, tmp_path, capsys,  # noqa: F811
                                             monkeypatch, canary, wave_size, problem):
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    for name in ("LC_ALL", "LANGUAGE"):
        monkeypatch.delenv(name, raising=False)
    assert rollouts.waves_problem(canary, wave_size) is problem
    status, page = _page(console, archives["good"], canary, wave_size)
    assert status == 400 and PAGE_WORDS in page
    code, said = _cli(tmp_path, archives["good"], canary, wave_size, capsys)
    with use_locale(ENGLISH):
        words = rollouts.waves_refusal(problem)
    assert code == 2 and words in said, said
    assert _create(console, archives["good"], canary, wave_size) == words
    assert _none_started(console)


def test_a_fake_rule_is_obeyed_everywhere(console, archives, tmp_path, capsys,  # noqa: F811
                                          monkeypatch):
    """Patch the one function: numbers every old check took are refused on each side."""
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    monkeypatch.setattr(rollouts, "waves_problem", lambda canary, wave_size: Problem.WAVE_SIZE)
    status, page = _page(console, archives["good"], 1, 10)
    assert status == 400 and PAGE_WORDS in page
    code, said = _cli(tmp_path, archives["good"], 1, 10, capsys)
    assert code == 2 and "--wave-size must be" in said
    assert "--wave-size must be" in _create(console, archives["good"], 1, 10)
    assert _none_started(console)


@pytest.mark.parametrize("language", [ENGLISH, CHINESE])
def test_the_command_has_words_for_every_problem(language):
    assert set(rollouts.REFUSALS) == set(Problem)
    with use_locale(language):
        said = {rollouts.waves_refusal(problem) for problem in Problem}
    assert len(said) == len(Problem) and not any("%(" in words for words in said)
    if language == CHINESE:
        assert all("整数" in words for words in said), said
