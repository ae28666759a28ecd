"""A run's claim on its folder: which run's head may be written there (decision 0056).

Anyone who reaches the SuperLink's port can start a run (Flower's Control API has no login),
and may name any folder of the runs folder as its ``out``. So the ServerApp never claims a
folder itself: the hospital's ``clinibox central federated-run`` makes the folder, starts
the run, learns the run's number from Flower, and only then writes that number into the
folder's ``run.claim`` (:func:`write_claim`; made once, never over another). The
ServerApp waits for the claim to name its own run (:func:`await_claim`) before its first
round and checks it again before it writes the head (:func:`holds_claim`). A stranger's run
into the hospital's folder finds another number there; one into a folder nobody claimed
finds none; both are refused before their first round, and neither makes a file. The
converter packages a run's head only where the claim names the run its record names.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from clinibox_common.errors import CliniboxError

#: the file the hospital claims a run's folder with, holding the run's number
CLAIM_FILE = "run.claim"
#: how long a ServerApp waits for ``federated-run`` to write its claim (it is written as soon
#: as Flower answers with the run's number: well before a ServerApp starts)
CLAIM_WAIT_S = 120.0
#: how often it looks
CLAIM_POLL_S = 0.5
#: a Flower run's number (an unsigned 64-bit integer)
RUN_NUMBER = re.compile(r"[0-9]{1,20}")
#: a whole claim: a run's number and a new line
CLAIM_TEXT = re.compile(rf"({RUN_NUMBER.pattern})\n")


class ClaimRefused(CliniboxError, ValueError):
    """The folder is not this run's; the message starts with a code."""


def write_claim(out: Path, run_id: int) -> Path:
    """Claim the existing folder ``out`` for the run ``run_id``, never over a claim
    (ClaimRefused ``out_already_claimed``). The number and its new line go in one write; a
    reader that finds the file before it (empty) or cut short sees no claim yet and looks
    again (:func:`claimed_by`), so no hard link is needed and any filesystem will do."""
    claim = out / CLAIM_FILE
    try:
        fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError as exc:
        raise ClaimRefused(f"out_already_claimed: {claim} names another run: give this run "
                           "a folder of its own") from exc
    try:
        os.write(fd, f"{int(run_id)}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return claim


def claimed_by(out: Path) -> int | None:
    """The run that claimed ``out``, or None when no whole claim is there."""
    try:
        text = (out / CLAIM_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    whole = CLAIM_TEXT.fullmatch(text)
    return int(whole.group(1)) if whole else None


def holds_claim(out: Path, run_id: int) -> bool:
    """Whether ``out``'s claim names the run ``run_id``."""
    return claimed_by(out) == int(run_id)


def await_claim(out: Path, run_id: int, wait_s: float = CLAIM_WAIT_S,
                poll_s: float = CLAIM_POLL_S) -> None:
    """Return once ``out``'s claim names the run ``run_id``; ClaimRefused
    ``out_claimed_by_another_run`` when it names another, ``out_not_claimed`` when none
    came within ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        owner = claimed_by(out)
        if owner == int(run_id):
            return
        if owner is not None:
            raise ClaimRefused(f"out_claimed_by_another_run: {out / CLAIM_FILE} names run "
                               f"{owner}, not this run {run_id}: only the run that clinibox "
                               "central federated-run started into a folder writes there")
        if time.monotonic() >= deadline:
            raise ClaimRefused(f"out_not_claimed: no claim named this run {run_id} in "
                               f"{out / CLAIM_FILE} within {wait_s:g} s: start runs with "
                               "clinibox central federated-run, which claims the folder")
        time.sleep(poll_s)
