"""What a received data set must be to be stored (store_checks), and that a refused one is
not stored at all (store_answer): the checks both DICOM fronts share. (Against a real
Orthanc and both receivers: tests/integration/test_ingest_refusals.py.)"""

from __future__ import annotations

import io
import logging
import struct
import time
import warnings
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite, write_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
)

from engine.imaging.dataset_values import valid_uid
from firmware_app.ingest.data_set_extent import cut_short
from firmware_app.ingest.landing import REFUSAL_EVENTS_PER_HOUR, Lander
from firmware_app.ingest.store_answer import SUCCESS, answer_store
from firmware_app.ingest.store_checks import (
    CANNOT_UNDERSTAND,
    DATA_SET_DOES_NOT_MATCH,
    HEADER_BYTES,
    OUT_OF_RESOURCES,
    Refusal,
    check_received,
)
from firmware_app.storage import db
from firmware_app.storage.spool import Spool
from tests.corpus import image_dataset, to_bytes
from tests.lying_scu import change

UID = "1.2.826.0.1.3680043.8.498.7"


@pytest.mark.parametrize(("uid", "valid"), [
    ("1.2.840.10008.5.1.4.1.1.2", True),
    ("0.0", True),
    ("1." + "2" * 62, True),                 # 64 characters
    ("1." + "2" * 63, False),                # 65
    ("1." + "2" * 5000, False),
    ("../../tmp/x", False),
    ("1.2..3", False), ("1.2.", False), (".1.2", False), ("", False),
    ("1.02.3", False),                       # leading zero in a multi-digit component
    ("1.2.3 ", False), ("1.2.3\x00", False), ("1.2.a", False),
])
def test_a_uid_is_digits_and_dots_at_most_64_characters(uid, valid):
    assert valid_uid(uid) is valid


def received(tmp_path, name="x", syntax=None, **changes) -> object:
    """A received file: an image with ``changes`` (None deletes an element)."""
    ds = image_dataset(name, sop_instance_uid=UID)
    if syntax:
        ds.file_meta.TransferSyntaxUID = syntax
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the invalid UIDs are the point
        change(ds, **changes)
    path = tmp_path / f"receiving-1-{name}.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path.write_bytes(to_bytes(ds))
    return path


@pytest.mark.parametrize(("changes", "command", "refusal"), [
    ({}, (UID + ".1", CTImageStorage), Refusal.UID_MISMATCH),
    ({}, (UID, MRImageStorage), Refusal.CLASS_MISMATCH),
    ({}, (None, CTImageStorage), Refusal.UID_MISMATCH),
    ({"SOPInstanceUID": None}, (UID, CTImageStorage), Refusal.NO_SOP_INSTANCE_UID),
    ({"SOPClassUID": None}, (UID, CTImageStorage), Refusal.NO_SOP_CLASS_UID),
    ({"SOPInstanceUID": "../../tmp/x"}, ("../../tmp/x", CTImageStorage), Refusal.INVALID_UID),
    ({"SOPInstanceUID": "1." + "2" * 5000}, ("1." + "2" * 5000, CTImageStorage),
     Refusal.INVALID_UID),
    ({"SOPInstanceUID": "1." + "2" * 5000}, (UID, CTImageStorage), Refusal.UID_MISMATCH),
    ({"SOPInstanceUID": "1." + "2" * 70000}, (UID, CTImageStorage),
     Refusal.UID_MISMATCH),  # longer than a value the check reads (deferred)
    ({"StudyInstanceUID": "1." + "2" * 70000}, (UID, CTImageStorage), Refusal.INVALID_UID),
    ({"StudyInstanceUID": "1.02.3"}, (UID, CTImageStorage), Refusal.INVALID_UID),
    ({"SeriesInstanceUID": "1.2..3"}, (UID, CTImageStorage), Refusal.INVALID_UID),
])
def test_a_data_set_that_does_not_match_its_command_is_refused(tmp_path, changes, command,
                                                               refusal):
    path = received(tmp_path, **changes)
    verdict = check_received(path, command_instance_uid=command[0],
                             command_class_uid=command[1])
    assert verdict.refusal is refusal and verdict.sop_instance_uid is None


def test_refusals_answer_what_orthanc_answers():
    assert Refusal.UID_MISMATCH.status == Refusal.CLASS_MISMATCH.status == DATA_SET_DOES_NOT_MATCH
    assert Refusal.NO_SOP_INSTANCE_UID.status == CANNOT_UNDERSTAND == 0xC000
    assert DATA_SET_DOES_NOT_MATCH == 0xA900


def test_a_matching_data_set_is_accepted_under_its_own_uid(tmp_path):
    path = received(tmp_path)
    verdict = check_received(path, command_instance_uid=UID + "\x00",  # padding is not the UID
                             command_class_uid=CTImageStorage)
    assert verdict.refusal is None and verdict.sop_instance_uid == UID


def test_a_bare_data_set_and_a_deflated_one_are_read(tmp_path):
    bare = tmp_path / "bare.dcm"
    buffer = io.BytesIO()
    ds = image_dataset("bare", sop_instance_uid=UID)
    del ds.file_meta
    dcmwrite(buffer, ds, implicit_vr=True, little_endian=True)
    bare.write_bytes(buffer.getvalue())
    assert check_received(bare, command_instance_uid=UID,
                          command_class_uid=CTImageStorage).sop_instance_uid == UID
    deflated = received(tmp_path, "deflated", syntax=DeflatedExplicitVRLittleEndian)
    assert check_received(deflated, command_instance_uid=UID,
                          command_class_uid=CTImageStorage).sop_instance_uid == UID


def test_a_deflate_bomb_is_inflated_no_further_than_the_header(tmp_path):
    """Gigabytes of zeros after the header, deflated to a few MB: refused as unreadable
    (the elements never end) without inflating more than HEADER_BYTES."""
    path = received(tmp_path, "bomb", syntax=DeflatedExplicitVRLittleEndian)
    data = path.read_bytes()
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    squeezer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = squeezer.compress(b"\x08\x00\x05\x00CS\xff\xff")  # a value 65535 bytes long …
    for _ in range(64):
        bomb += squeezer.compress(bytes(HEADER_BYTES // 4))  # … and 64 MB more
    path.write_bytes(data[:meta_end] + bomb + squeezer.flush())
    assert path.stat().st_size < HEADER_BYTES
    verdict = check_received(path, command_instance_uid=UID, command_class_uid=CTImageStorage)
    assert verdict.refusal in (Refusal.UNREADABLE, Refusal.NO_SOP_INSTANCE_UID,
                               Refusal.REPEATED_ELEMENT)  # zeros read as (0000,0000) twice


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """An explicit VR little endian element with a short length (value padded even)."""
    value += b"\x00" * (len(value) % 2)
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def test_a_header_that_holds_the_sop_instance_uid_twice_is_refused(tmp_path):
    """Found by the red team: the command's UID in order, another after (0028,0010); the
    check stopped early and saw the first, dcmtk keeps the first, pydicom the last."""
    first, second = UID.encode(), b"1.2.826.0.1.3680043.8.498.999"
    data_set = (_element(0x0008, 0x0016, b"UI", CTImageStorage.encode())
                + _element(0x0008, 0x0018, b"UI", first)
                + _element(0x0020, 0x000D, b"UI", b"1.2.3.1")
                + _element(0x0020, 0x000E, b"UI", b"1.2.3.2")
                + _element(0x0028, 0x0010, b"US", struct.pack("<H", 1))
                + _element(0x0008, 0x0018, b"UI", second))
    path = tmp_path / "receiving-1-twice.dcm"
    buffer = io.BytesIO()
    meta = image_dataset("twice", sop_instance_uid=UID).file_meta
    write_file_meta_info(buffer, meta, enforce_standard=True)
    path.write_bytes(bytes(128) + b"DICM" + buffer.getvalue() + data_set)
    verdict = check_received(path, command_instance_uid=UID, command_class_uid=CTImageStorage)
    assert verdict.refusal is Refusal.REPEATED_ELEMENT and verdict.refusal.status == 0xC000
    assert pydicom.dcmread(path).SOPInstanceUID == second.decode()  # what the box would keep


def test_garbage_is_unreadable_and_a_missing_file_is_an_os_error(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(bytes(128) + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + bytes(64))
    assert check_received(junk, command_instance_uid=UID,
                          command_class_uid=CTImageStorage).refusal is not None
    with pytest.raises(OSError):
        check_received(tmp_path / "gone.dcm", command_instance_uid=UID,
                       command_class_uid=CTImageStorage)


@pytest.fixture
def lander(tmp_path):
    database = tmp_path / "box.db"
    conn = db.connect(database)
    db.initialise(conn)
    conn.close()
    return Lander(Spool(tmp_path / "spool", tmp_path / "quarantine"), database, 2**20)


def test_a_refused_object_is_not_stored_and_the_log_names_the_reason(lander, caplog):
    path = received(lander.spool.tmp)
    stored = []
    with caplog.at_level(logging.WARNING, "firmware_app.ingest.store_answer"):
        status = answer_store(lander, path, sop_instance_uid=UID, sop_class_uid=MRImageStorage,
                              calling="CT1", on_stored=lambda: stored.append(1))
    assert status == 0xA900
    assert "reason=class_mismatch" in caplog.text
    assert not path.exists() and not stored
    assert list(lander.spool.tmp.iterdir()) == []
    conn = db.connect(lander.database)
    assert conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 0
    # the same object with its own command is stored, under its own UID
    path = received(lander.spool.tmp)
    assert answer_store(lander, path, sop_instance_uid=UID, sop_class_uid=CTImageStorage,
                        calling="CT1", on_stored=lambda: stored.append(1)) == SUCCESS
    assert stored == [1]
    assert [r[0] for r in conn.execute("SELECT sop_instance_uid FROM instances")] == [UID]


def test_refusals_reach_the_event_log_throttled(lander):
    """A technician sees why a modality's objects are refused (``clinibox status``'s last
    errors), once per reason and caller an hour, and a lying peer cannot push the box's
    other events out of the log."""
    for _ in range(3):  # the same refusal again and again: one event
        answer_store(lander, received(lander.spool.tmp), sop_instance_uid=UID,
                     sop_class_uid=MRImageStorage, calling="CT1")
    conn = db.connect(lander.database)
    events = [r[0] for r in conn.execute("SELECT message FROM events WHERE component = 'ingest'")]
    assert events == ["C-STORE refused: reason=class_mismatch calling='CT1'"]
    # counted by its code's kind, not by its words: another event worded alike does not count
    assert [r[0] for r in conn.execute("SELECT code FROM events WHERE component = 'ingest'")] == [
        "cstore_refused:class_mismatch:CT1"]
    db.record_event(conn, "WARNING", "ingest", "C-STORE refused: (a note, not a refusal)")
    now = time.time()
    kept = [lander.note_refused("uid_mismatch", f"AE{n}", now) for n in range(40)]
    assert sum(kept) == REFUSAL_EVENTS_PER_HOUR - 1  # the first one above counts too
    assert lander.note_refused("uid_mismatch", "AE0", now + 3601)  # an hour later: again


# -- issue 56: a data set without its study or series, and one cut short --------------------


@pytest.mark.parametrize(("missing", "refusal"), [
    ("StudyInstanceUID", Refusal.NO_STUDY_INSTANCE_UID),
    ("SeriesInstanceUID", Refusal.NO_SERIES_INSTANCE_UID),
])
def test_a_data_set_without_its_study_or_series_is_refused_as_orthanc_refuses_it(
        tmp_path, missing, refusal):
    path = received(tmp_path, **{missing: None})
    verdict = check_received(path, command_instance_uid=UID, command_class_uid=CTImageStorage)
    assert verdict.refusal is refusal and refusal.status == OUT_OF_RESOURCES == 0xA700


SYNTAXES = {"explicit": ExplicitVRLittleEndian, "implicit": ImplicitVRLittleEndian,
            "big": ExplicitVRBigEndian}


def _in_syntax(ds: pydicom.Dataset, syntax: str) -> bytes:
    """``ds`` as a Part-10 file in one of ``SYNTAXES``."""
    ds.file_meta.TransferSyntaxUID = SYNTAXES[syntax]
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _verdict(tmp_path, data: bytes) -> Refusal | None:
    path = tmp_path / "receiving-1-cut.dcm"
    path.write_bytes(data)
    return check_received(path, command_instance_uid=UID,
                          command_class_uid=CTImageStorage).refusal


@pytest.mark.parametrize("syntax", ["explicit", "implicit", "big"])
def test_a_data_set_cut_short_is_refused_in_every_syntax(tmp_path, syntax):
    """Its Pixel Data (the last element) short of 1,000 bytes, of 1 byte, or the data set
    ending inside the Pixel Data's element header; a sequence of undefined length before
    it walked item by item. The whole one is accepted."""
    ds = image_dataset("cut", sop_instance_uid=UID)
    item = pydicom.Dataset()
    item.CodeValue, item.CodingSchemeDesignator = "T-D0050", "SRT"
    ds.AnatomicRegionSequence = [item]
    ds["AnatomicRegionSequence"].is_undefined_length = True
    data = _in_syntax(ds, syntax)
    assert _verdict(tmp_path, data) is None
    pixel_tag = struct.pack("<HH" if syntax != "big" else ">HH", 0x7FE0, 0x0010)
    for cut in (data[:-1000], data[:-1], data[:data.rindex(pixel_tag) + 6]):
        assert _verdict(tmp_path, cut) is Refusal.CUT_SHORT
    assert Refusal.CUT_SHORT.status == CANNOT_UNDERSTAND
    sequence_end = struct.pack("<HHI" if syntax != "big" else ">HHI", 0xFFFE, 0xE0DD, 0)
    at = data.index(sequence_end)
    assert _verdict(tmp_path, data[:at]) is Refusal.CUT_SHORT  # the sequence never closed


def test_encapsulated_pixel_data_cut_short_is_refused(tmp_path):
    """Compressed fragments: a fragment longer than the bytes sent, or no sequence
    delimiter at the end, is cut short; the whole one is accepted (its fragments are not
    decoded here)."""
    ds = image_dataset("encapsulated", sop_instance_uid=UID)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes(4000) + b"\xff\xd9"])
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    data = to_bytes(ds)
    assert _verdict(tmp_path, data) is None
    assert _verdict(tmp_path, data[:-8]) is Refusal.CUT_SHORT  # no sequence delimiter
    assert _verdict(tmp_path, data[:-100]) is Refusal.CUT_SHORT  # inside the fragment
    assert _verdict(tmp_path, data + b"\x00\x00") is Refusal.CUT_SHORT  # a tag cut in two


def test_a_large_value_is_skipped_not_read(tmp_path):
    """A 200 MB Pixel Data announced and sent (a sparse file) is walked with one seek."""
    ds = image_dataset("large", sop_instance_uid=UID)
    data = to_bytes(ds)
    at = data.rindex(struct.pack("<HH", 0x7FE0, 0x0010))
    header = data[:at] + struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\x00\x00"
    size = 200 * 2**20
    path = tmp_path / "receiving-1-large.dcm"
    with open(path, "wb") as handle:
        handle.write(header + struct.pack("<I", size))
        handle.truncate(len(header) + 4 + size)
    started = time.perf_counter()
    with open(path, "rb") as handle:
        assert cut_short(handle) is False
    assert time.perf_counter() - started < 0.5
    with open(path, "r+b") as handle:
        handle.truncate(len(header) + 4 + size - 1)
    with open(path, "rb") as handle:
        assert cut_short(handle) is True


def test_of_pydicom_s_test_files_only_the_truncated_ones_are_cut_short():
    """Every file of pydicom's own test data (implicit and explicit VR, big endian, compressed
    fragments, sequences of VR UN, an implicit data set under a JPEG syntax) is walked;
    only the two pydicom ships truncated are cut short (its files without file meta are
    not walked: no receiver writes one)."""
    from pydicom.data import get_testdata_file

    cut = set()
    for name in sorted(Path(get_testdata_file("CT_small.dcm")).parent.rglob("*.dcm")):
        with open(name, "rb") as handle:
            try:
                if cut_short(handle):
                    cut.add(Path(name).name)
            except (OSError, ValueError):  # not DICOM at all (its file meta unreadable)
                continue
    assert cut == {"rtplan_truncated.dcm", "MR_truncated.dcm"}
