"""The export's leak search over a written file, a chunk at a time (file_leaks.py): it finds
what ``leaked`` finds in the whole file's bytes, wherever the chunks are cut."""

from __future__ import annotations

import pytest

from firmware_app.dicom_out.file_leaks import leaked_in_file
from firmware_app.dicom_out.leaks import leaked

VALUES = {b"DOE^JANE": "PatientName", b"20240131": "StudyDate",
          b"1.2.826.0.1.3680043.8.498.12345678901234567890": "StudyInstanceUID"}
FILLER = bytes(range(65, 91)) * 8  # no value in it, no digit


@pytest.mark.parametrize("chunk", [9, 16, 47, 64])
def test_chunks_find_what_the_whole_file_holds(tmp_path, chunk):
    """Every value at every offset, standing alone or inside a run of digits: the chunked
    search answers as the search over the whole bytes does."""
    path = tmp_path / "object.dcm"
    for value in VALUES:
        for offset in range(0, 3 * chunk):
            for before in (b"", b"7", b"X"):
                head = FILLER[:offset]
                data = (head[:-1] + before if before and head else head) + value + FILLER
                path.write_bytes(data)
                assert leaked_in_file(path, VALUES, chunk) == leaked(data, VALUES), (
                    value, offset, before)


def test_nothing_found_in_a_clean_file_and_nothing_searched_for(tmp_path):
    path = tmp_path / "object.dcm"
    path.write_bytes(FILLER * 100 + b"123456789" * 50)
    assert leaked_in_file(path, VALUES, 16) == []
    assert leaked_in_file(path, {}, 16) == []
    data = FILLER * 3 + b"DOE^JANE" + FILLER + b"x20240131"
    path.write_bytes(data)
    assert leaked_in_file(path, VALUES, 16) == ["PatientName", "StudyDate"] == leaked(
        data, VALUES)
