"""The study reference: the keyed hash by which the hospital names a box's study.

HMAC-SHA256 of the study's key (its Study Instance UID, or ``local:<id>``)
under the box's study-reference secret, first 32 hex digits. Telemetry puts
it in alerts and summaries (``clinibox_common/contracts/egress.py``: ``study_ref``);
the clinic finds the study again with it (``clinibox study REF``, and
``clinibox export-study REF``); the hospital cannot reverse it.
"""

from __future__ import annotations

import hashlib
import hmac
import re

#: what a study reference looks like (32 lowercase hex digits; upper case is accepted on input)
STUDY_REF_PATTERN = re.compile(r"[0-9a-fA-F]{32}")


def study_ref(secret: bytes, study_key: str) -> str:
    """HMAC-SHA256(secret, study key), first 32 hex digits."""
    return hmac.new(secret, study_key.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def looks_like_study_ref(text: str) -> bool:
    """Whether ``text`` has the form of a study reference (it may still match no study)."""
    return STUDY_REF_PATTERN.fullmatch(text) is not None


def matches(secret: bytes, study_key: str, ref: str) -> bool:
    """Whether ``ref`` is the reference of ``study_key`` (compared in constant time)."""
    return hmac.compare_digest(study_ref(secret, study_key), ref.lower())
