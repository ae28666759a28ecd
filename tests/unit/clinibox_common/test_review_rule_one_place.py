"""A hospital verdict's rule is decided in one place (issue 57): ``downlink.review_problem``.

The same bad verdict, note or follow-up gives the same problem code through the console's
review form, ``clinibox central review``, the store, the message builder
(``downlink.review_payload``) and the box opening a downlink; each side only says the code
in its own words (the page's, the command's) or refuses. A fake rule patched in at that one
function is obeyed by every side, so none keeps a check of its own.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from werkzeug.datastructures import MultiDict

from central import reviews
from central.store import Store
from central_console import views_alerts
from clinibox import central_command
from clinibox_common.contracts import downlink
from clinibox_common.contracts.envelope import Header, seal
from clinibox_common.i18n import CHINESE, ENGLISH, use_locale
from tests.telemetry_payloads import alert_payload
from tests.unit.central_console.test_console_web import RADIOLOGIST, _alert, _client, console  # noqa: F401
from tests.web_client import csrf_token

Problem = downlink.ReviewProblem
NOW = 1_800_000_000.0
TOO_LONG = "x" * (downlink.MAX_NOTE + 1)
#: (verdict, note, months) → the problem every side must find
CASES: list[tuple[str, str, int | None, Problem]] = [
    ("maybe", "", None, Problem.NO_VERDICT),
    ("refer", TOO_LONG, None, Problem.NOTE_TOO_LONG),
    ("no_action", "bell\x07", None, Problem.NOTE_NOT_TEXT),
    ("follow_up", "", None, Problem.MONTHS_MISSING),
    ("refer", "", 3, Problem.MONTHS_NOT_FOLLOW_UP),
    ("follow_up", "", 0, Problem.MONTHS_OUT_OF_RANGE),
    ("follow_up", "", downlink.MAX_FOLLOW_UP_MONTHS + 1, Problem.MONTHS_OUT_OF_RANGE),
]


@pytest.fixture
def hospital(tmp_path) -> tuple[Store, str, int]:
    """A hospital store with one alert, its configuration file and the alert's id."""
    store = Store(f"sqlite:///{tmp_path}/db/central.db")
    store.store(Header("clinic-a", "box-1", "alert", 5), alert_payload(study_ref="a" * 32), NOW)
    config = tmp_path / "central.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/db/central.db"\n')
    [alert] = store.alerts()
    yield store, str(config), int(alert["id"])
    store.close()


def _form(verdict: str, note: str, months: int | None) -> MultiDict:
    """The console's review form as a browser posts it (months only for a follow-up)."""
    return MultiDict({"verdict": verdict, "note": note,
                      "months": "" if months is None or verdict != "follow_up" else str(months)})


def _builder_problem(verdict: str, note: str, months: int | None) -> Problem | None:
    try:
        downlink.review_payload(study_ref="a" * 32, alert_seq=5, verdict=verdict, note=note,
                                reviewed_at=NOW, follow_up_months=months, created_at=NOW)
    except downlink.ReviewRefused as exc:
        return exc.problem
    return None


def _store_problem(store: Store, alert_id: int, verdict: str, note: str,
                   months: int | None) -> Problem | None:
    try:
        store.review_alert(alert_id, verdict, note, "dr-li", follow_up_months=months, now=NOW)
    except reviews.ReviewError as exc:
        return exc.problem
    return None


def _cli(config: str, alert_id: int, verdict: str, note: str, months: int | None,
         capsys: Any) -> tuple[int, str]:
    argv = ["review", "--config", config, "--verdict", verdict, "--note", note, str(alert_id)]
    code = central_command.main(argv + (["--months", str(months)] if months is not None else []))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("verdict", "note", "months", "problem"), CASES)
def test_every_side_finds_the_same_problem(hospital, capsys, monkeypatch, verdict, note,
                                           months, problem):
    store, config, alert_id = hospital
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    for name in ("LC_ALL", "LANGUAGE"):
        monkeypatch.delenv(name, raising=False)
    assert downlink.review_problem(verdict, note, months) is problem
    if verdict != "follow_up" and months is not None:  # the page sends months with a follow-up
        assert views_alerts._form_review(_form(verdict, note, months))[0] is None
    else:
        assert views_alerts._form_review(_form(verdict, note, months))[0] is problem
    assert _builder_problem(verdict, note, months) is problem
    assert _store_problem(store, alert_id, verdict, note, months) is problem
    code, said = _cli(config, alert_id, verdict, note, months, capsys)
    assert code == 2
    if problem is Problem.NO_VERDICT:  # argparse refuses it first, from the same list
        assert "invalid choice" in said and all(v in said for v in downlink.VERDICTS)
    else:
        with use_locale(ENGLISH):
            assert reviews.refusal(problem, verdict) in said, said
    assert store.alert(alert_id)["state"] == "new" and store.downlinks("clinic-a", "box-1") == []


@pytest.mark.parametrize(("months", "problem"), [
    (None, Problem.MONTHS_MISSING), ("", Problem.MONTHS_MISSING),
    ("six", Problem.MONTHS_OUT_OF_RANGE), ("61", Problem.MONTHS_OUT_OF_RANGE),
    (" 6 ", None)])
def test_the_form_reads_the_months_and_asks_the_rule(months, problem):
    form = MultiDict({"verdict": "follow_up", "note": " CT again\r\n"})
    if months is not None:
        form["months"] = months
    found, verdict, text, read = views_alerts._form_review(form)
    assert (found, verdict, text) == (problem, "follow_up", "CT again")
    assert read == (6 if problem is None else None)


def test_a_fake_rule_is_obeyed_everywhere(hospital, capsys, monkeypatch):
    """Patch the one function: a review every old check would pass is refused on each side."""
    store, config, alert_id = hospital
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    monkeypatch.setattr(downlink, "review_problem",
                        lambda verdict, note, months: Problem.NOTE_NOT_TEXT)
    assert views_alerts._form_review(_form("refer", "fine", None))[0] is Problem.NOTE_NOT_TEXT
    assert _builder_problem("refer", "fine", None) is Problem.NOTE_NOT_TEXT
    assert _store_problem(store, alert_id, "refer", "fine", None) is Problem.NOTE_NOT_TEXT
    code, said = _cli(config, alert_id, "refer", "fine", None, capsys)
    assert code == 2 and "control characters" in said


def test_the_page_says_the_rules_problem_in_its_words(console):  # noqa: F811
    alert_id = _alert(console, "c1", "b1", 1)
    client = _client(console, RADIOLOGIST)
    page = client.get(f"/alerts/{alert_id}").get_data(as_text=True)
    answer = client.post(f"/alerts/{alert_id}", {"verdict": "refer", "note": "bell\x07"},
                         token=csrf_token(page))
    with use_locale(ENGLISH):
        words = views_alerts.page_words(Problem.NOTE_NOT_TEXT)
    assert answer.status_code == 400 and words in answer.get_data(as_text=True)


@pytest.mark.parametrize("payload", [
    {"verdict": "follow_up", "note": ""},  # a follow-up without its months
    {"verdict": "refer", "note": "", "follow_up_months": 3},  # months with another verdict
])
def test_the_box_refuses_what_the_rule_refuses(payload):
    """The box opens a verdict only if the same rule takes it (a hand-sealed message here:
    the hospital's builder would not make it)."""
    box, hospital = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    full = {"schema": downlink.SCHEMA_VERSION, "created_at": int(NOW), "study_ref": "a" * 32,
            "alert_seq": 5, "reviewed_at": int(NOW), **payload}
    sealed = seal(Header("clinic-a", "box-1", downlink.KIND_REVIEW, 1), full,
                  box.public_key(), hospital, info=downlink.HKDF_INFO)
    with pytest.raises(downlink.DownlinkRefused) as refused:
        downlink.open_downlink(sealed, clinic="clinic-a", device="box-1",
                               hospital_key=hospital.public_key(), box_key=box, now=NOW)
    assert refused.value.reason == "schema"
    with pytest.raises(downlink.ReviewRefused):
        downlink.seal_downlink("clinic-a", "box-1", 1, full, box.public_key(), hospital)


@pytest.mark.parametrize("language", [ENGLISH, CHINESE])
def test_each_side_has_words_for_every_problem(language):
    assert set(reviews.REFUSALS) == set(Problem) == set(views_alerts.PAGE_WORDS)
    with use_locale(language):
        said = {problem: (reviews.refusal(problem, "maybe"), views_alerts.page_words(problem))
                for problem in Problem}
    for command, page in said.values():
        assert "%(" not in command and "%(" not in page
        if language == CHINESE:
            assert not any(c.isascii() and c.isalpha() for c in page), page
    # the command's words name each problem apart
    assert len({command for command, _ in said.values()}) == len(Problem)
