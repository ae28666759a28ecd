"""``--extra-validation``'s case.json is untrusted: deep, wrongly typed, linked or huge files
are refused with a DataError naming the file (exit status 2), never a traceback."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from clinibox_common.errors import EXIT_USAGE, run_command
from converters import case_file
from converters.case_file import MAX_DEPTH, nesting_depth
from converters.data import DataError
from converters.feedback import CASE_FILE, labelled_images

IMAGE = {"file": "IMAGE0001.dcm", "assessment": "finding", "finding": True,
         "verdict": "disagree"}


def _case(folder: Path, record: object, name: str = "CASE0001") -> Path:
    """A case folder holding one image file and ``record`` as its case.json."""
    case = folder / name
    case.mkdir(parents=True)
    (case / "IMAGE0001.dcm").write_bytes(b"not read here")
    path = case / CASE_FILE
    path.write_text(record if isinstance(record, str) else json.dumps(record))
    return path


def _record(**image: object) -> dict:
    return {"format": case_file.CASE_FORMAT, "images": [{**IMAGE, **image}]}


def test_a_good_case_is_read(tmp_path):
    _case(tmp_path, _record())
    _case(tmp_path, _record(assessment="not_assessable", file=None), name="CASE0002")
    assert labelled_images(tmp_path) == [
        ((tmp_path / "CASE0001" / "IMAGE0001.dcm").resolve(), 0)]


def test_a_5000_level_file_is_refused_before_it_is_parsed(tmp_path, capsys):
    deep = '{"format": "clinibox-disagreement/1", "images": ' + "[" * 5000 + "]" * 5000 + "}"
    path = _case(tmp_path, deep)
    with pytest.raises(DataError, match=f"nested more than {MAX_DEPTH} levels deep") as caught:
        labelled_images(tmp_path)
    assert str(path) in str(caught.value)
    assert run_command("clinibox convert", lambda: len(labelled_images(tmp_path))) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err


def test_brackets_inside_strings_do_not_count():
    assert nesting_depth('{"a": ["x[[[{{", "\\"]]]", {"b": []}]}') == 4
    assert nesting_depth("[" * (MAX_DEPTH + 50)) == MAX_DEPTH + 1  # stops counting early


@pytest.mark.parametrize(("record", "message"), [
    ([1, 2], "not a clinibox disagreement case"),
    ({"format": case_file.CASE_FORMAT, "images": "IMAGE0001.dcm"}, "images is a string"),
    ({"format": case_file.CASE_FORMAT, "images": [7]}, r"images\[0\] is a number"),
    (_record(file=["IMAGE0001.dcm"]), r"images\[0\]\.file is a list, not a string"),
    (_record(finding="yes"), r"images\[0\]\.finding is a string, not a boolean or null"),
    (_record(verdict={"v": 1}), r"images\[0\]\.verdict is an object"),
    (_record(assessment=1.5), r"images\[0\]\.assessment is a number"),
    ('{"format": ', "not a readable case.json"),
    (json.dumps(_record(file="I\x00.dcm")), "is not in the case"),
    (json.dumps(_record(file="../../../etc/passwd")), "is not in the case"),
])
def test_wrong_values_name_the_file_and_the_value(tmp_path, record, message):
    path = _case(tmp_path, record)
    with pytest.raises(DataError, match=message) as caught:
        labelled_images(tmp_path)
    assert str(tmp_path) in str(caught.value) and CASE_FILE in str(caught.value)
    assert path.exists()


def test_a_linked_case_json_and_a_linked_image_are_refused(tmp_path):
    data = tmp_path / "data"
    real = _case(tmp_path / "elsewhere", _record())
    case = data / "CASE0001"
    case.mkdir(parents=True)
    (case / CASE_FILE).symlink_to(real)
    with pytest.raises(DataError, match="symbolic link"):
        labelled_images(data)
    (case / CASE_FILE).unlink()
    (case / CASE_FILE).write_text(json.dumps(_record()))
    (case / "IMAGE0001.dcm").symlink_to(real.parent / "IMAGE0001.dcm")  # outside the data
    with pytest.raises(DataError, match="not in the case"):
        labelled_images(data)


def test_a_case_folder_outside_the_data_folder_is_refused(tmp_path):
    elsewhere = _case(tmp_path / "elsewhere", _record())
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(DataError, match="outside the extra validation folder"):
        case_file.read_case(elsewhere, data)


def test_a_huge_file_and_a_fifo_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(case_file, "MAX_CASE_BYTES", 64)
    _case(tmp_path / "big", _record())
    with pytest.raises(DataError, match=r"bytes \(at most 64\)"):
        labelled_images(tmp_path / "big")
    case = tmp_path / "fifo" / "CASE0001"
    case.mkdir(parents=True)
    os.mkfifo(case / CASE_FILE)
    found: list[BaseException] = []

    def read() -> None:
        try:
            labelled_images(tmp_path / "fifo")
        except DataError as exc:
            found.append(exc)

    reader = threading.Thread(target=read, daemon=True)  # a blocking open would hang here
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive(), "opening a FIFO blocked"
    assert "not a regular file" in str(found[0])
