"""End to end: a de-identified export leaks nothing and leaves nothing out (issue 43).

One study of six objects, every identifying attribute a canary
(``tests/export_canaries.fill``), with nested canaries (``nest_canaries``) and
a burned-in banner (``burn_banner``) plus a block of random "text" pixels
where it has pixels:

1. an ultrasound with a Sequence of Ultrasound Regions (banner outside them);
2. an ultrasound (US Image Storage) sent as Modality OT, without regions;
3. a CT saying Burned In Annotation ``YES\\NO``;
4. a secondary capture that does not say Burned In Annotation NO;
5. an ordinary CT (Burned In Annotation NO) with header canaries only: its
   pixels must come out unchanged;
6. a name trap (it also says YES): the patient's family name in Study
   Description, a private attribute, an overlay (60xx) and, in lower case,
   Image Comments; its Patient ID the MRN "12345" of the context text.

They are landed by the real Lander and processed by the real Worker with the
demo model, then exported by ``clinibox export-study`` (its ``main``) to a
folder and to a zip, and by the viewer's ``POST /study/ID/export``. Every
exported file (and the zip's raw bytes) is searched case-insensitively for
every canary, name, date, UID, pixel run and the icon's bytes; each file must
parse, say Patient Identity Removed YES, name the pixel rule where pixels
changed, show blank banner rows, and all six objects must be there (cleaning
by leaving out is no cleaning). A last test exports pydicom's own test files
(real third-party headers) the same way.
"""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file

from clinibox.table import main
from firmware_app.dicom_out.annex_e_table import TABLE
from firmware_app.dicom_out.export import ExportError, export_study
from firmware_app.service.appliance import load_runner
from firmware_app.settings.box import Config
from firmware_app.storage import db
from firmware_app.storage.accounts import Accounts
from tests.canary import CanarySet
from tests.export_canaries import (
    BANNER_ROWS,
    CHINESE_NAME,
    STUDY_UID,
    burn_banner,
    fill,
    nest_canaries,
)
from tests.viewer_state import CLINICIAN, local_box
from tests.web_client import ViewerClient, csrf_token

#: (Instance Number, name, pydicom test file, pixel rule the export must apply or "")
OBJECTS = ((1, "us_regions", "OBXXXX1A.dcm", "US-REGIONS"),
           (2, "us_as_ot", "US1_UNCR.dcm", "US-FRAME"),
           (3, "ct_yes_no", "CT_small.dcm", "ALL"),
           (4, "secondary_capture", "SC_rgb.dcm", "ALL"),
           (5, "ct_plain", "CT_small.dcm", ""),
           (6, "name_trap", "MR_small.dcm", "ALL"))
#: where each object's random "text" block is painted: (row0, row1, col0, col1), inside
#: what its rule must blank and below the banner
TEXT_BLOCKS = {1: (20, 28, 10, 110), 2: (20, 28, 200, 400), 3: (40, 48, 20, 100),
               4: (40, 48, 10, 90), 6: (30, 36, 10, 50)}
#: the name trap's patient
TRAP_FAMILY, TRAP_GIVEN, MRN = "Quixby", "Zelda", "12345"
#: pydicom's test files exported as they are (real third-party headers)
#: pydicom's images the box analyses (an RT Dose is received but belongs to no study the box
#: shows, so no study export can hold it)
THIRD_PARTY = ("US1_UNCR.dcm", "MR_small.dcm", "SC_rgb.dcm", "emri_small.dcm", "CT_small.dcm")
T = TypeVar("T")
_TOKEN = re.compile(r"[^\W_]+")
_ISO_DATE = re.compile(r"\d{4}-\d\d-\d\d")
#: names shorter than this are searched as whole tokens of the header's text (a code value
#: such as CNRYX2 is kept by design and holds the family name CNRY by chance)
LONG_NAME = 5
_HEADER_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH",
                              "ST", "TM", "UC", "UR", "UT"})


@dataclass
class Study:
    """The sources on disk, what must not come out, and each object's source pixels."""

    files: dict[int, Path] = field(default_factory=dict)
    canaries: CanarySet = field(default_factory=CanarySet)
    names: list[str] = field(default_factory=list)
    icon: bytes = b""
    pixels: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class Box:
    """The box holding the study and the third-party files, processed by the worker."""

    config: Config
    study: Study
    study_id: int
    third_party: dict[str, Path]


def _paint_text(ds: Dataset, block: tuple[int, int, int, int], seed: int) -> bytes:
    """Random bright values over ``block`` (burned-in "text"); its first row's bytes."""
    r0, r1, c0, c1 = block
    pixels = np.array(ds.pixel_array)
    shape = (r1 - r0, c1 - c0, *pixels.shape[2:])
    high = 256 if pixels.dtype.itemsize == 1 else 4000
    pixels[r0:r1, c0:c1] = np.random.default_rng(seed).integers(1, high, shape)
    photometric = "RGB" if int(ds.SamplesPerPixel) > 1 else str(ds.PhotometricInterpretation)
    ds.set_pixel_data(pixels, photometric, int(ds.BitsStored), generate_instance_uid=False)
    return pixels[r0, c0:c1].tobytes()


def _name_trap(ds: Dataset, study: Study) -> None:
    """The family name in Study Description, a private tag, an overlay, lower-case comments."""
    for keyword in ("PatientName", "PatientID", "StudyDescription", "ImageComments"):
        study.canaries.strings.remove(str(ds[keyword].value).split("=")[0])  # fill's, replaced
    ds.PatientName = f"{TRAP_FAMILY}^{TRAP_GIVEN}"
    ds.PatientID = MRN
    ds.StudyDescription = f"MR follow-up {TRAP_FAMILY}"
    ds.ImageComments = f"called {TRAP_FAMILY.lower()} back"
    ds.private_block(0x0031, "TRAP PRIVATE", create=True).add_new(0x01, "LO", TRAP_FAMILY)
    rows, columns = int(ds.Rows), int(ds.Columns)
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", columns)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60001500, "LO", f"{TRAP_FAMILY} {TRAP_GIVEN}")  # Overlay Label
    text = f"{TRAP_FAMILY.lower()} {TRAP_GIVEN} ".encode()
    ds.add_new(0x60003000, "OB", (text * (rows * columns // 8))[:rows * columns // 8])
    study.names += [TRAP_FAMILY, TRAP_GIVEN, f"{TRAP_FAMILY}^{TRAP_GIVEN}"]


def _write_study(folder: Path) -> Study:
    """The six objects of the module docstring, written under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    # the patients' names alone ("John Smith" of the context text is searched whole: dicognito
    # draws its fake names from lists that hold JOHN and SMITH)
    study = Study(names=["CNRY", CHINESE_NAME])
    for number, name, source, rule in OBJECTS:
        ds = pydicom.dcmread(get_testdata_file(source))
        fill(ds, number, study.canaries)
        ds.InstanceNumber = number
        if number == 6:
            _name_trap(ds, study)
        else:
            study.names.append(f"PATIENT{number:03d}")  # the given name alone
        if rule:
            nest_canaries(ds, study.canaries)
            study.icon = bytes(ds.IconImageSequence[0].PixelData)
            burn_banner(ds)
            study.canaries.pixel_runs.append(_paint_text(ds, TEXT_BLOCKS[number], number))
        if number == 2:
            ds.Modality = "OT"
            ds.pop("SequenceOfUltrasoundRegions", None)
        elif number in (3, 6):
            ds.BurnedInAnnotation = ["YES", "NO"] if number == 3 else "YES"
        elif number == 4:
            ds.pop("BurnedInAnnotation", None)
        elif number == 5:
            ds.BurnedInAnnotation = "NO"
        study.pixels[number] = np.array(ds.pixel_array)
        path = folder / f"{number}-{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        study.files[number] = path
    return study


@pytest.fixture(scope="module")
def box(tmp_path_factory) -> Box:
    """A box on which the worker processed the six objects and pydicom's test files."""
    root = tmp_path_factory.mktemp("no-leaks")
    study = _write_study(root / "sources")
    third_party = {name: Path(get_testdata_file(name)) for name in THIRD_PARTY}
    config = Config()
    config.runtime.backend = "onnxruntime"
    local = local_box(config, root / "state", load_runner(config))
    for path in [*study.files.values(), *third_party.values()]:
        local.lander.land(path.read_bytes(), sop_instance_uid=None, source="dicom",
                          origin="TEST")
        assert local.worker.run_once()
    study_id = local.conn.execute("SELECT id FROM studies WHERE study_key = ?",
                                  (STUDY_UID,)).fetchone()[0]
    Accounts(local.conn).add(*CLINICIAN, "clinician")
    local.conn.close()
    return Box(local.config, study, int(study_id), third_party)


def test_the_sources_carry_every_canary_before(box):
    """Each trap is really in its source, and each pixel run is in its own source only."""
    sources = {n: path.read_bytes() for n, path in box.study.files.items()}
    everything = b"".join(sources.values()).lower()
    absent = [text for text in [*box.study.canaries.strings, *box.study.names]
              if not _ISO_DATE.fullmatch(text)  # searched for in the export, written nowhere
              and text.lower().encode() not in everything]
    assert absent == []
    has_icon = box.study.icon in b"".join(sources.values())
    assert has_icon
    holders = [[n for n, data in sources.items() if run in data]
               for run in box.study.canaries.pixel_runs]
    assert holders == [[n] for n in TEXT_BLOCKS]
    for number, _name, _source, rule in OBJECTS:
        banner = box.study.pixels[number][:BANNER_ROWS]
        assert not rule or ((banner == banner.max()).all() and banner.any()), number
    trap = pydicom.dcmread(box.study.files[6])
    assert TRAP_FAMILY.lower() in str(trap.ImageComments) and trap[0x60001500].value


def _config_file(box: Box, folder: Path) -> Path:
    path = folder / "box.toml"
    path.write_text(f'[storage]\nstate_dir = "{box.config.state_dir}"\n'
                    '[runtime]\nbackend = "onnxruntime"\n')
    return path


@dataclass
class Export:
    """One export's files by name, the raw bytes of its zip, what it said, and its log."""

    files: dict[str, bytes]
    raw: bytes = b""
    left_out: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _logged(run: Callable[[], T]) -> tuple[T, list[str]]:
    """``run()``'s result and what the export's de-identification logged meanwhile."""
    logger = logging.getLogger("firmware_app.dicom_out")
    recorder, level = _Recorder(), logger.level
    logger.addHandler(recorder)
    logger.setLevel(logging.INFO)
    try:
        return run(), recorder.lines
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)


def _cli(*args: str) -> tuple[str, list[str]]:
    """``clinibox ARGS`` through its ``main``: what it printed and what the export logged."""
    printed = io.StringIO()

    def run() -> int:
        with redirect_stdout(printed):
            return main(list(args))

    status, log = _logged(run)
    assert status == 0, printed.getvalue()
    return printed.getvalue(), log


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.fixture(scope="module")
def exports(box, tmp_path_factory) -> dict[str, Export]:
    """The study exported by ``clinibox export-study`` to a folder (--json) and a zip, and
    downloaded from the viewer's export button."""
    from web.app import create_app

    root = tmp_path_factory.mktemp("exports")
    config = str(_config_file(box, root))
    out, zipped = root / "folder", root / "export.zip"
    printed, log = _cli("export-study", str(box.study_id), "--out", str(out), "--json",
                        "--config", config)
    summary = json.loads(printed[printed.index("{"):])
    made = {"cli-folder": Export({p.name: p.read_bytes() for p in sorted(out.iterdir())},
                                 left_out=[f"{x['what']}: {x['reason']}"
                                           for x in summary["left_out"]], log=log)}
    printed, log = _cli("export-study", STUDY_UID, "--out", str(zipped), "--zip",
                        "--config", config)
    raw = zipped.read_bytes()
    made["cli-zip"] = Export(_members(raw), raw, [line.strip() for line in printed.splitlines()
                                                  if "left out" in line], log)
    client = ViewerClient(create_app(box.config))
    assert client.login(*CLINICIAN).status_code == 302
    page = client.get(f"/study/{box.study_id}").get_data(as_text=True)
    token = csrf_token(page[page.index('id="export-form"'):])
    response, log = _logged(lambda: client.post(
        f"/study/{box.study_id}/export", token=token,
        referer=f"https://localhost/study/{box.study_id}"))
    assert response.status_code == 200, response.get_data(as_text=True)[-1500:]
    left = int(response.headers["X-Clinibox-Left-Out"])
    made["viewer"] = Export(_members(response.data), response.data,
                            [f"{left} object(s) left out"] if left else [], log)
    return made


def _read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _images(export: Export) -> dict[int, Dataset]:
    """The exported images by Instance Number (the object's number)."""
    sets = [_read(data) for name, data in export.files.items() if name.startswith("IMAGE")]
    return {int(ds.get("InstanceNumber", 0) or 0): ds for ds in sets}


def _header_tokens(ds: Dataset) -> Iterator[list[str]]:
    """The tokens (letters and digits) of each text value at every level (UIDs excepted)."""
    for element in ds.iterall():
        if element.VR not in _HEADER_TEXT_VRS or element.value in (None, "", b""):
            continue
        for value in element.value if element.VM > 1 else [element.value]:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            yield [t.casefold() for t in _TOKEN.findall(text)]


EXPORTS = ("cli-folder", "cli-zip", "viewer")


@pytest.mark.parametrize("kind", EXPORTS)
def test_every_file_parses_and_says_the_identity_is_removed(exports, kind):
    export = exports[kind]
    assert export.files and any(name.startswith("IMAGE") for name in export.files)
    for name, data in export.files.items():
        ds = _read(data)
        assert ds.PatientIdentityRemoved == "YES", (kind, name)
        assert str(ds.StudyInstanceUID) != STUDY_UID, (kind, name)


@pytest.mark.parametrize("kind", EXPORTS)
def test_no_canary_name_date_uid_pixel_run_or_icon_survives_in_any_byte(box, exports, kind):
    export = exports[kind]
    wanted = [s.lower().encode() for s in [*box.study.canaries.strings, *box.study.names]
              if len(s) >= LONG_NAME]
    short_names = [s for s in box.study.names if len(s) < LONG_NAME]
    blobs = {**export.files, **({"(the zip itself)": export.raw} if export.raw else {})}
    found = {}
    for name, data in blobs.items():
        lowered = data.lower()
        hits = [w.decode() for w in wanted if w in lowered]
        hits += [f"pixel run of object {n}" for n, run in
                 zip(TEXT_BLOCKS, box.study.canaries.pixel_runs, strict=True) if run in data]
        hits += ["icon image bytes"] * (box.study.icon in data or box.study.icon[:32] in data)
        if name != "(the zip itself)":
            tokens = list(_header_tokens(_read(data)))
            hits += [f"MRN {MRN} in the header text"] * any(MRN in t for t in tokens)
            hits += [f"{s} in the header text" for s in short_names if _in_tokens(s, tokens)]
        if hits:
            found[name] = hits
    assert found == {}, kind


@pytest.mark.parametrize("kind", EXPORTS)
def test_nothing_is_left_out(exports, kind):
    """Every one of the six objects is in the export: cleaning by leaving out is none."""
    export = exports[kind]
    assert export.left_out == [], kind
    assert sorted(_images(export)) == [n for n, *_ in OBJECTS], kind


@pytest.mark.parametrize("kind", EXPORTS)
def test_banners_are_blank_and_the_pixel_rule_is_named(box, exports, kind):
    images = _images(exports[kind])
    for number, name, _source, rule in OBJECTS:
        if number not in images:
            continue  # test_nothing_is_left_out names it
        ds = images[number]
        method = list(ds.DeidentificationMethod)
        if rule:
            pixels = np.asarray(ds.pixel_array)
            assert not pixels[:BANNER_ROWS].any(), (kind, name)
            assert f"CLEAN PIXEL DATA {rule}" in method, (kind, name, method)
            assert "113101" in [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
        else:
            assert not any(m.startswith("CLEAN PIXEL DATA") for m in method), (kind, name)
            assert np.array_equal(ds.pixel_array, box.study.pixels[number]), (kind, name)
        for icon in ds.get("IconImageSequence", []):
            thumbnail = np.asarray(icon.pixel_array)
            assert not thumbnail[:max(1, BANNER_ROWS * int(icon.Rows) // int(ds.Rows))].any()


@pytest.mark.parametrize("kind", EXPORTS)
def test_the_export_log_names_each_pixel_rule(exports, kind):
    """One "clean pixel data" line per cleaned object, naming its rule's code."""
    logged = [line for line in exports[kind].log if line.startswith("clean pixel data ")]
    codes = sorted(line.split()[3].rstrip(":") for line in logged)
    assert codes == sorted(rule for *_, rule in OBJECTS if rule), (kind, logged)


# --- real third-party data -------------------------------------------------------------

#: value representations whose source values must not survive (the issue's list)
SOURCE_VRS = frozenset({"PN", "LO", "SH", "DA", "TM", "UI"})
#: values this long (and not numeric) are searched for in every byte
LONG = 5


def _third_party_values(ds: Dataset) -> tuple[set[str], set[str]]:
    """(values to search in every byte, short values to search as header tokens) of every
    PN, LO, SH, DA, TM and UI of ``ds`` (file meta included): PN components too; UIDs of
    classes, transfer syntaxes and the standard's own (1.2.840.10008.) left out; LO and SH
    only of attributes PS3.15 Table E.1-1 lists (the rest, such as Manufacturer, the
    standard keeps), or private; a value that is a run of tokens of a kept one (an
    institution named like its scanner's maker) left out."""
    kept_tokens, long, short = [], set(), set()
    for element in [*ds.file_meta, *ds.iterall()]:
        values = element.value if element.VM > 1 else [element.value]
        texts = [str(v) for v in values if v not in (None, "") and not isinstance(v, bytes)]
        listed = int(element.tag) in TABLE or element.tag.is_private
        if element.VR in ("LO", "SH") and not listed:
            kept_tokens += [[t.casefold() for t in _TOKEN.findall(x)] for x in texts]
            continue
        if element.VR not in SOURCE_VRS:
            continue
        if element.VR == "UI" and (element.keyword.endswith(("ClassUID", "TransferSyntaxUID"))
                                   or any(x.startswith("1.2.840.10008.") for x in texts)):
            continue
        for text in texts:
            parts = [text, *re.split(r"[\^=]", text)] if element.VR == "PN" else [text]
            for part in (p.strip() for p in parts):
                if len(part) >= LONG and not part.isdigit() and element.VR not in ("DA", "TM"):
                    long.add(part)
                elif any(len(t) >= 2 for t in _TOKEN.findall(part)):
                    short.add(part)  # not one of single characters ("e+1"): nobody's name
    return ({v for v in long if not _in_tokens(v, kept_tokens)},
            {v for v in short if not _in_tokens(v, kept_tokens)})


def _numeric(value: str) -> bool:
    return set(value) <= set("0123456789.+-")


def _in_tokens(value: str, header: list[list[str]]) -> bool:
    """Whether ``value``'s tokens are a run of whole tokens of one header value."""
    wanted = [t.casefold() for t in _TOKEN.findall(value)]
    return bool(wanted) and any(tokens[i:i + len(wanted)] == wanted for tokens in header
                                for i in range(len(tokens) - len(wanted) + 1))


def _standalone(data: bytes, value: bytes) -> bool:
    """``value`` (numeric) in ``data`` not inside a longer run of digits (a new UID)."""
    for match in re.finditer(re.escape(value), data):
        before = data[match.start() - 1:match.start()]
        after = data[match.end():match.end() + 1]
        if not (before.isdigit() or before == b".") and not (after.isdigit() or after == b"."):
            return True
    return False


def test_pydicom_test_files_keep_no_source_value_and_none_is_left_out(box, tmp_path):
    """Real headers: every PN, LO, SH, DA, TM and UI value of each source is absent from
    its study's export (case-insensitive), and every source is in it."""
    conn = db.connect(box.config.database_path)
    failures, missing = {}, {}
    try:
        for n, (name, path) in enumerate(box.third_party.items()):
            source = pydicom.dcmread(path)
            try:
                summary = export_study(conn, str(source.StudyInstanceUID),
                                       tmp_path / f"out{n}", account="t")
            except ExportError as exc:
                missing[name] = [str(exc)]
                continue
            if summary.left_out:
                missing[name] = [f"{x.what}: {x.reason}" for x in summary.left_out]
            files = {f: (tmp_path / f"out{n}" / f).read_bytes() for f in summary.files}
            exported = [_read(data) for data in files.values()]
            assert exported and all(ds.PatientIdentityRemoved == "YES" for ds in exported)
            long, short = _third_party_values(source)
            for file_name, data in files.items():
                lowered = data.lower()
                tokens = list(_header_tokens(_read(data)))
                hits = [v for v in long if v.lower().encode() in lowered]
                hits += [v for v in short if _numeric(v) and _standalone(data, v.encode())]
                hits += [v for v in short if not _numeric(v) and _in_tokens(v, tokens)]
                if hits:
                    failures[f"{name} -> {file_name}"] = sorted(set(hits))
            if not summary.left_out:
                assert len([f for f in summary.files if f.startswith("IMAGE")]) == 1, name
    finally:
        conn.close()
    assert failures == {} and missing == {}, json.dumps([failures, missing], indent=1)
