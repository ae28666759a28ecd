"""The last look at an exported image: can a source identifier still be read in its pixels?

Scanners burn the patient's name and id into the image as glyphs, not bytes:
``leaks.py`` cannot see them. Before an image leaves, its exported file is
read back and its pixels read with Tesseract OCR (through ``pytesseract``), in
Simplified Chinese and English (``chi_sim+eng``). The source's identifying
values (:func:`ocr_targets`: every person's name, whole and by component, the
patient's ids and other ids and numbers, the birth date in its usual written
forms) are looked for in what was read, normalised (case, spaces, ``^``, ``=``
and punctuation dropped), with some tolerance: a value of
:data:`FUZZY_CHARS` characters or more matches with one wrong, missing or extra
character per five (a number: one digit, from :data:`DIGITS_FUZZY_CHARS`
digits, else exactly); a shorter Latin one as a whole word; a Chinese one of
:data:`CJK_FUZZY_CHARS` characters or more with one wrong or missing (王小明
read as 玉小明), a shorter one exactly.
An image where one can be read is left out with the code
:attr:`OcrCode.READABLE`.

Bounded in time: at most :data:`MAX_FRAMES` frames of an image are read (the
first, the middle and the last), each cropped to what is not blank and
shrunk so its longer side is at most :data:`MAX_SIDE` pixels, and Tesseract
is stopped after :data:`TIMEOUT_S` seconds (the image is then left out,
:attr:`OcrCode.TIMEOUT`). Tesseract runs on one thread (``OMP_THREAD_LIMIT``
1, unless set): on a busy 2-core box its threads made a read five times
slower (5.9 s against 1.1 s for a 640 × 480 ultrasound). What was read of a
picture is remembered for the process's next exports (:data:`REMEMBERED`
pictures, by their digest), so the same study exported again is not read again.

What it cannot see: text smaller than about 8 pixels high (after shrinking),
text only on frames it does not read, handwriting, text in a colour close to
what is behind it, a name written in another script or spelt differently from the header, and an
identifier that was never in the header. A box without Tesseract or its
``chi_sim`` and ``eng`` data cannot check: every image with pixels left to read
is then left out (:attr:`OcrCode.UNAVAILABLE`), never sent unchecked.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.valuerep import PersonName

#: Tesseract's languages read, and how it reads (11: sparse text anywhere in the image)
LANGUAGES = ("chi_sim", "eng")
TESSERACT_CONFIG = "--psm 11"
#: frames read of a multi-frame image (first, middle, last)
MAX_FRAMES = 3
#: the longer side of the picture given to Tesseract, in pixels (bigger ones are shrunk)
MAX_SIDE = 1280
#: seconds Tesseract may take on one frame
TIMEOUT_S = 60
#: pictures whose reading is remembered (by digest) in one process
REMEMBERED = 256
#: values of at least this many characters match with some tolerance
FUZZY_CHARS = 5
#: numbers of at least this many digits match with one digit wrong, missing or extra
DIGITS_FUZZY_CHARS = 8
#: Chinese values of at least this many characters match with one character wrong or missing
CJK_FUZZY_CHARS = 3
#: identifiers other than names (ids and numbers)
ID_SUFFIXES = ("ID", "IDs", "Number", "Numbers")
#: dates looked for (in the usual written orders)
DATE_KEYWORDS = frozenset({"PatientBirthDate"})
_DROP = re.compile(r"[\s\^=,.\-_/:;'\"()\[\]|]+")
_WORD = re.compile(r"[^\W_]+")
_CJK = re.compile(r"[\u3400-\u9fff]")


class OcrCode(str, enum.Enum):
    """Why the pixel check left an image out (the export's reason code)."""

    READABLE = "ocr-identifier-readable"
    UNAVAILABLE = "ocr-unavailable"
    TIMEOUT = "ocr-timeout"
    FAILED = "ocr-failed"


@dataclass(frozen=True)
class PixelFinding:
    """An image the pixel check keeps out: its code and what was found (keywords only)."""

    code: OcrCode
    detail: str


@dataclass(frozen=True)
class Target:
    """A source value to look for: its keyword and its normalised text."""

    keyword: str
    text: str


def normalise(text: str) -> str:
    """``text`` folded, without spaces, ``^``, ``=`` and punctuation."""
    return _DROP.sub("", text.casefold())


def ocr_targets(ds: Dataset) -> list[Target]:
    """The source's values to look for in the pixels: names (whole and by component), ids
    and numbers of people and studies, the birth date in its written forms."""
    found: dict[str, str] = {}
    for element in ds.iterall():
        keyword = element.keyword or ""
        if element.value in (None, "", b""):
            continue
        values = element.value if element.VM > 1 else [element.value]
        if element.VR == "PN":
            texts = [t for v in values for t in _name_texts(v)]
        elif element.VR in ("LO", "SH") and keyword.endswith(ID_SUFFIXES):
            texts = [str(v) for v in values]
        elif keyword in DATE_KEYWORDS:
            texts = [t for v in values for t in _date_texts(str(v))]
        else:
            continue
        for text in texts:
            norm = normalise(text)
            if len(norm) >= 2 and not (norm.isdigit() and len(norm) < 4):
                found.setdefault(norm, keyword)
    return [Target(keyword, text) for text, keyword in found.items()]


def _name_texts(value: object) -> list[str]:
    name = value if isinstance(value, PersonName) else PersonName(str(value))
    texts = [str(name)]
    for group in (name.alphabetic, name.ideographic, name.phonetic):
        if group:
            texts += [group, *(p for p in re.split(r"[\^=]", group) if p.strip())]
    return texts


def _date_texts(value: str) -> list[str]:
    digits = re.sub(r"\D", "", value)
    if len(digits) != 8:
        return [value]
    y, m, d = digits[:4], digits[4:6], digits[6:]
    return [digits, d + m + y, m + d + y]


def found_in(read: str, targets: Iterable[Target]) -> list[str]:
    """The keywords of ``targets`` found in the OCR text ``read`` (sorted, no duplicates)."""
    flat = normalise(read)
    words = {w.casefold() for w in _WORD.findall(read)}
    hits = set()
    for target in targets:
        text = target.text
        if _CJK.search(text):
            hit = _near(text, flat, 1 if len(text) >= CJK_FUZZY_CHARS else 0)
        elif text.isdigit():  # ids and dates: among a scale's digits, one error is enough
            hit = _near(text, flat, 1 if len(text) >= DIGITS_FUZZY_CHARS else 0)
        elif len(text) >= FUZZY_CHARS:
            hit = _near(text, flat, max(1, len(text) // 5))
        else:
            hit = text in words
        if hit:
            hits.add(target.keyword)
    return sorted(hits)


def _near(pattern: str, text: str, errors: int) -> bool:
    """Whether ``pattern`` occurs in ``text`` with at most ``errors`` edits (Sellers)."""
    if pattern in text:
        return True
    previous = list(range(len(pattern) + 1))
    for char in text:
        current = [0]
        for i, wanted in enumerate(pattern, start=1):
            current.append(min(previous[i] + 1, current[i - 1] + 1,
                               previous[i - 1] + (wanted != char)))
        if current[-1] <= errors:
            return True
        previous = current
    return False


_ready: list[bool] = []


def ocr_missing() -> str:
    """Why this box cannot read pixels ("" when it can): pytesseract, the tesseract
    program or its chi_sim and eng data missing. Once it can, that is remembered; a box
    that cannot is asked again at the next image (Tesseract installed meanwhile)."""
    if _ready:
        return ""
    try:
        import pytesseract
    except ImportError:
        return "pytesseract is not installed"
    try:
        have = set(pytesseract.get_languages(config=""))
    except (pytesseract.TesseractNotFoundError, OSError, RuntimeError) as exc:
        return f"the tesseract program cannot be run ({type(exc).__name__})"
    missing = [lang for lang in LANGUAGES if lang not in have]
    if missing:
        return f"tesseract has no {'+'.join(missing)} data"
    _ready.append(True)
    return ""


def check_pixels(path: Path, targets: list[Target]) -> PixelFinding | None:
    """Read the pixels of the exported file ``path``; a finding when it must be left out
    (an identifier readable, or no reading possible), None when it may go. Only the frames
    read are decoded, one at a time."""
    ds = pydicom.dcmread(path, defer_size="1 KB")  # the pixel data is not read here
    if "PixelData" not in ds or not targets:
        return None
    try:
        pictures = list(_pictures(path, ds))
    except Exception as exc:  # a decoder's own errors vary by codec
        return PixelFinding(OcrCode.FAILED, f"pixels not decoded ({type(exc).__name__})")
    if not pictures:
        return None  # every pixel blank: nothing to read
    why = ocr_missing()
    if why:
        return PixelFinding(OcrCode.UNAVAILABLE, why)
    import pytesseract

    for picture in pictures:
        try:
            read = _read(hashlib.sha256(picture.tobytes()).hexdigest(), picture)
        except RuntimeError:  # pytesseract's timeout
            return PixelFinding(OcrCode.TIMEOUT, f"reading took over {TIMEOUT_S} s")
        except (pytesseract.TesseractError, OSError) as exc:
            return PixelFinding(OcrCode.FAILED, f"tesseract failed ({type(exc).__name__})")
        hits = found_in(read, targets)
        if hits:
            return PixelFinding(OcrCode.READABLE, "readable in its pixels: " + ", ".join(hits))
    return None


_remembered: dict[str, str] = {}


@contextlib.contextmanager
def tesseract_on_one_thread() -> Iterator[None]:
    """Tesseract (started by pytesseract with this process's environment) on one OpenMP
    thread, and the environment as it was after: left set, it would reach every process
    started later (a converter's torch, slowed tenfold under it in the suite)."""
    before = os.environ.get("OMP_THREAD_LIMIT")
    os.environ["OMP_THREAD_LIMIT"] = before or "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_THREAD_LIMIT", None)


def _read(digest: str, picture: np.ndarray) -> str:
    """Tesseract's text of ``picture`` (remembered by ``digest``)."""
    if digest in _remembered:
        return _remembered[digest]
    import pytesseract
    from PIL import Image

    with tesseract_on_one_thread():
        text = pytesseract.image_to_string(Image.fromarray(picture), lang="+".join(LANGUAGES),
                                           config=TESSERACT_CONFIG, timeout=TIMEOUT_S)
    if len(_remembered) >= REMEMBERED:
        _remembered.pop(next(iter(_remembered)))
    _remembered[digest] = text
    return text


def _pictures(path: Path, ds: Dataset):
    """Up to :data:`MAX_FRAMES` frames of the file ``path`` (header ``ds``) as 8-bit grey
    pictures, cropped to what is not blank and shrunk to :data:`MAX_SIDE`; none for a
    frame that is all blank."""
    from PIL import Image
    from pydicom.pixels import pixel_array

    frames = int(ds.get("NumberOfFrames", 1) or 1)
    picks = sorted({0, (frames - 1) // 2, frames - 1})[:MAX_FRAMES]
    colour = int(ds.get("SamplesPerPixel", 1)) > 1
    for index in picks:
        frame = np.asarray(pixel_array(path, index=index)).astype(np.float32)
        grey = frame @ np.array([0.299, 0.587, 0.114], np.float32) if colour else frame
        if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            grey = grey.max() - grey
        low, high = float(grey.min()), float(grey.max())
        if high <= low:
            continue  # one value everywhere: blank
        rows = np.flatnonzero((grey > low).any(axis=1))
        cols = np.flatnonzero((grey > low).any(axis=0))
        top, bottom = max(0, rows[0] - 4), min(grey.shape[0], rows[-1] + 5)
        left, right = max(0, cols[0] - 4), min(grey.shape[1], cols[-1] + 5)
        crop = ((grey[top:bottom, left:right] - low) * (255.0 / (high - low))).astype(np.uint8)
        picture = Image.fromarray(crop)
        if max(picture.size) > MAX_SIDE:
            picture.thumbnail((MAX_SIDE, MAX_SIDE))
        yield np.asarray(picture)
