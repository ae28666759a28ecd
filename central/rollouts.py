"""Model rollouts from the hospital: a hospital-signed package offered to boxes in waves.

``clinibox central rollout PACKAGE --to clinic/box …`` (or the console's fleet page) calls
:func:`create`: the package archive (``contracts/package_archive.py``) is checked like a box
would check it — its manifest's schema, its signature by one of ``[rollouts] trusted_keys``
(the hospital's model-signing keys, which the enrolment bundles carry) and every file's
SHA-256 — then cut into chunks (kept in ``rollout_chunks``; the downlink publisher keeps them
retained on the broker) and the targets are put in waves: the first ``canary`` boxes are wave
0, the rest waves of ``wave_size``.

A box is **offered** the package by a ``rollout`` downlink (``contracts/downlink.py``: signed
by the hospital, sealed to that box, numbered in the box's downlink sequence so a replay is
refused) and answers with device events naming the rollout (:func:`note_event`, called in the
receiver's transaction): ``offered``, ``downloading``, ``downloaded``, ``verified``,
``golden_passed``, then ``model_installed`` (on trial), ``model_kept``; or ``refused`` /
``model_refused`` (``golden_failed`` when its golden cases failed on that box's CPU) /
``model_rolled_back``. An install counts only once the hospital **sees** it: the box's
status reports it runs the package — its name, version and manifest digest
(``status.model_digest``, :func:`seen`); a ``model_kept`` from a box whose status still
reports another model leaves the step waiting for that. :func:`advance` (run by ``clinibox
central serve`` every few seconds, and after each change) offers the next wave once every
box of the waves before has installed the package and shows it runs it; a failure among the
canaries pauses the rollout (``--pause-on-failure``: a failure in any wave does), and a
person resumes it (:func:`resume`) or rolls it back (:func:`rollback`: a ``rollback``
downlink to each box that installed it, which goes back to its kept previous package). A
box that fails its golden cases keeps its old model; the others keep the new one.

A **release of the box's software** (``contracts/software_release.py``, named ``clinibox``)
rolls out the same way: checked as a box checks it, cut into chunks, offered in waves. The
box hands it to its root updater, which tries it and keeps it or goes back by itself; the box
answers ``kept``, or ``rolled_back`` / ``refused`` with the reason (a failed self-test, other
dependencies …). It counts as seen once the box's status reports that software version. A
release is never rolled back by order: the box's own trial does that.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from central.config import CANARY_RANGE, WAVE_SIZE_RANGE
from central.reviews import audit, queue_downlink
from central.sql import Transaction
from clinibox_common.contracts import downlink, signing, software_release
from clinibox_common.contracts.egress import EgressRefused, check_identity
from clinibox_common.contracts.manifest import PackageError, check_files, check_schema
from clinibox_common.contracts.package_archive import PackedArchive, describe, unpack
from clinibox_common.contracts.software_release import RELEASE_SCHEMA, is_release
from clinibox_common.contracts.words import Word
from clinibox_common.errors import CliniboxError
from clinibox_common.i18n import N_, gettext
from clinibox_common.i18n.error_words import error_words

__all__ = [
    "FAILED_STEPS",
    "INSTALLED_STEPS",
    "IN_PROGRESS_STEPS",
    "REFUSALS",
    "CheckedPackage",
    "RolloutError",
    "WavesProblem",
    "advance",
    "can_roll_back",
    "check_package",
    "chunks",
    "create",
    "finished",
    "group_boxes",
    "note_event",
    "pause",
    "resume",
    "rollback",
    "rollout",
    "rollouts",
    "seen",
    "targets",
    "undoable",
    "waves_problem",
    "waves_refusal",
]

#: A box has the package and runs it.
INSTALLED_STEPS = ("on_trial", "kept")
#: A box will not run the package (it keeps its old model), or did not answer in time.
FAILED_STEPS = ("refused", "golden_failed", "rolled_back", "timed_out")
#: Offered and on the way.
IN_PROGRESS_STEPS = ("sent", "offered", "downloading", "downloaded", "verified",
                     "golden_passed")
#: Where a box stands before it is offered anything.
WAITING = "waiting"
#: The order in which steps may follow one another (a late event never takes a box back; a
#: box that timed out and installs after all still says so).
_RANK = {step: rank for rank, step in enumerate(
    (WAITING, *IN_PROGRESS_STEPS, "timed_out", *INSTALLED_STEPS, "refused", "golden_failed",
     "rolled_back"))}
#: How long a box may take from its offer to an answer (installed or failed) by default.
DEFAULT_BOX_TIMEOUT_S = 72 * 3600.0
#: Serialises ``advance`` across the hospital's receivers (PostgreSQL).
_ADVANCE_LOCK = 0x636C726F  # "clro"
#: The rollout's own states.
ACTIVE, PAUSED, DONE, ROLLED_BACK = "active", "paused", "done", "rolled_back"
_COLUMNS = ("id", "name", "version", "archive_sha256", "archive_bytes", "unpacked_bytes",
            "chunk_bytes", "chunk_sha256", "signer", "canary", "wave_size", "pause_on_failure",
            "state", "state_reason", "created_by", "created_at", "updated_at", "manifest_sha256")
_TARGET_COLUMNS = ("rollout_id", "clinic", "device", "wave", "offer_seq", "offered_at", "step",
                   "reason", "updated_at", "rollback_seq")
#: what a target row carries besides its columns: the model its box's last status reports
#: (``name@version``) and that model's manifest digest, and the rollout's package
_RUNNING_COLUMNS = ("running", "running_digest", "package", "package_digest")


class RolloutError(CliniboxError):
    """A rollout the hospital will not start or change, with the reason."""

    kind = N_("rollout refused")


class WavesProblem(Word):
    """Why a rollout's canary count or wave size is refused: the one rule
    (:func:`waves_problem`) that the console's rollout form, ``clinibox central rollout`` and
    :func:`create` share; each says it in its own words."""

    CANARY = "canary_out_of_range"
    """The canary count is not a whole number in ``config.CANARY_RANGE``."""
    WAVE_SIZE = "wave_size_out_of_range"
    """The wave size is not a whole number in ``config.WAVE_SIZE_RANGE``."""


def _in(value: Any, bounds: tuple[int, int]) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) \
        and bounds[0] <= value <= bounds[1]


def waves_problem(canary: Any, wave_size: Any) -> WavesProblem | None:
    """What is wrong with a rollout's canary count and wave size (the canary's first), or
    None. The one place this rule is decided."""
    if not _in(canary, CANARY_RANGE):
        return WavesProblem.CANARY
    if not _in(wave_size, WAVE_SIZE_RANGE):
        return WavesProblem.WAVE_SIZE
    return None


#: ``clinibox central rollout``'s words (and :func:`create`'s refusal) for each problem
#: :func:`waves_problem` finds; the console's form says them its own way.
REFUSALS: dict[WavesProblem, str] = {
    WavesProblem.CANARY: N_("--canary must be a whole number from %(lo)s to %(hi)s"),
    WavesProblem.WAVE_SIZE: N_("--wave-size must be a whole number from %(lo)s to %(hi)s"),
}


def waves_refusal(problem: WavesProblem) -> str:
    """A canary or wave-size problem in the command's words, in the reader's language."""
    low, high = CANARY_RANGE if problem is WavesProblem.CANARY else WAVE_SIZE_RANGE
    return gettext(REFUSALS[problem], lo=low, hi=high)


@dataclass(frozen=True)
class CheckedPackage:
    """A package archive checked as a box would check it."""

    archive: PackedArchive
    signer: str
    #: the manifest's digest (``signing.manifest_digest``), what a box that runs it reports
    manifest_digest: str = ""


def check_package(path: Path, trusted_keys: Iterable[Path]) -> CheckedPackage:
    """Check the archive at ``path`` (schema, signature by a trusted key, every file's hash);
    RolloutError if a box would refuse it."""
    keys = [signing.load_public_key(Path(k)) for k in trusted_keys]
    if not keys:
        raise RolloutError(gettext("no %(setting)s: name the hospital's model-signing public "
                                   "keys, the ones the enrolment bundles carry",
                                   setting="[rollouts] trusted_keys"))
    try:
        archive = describe(Path(path))
        with tempfile.TemporaryDirectory(prefix="clinibox-rollout-") as folder:
            manifest_path = unpack(Path(path), Path(folder)) / "manifest.json"
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if isinstance(manifest, dict) and manifest.get("schema") == RELEASE_SCHEMA:
                signer = _checked_release(Path(path), manifest_path.parent, keys)
            else:
                if isinstance(manifest, dict) and is_release(str(manifest.get("name"))):
                    raise RolloutError(gettext("%(path)s: a model package may not bear the "
                                               "name of the box's software", path=path))
                check_schema(manifest)
                try:
                    signer = signing.verify_document(manifest, keys)
                except signing.SignatureError as exc:
                    raise RolloutError(gettext(
                        "%(path)s: not signed by a key of %(setting)s, so no box would "
                        "install it (%(why)s)", path=path, setting="[rollouts] trusted_keys",
                        why=error_words(exc))) from exc
                check_files(manifest_path.parent, manifest)
            digest = signing.manifest_digest(manifest)
    except (PackageError, OSError, ValueError, tarfile.TarError) as exc:
        raise RolloutError(f"{path}: {error_words(exc)}") from exc
    if (manifest["name"], manifest["version"]) != (archive.name, archive.version):
        raise RolloutError(gettext("%(path)s: the archive's folder and its manifest disagree",
                                   path=path))
    if archive.size > downlink.MAX_ARCHIVE_BYTES or \
            archive.unpacked_bytes > downlink.MAX_UNPACKED_BYTES:
        raise RolloutError(gettext("%(path)s: larger than a rollout carries (%(bytes)s bytes, "
                                   "%(unpacked)s unpacked)", path=path,
                                   bytes=downlink.MAX_ARCHIVE_BYTES,
                                   unpacked=downlink.MAX_UNPACKED_BYTES))
    if not (downlink.PACKAGE_NAME.fullmatch(archive.name)
            and downlink.PACKAGE_VERSION.fullmatch(archive.version)):
        raise RolloutError(gettext("%(path)s: its name or version cannot be offered to a box",
                                   path=path))
    return CheckedPackage(archive, signer, digest)


def _checked_release(path: Path, root: Path, keys: list[Any]) -> str:
    """A release of the box's software checked as a box checks it (signature by a trusted
    key, every file); its signer's key id, or RolloutError."""
    try:
        return software_release.verify(root, keys).signer
    except software_release.ReleaseError as exc:
        if exc.code is software_release.ReleaseRefusal.SIGNATURE:
            raise RolloutError(gettext("%(path)s: not signed by a key of %(setting)s, so no "
                                       "box would install it (%(why)s)", path=path,
                                       setting="[rollouts] trusted_keys",
                                       why=error_words(exc))) from exc
        raise RolloutError(gettext("%(path)s: not a release a box would apply (%(why)s)",
                                   path=path, why=error_words(exc))) from exc


def _read_chunks(path: Path, size: int) -> Iterator[bytes]:
    with Path(path).open("rb") as data:
        yield from iter(lambda: data.read(size), b"")


def group_boxes(tx: Transaction, group: str) -> list[tuple[str, str]]:
    """The enrolled (not revoked) boxes of a group, by clinic then device: every box of the
    clinics in county ``group`` (as ``clinibox central clinic set`` names them), or of clinic
    ``group``. The console's rollout form and ``clinibox central rollout --group`` both ask
    here."""
    rows = tx.execute(
        "SELECT clinic, device FROM devices WHERE revoked_at IS NULL AND (clinic = ?"
        " OR clinic IN (SELECT clinic FROM clinics WHERE county = ?)) ORDER BY clinic, device",
        (group, group)).fetchall()
    return [(str(row[0]), str(row[1])) for row in rows]


def _waves(boxes: list[tuple[str, str]], canary: int, wave_size: int) -> list[int]:
    """The wave of each box in order: the first ``canary`` are wave 0, then ``wave_size`` a
    wave (wave 0 is the first wave when there are no canaries)."""
    first = canary if canary else wave_size
    return [0 if i < first else 1 + (i - first) // wave_size for i in range(len(boxes))]


def create(tx: Transaction, package: CheckedPackage, boxes: list[tuple[str, str]], *,
           canary: int, wave_size: int, pause_on_failure: bool, chunk_kib: int, by: str,
           now: float | None = None) -> int:
    """Start a rollout of ``package`` to ``boxes`` (enrolled, not revoked); its id. The first
    wave is offered at once."""
    problem = waves_problem(canary, wave_size)
    if problem is not None:
        raise RolloutError(waves_refusal(problem))
    now = time.time() if now is None else now
    boxes = list(dict.fromkeys((check_identity(c, "clinic"), check_identity(d, "device"))
                               for c, d in boxes))
    if not boxes:
        raise RolloutError(gettext("a rollout needs at least one box (--to CLINIC/BOX or "
                                   "--group)"))
    for clinic, device in boxes:
        row = tx.execute("SELECT revoked_at FROM devices WHERE clinic = ? AND device = ?",
                         (clinic, device)).fetchone()
        if row is None or row[0] is not None:
            raise RolloutError(gettext("%(box)s is not an enrolled box",
                                       box=f"{clinic}/{device}"))
    archive = package.archive
    known = tx.execute("SELECT chunk_bytes, chunk_sha256 FROM rollouts WHERE archive_sha256 = ?"
                       " ORDER BY id LIMIT 1", (archive.sha256,)).fetchone()
    if known is not None:  # its chunks are stored (and maybe on the broker): the same cut
        size, hashes = int(known[0]), json.loads(known[1])
    else:
        size = downlink.chunk_size_for(archive.size, chunk_kib * 1024)
        hashes = []
        for index, chunk in enumerate(_read_chunks(archive.path, size)):
            hashes.append(hashlib.sha256(chunk).hexdigest())
            tx.execute("INSERT INTO rollout_chunks (archive_sha256, idx, data) VALUES (?, ?, ?)"
                       " ON CONFLICT DO NOTHING", (archive.sha256, index, chunk))
    row = tx.execute(
        "INSERT INTO rollouts (name, version, archive_sha256, archive_bytes, unpacked_bytes,"
        " chunk_bytes, chunk_sha256, signer, canary, wave_size, pause_on_failure, state,"
        " created_by, created_at, updated_at, manifest_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?,"
        " ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (archive.name, archive.version, archive.sha256, archive.size,
         archive.unpacked_bytes, size, json.dumps(hashes), package.signer, int(canary),
         int(wave_size), int(pause_on_failure), ACTIVE, by, now, now,
         package.manifest_digest or None)).fetchone()
    rollout_id = int(row[0])
    for (clinic, device), wave in zip(boxes, _waves(boxes, canary, wave_size), strict=True):
        tx.execute("INSERT INTO rollout_targets (rollout_id, clinic, device, wave, updated_at)"
                   " VALUES (?, ?, ?, ?, ?)", (rollout_id, clinic, device, wave, now))
    audit(tx, by, "", "rollout_started", f"rollout:{rollout_id}",
          f"{archive.name}@{archive.version} to {len(boxes)} boxes", now)
    advance(tx, now, only=rollout_id)
    return rollout_id



def rollout(tx: Transaction, rollout_id: int) -> dict[str, Any] | None:
    """One rollout's row with its boxes counted by step, or None."""
    row = tx.execute(f"SELECT {', '.join(_COLUMNS)} FROM rollouts WHERE id = ?",
                     (int(rollout_id),)).fetchone()
    return None if row is None else _with_counts(tx, dict(zip(_COLUMNS, row, strict=True)))


def rollouts(tx: Transaction, limit: int = 50) -> list[dict[str, Any]]:
    """The latest rollouts, newest first, each with its boxes counted by step."""
    rows = tx.execute(f"SELECT {', '.join(_COLUMNS)} FROM rollouts ORDER BY id DESC LIMIT ?",
                      (int(limit),)).fetchall()
    return [_with_counts(tx, dict(zip(_COLUMNS, row, strict=True))) for row in rows]


def _with_counts(tx: Transaction, row: dict[str, Any]) -> dict[str, Any]:
    row["chunk_sha256"] = json.loads(row["chunk_sha256"])
    row["steps"] = {step: int(n) for step, n in tx.execute(
        "SELECT step, COUNT(*) FROM rollout_targets WHERE rollout_id = ? GROUP BY step",
        (row["id"],)).fetchall()}
    return row


def targets(tx: Transaction, rollout_id: int | None = None, *, clinic: str = "",
            device: str = "") -> list[dict[str, Any]]:
    """The boxes of a rollout (or every rollout a box is in, newest first), each with the
    model its last status reports (``running``, ``running_digest``), the package's
    (``package``, ``package_digest``) and whether that is :func:`seen` (``seen``)."""
    where, params = ("t.rollout_id = ?", (int(rollout_id),)) if rollout_id is not None else \
        ("t.clinic = ? AND t.device = ?", (clinic, device))
    columns = ", ".join(f"t.{c}" for c in _TARGET_COLUMNS)
    rows = tx.execute(
        f"SELECT {columns}, s.model, s.model_digest, r.name || '@' || r.version,"
        " r.manifest_sha256, r.name, s.software FROM rollout_targets AS t JOIN rollouts AS r"
        " ON r.id = t.rollout_id LEFT JOIN box_state AS s ON s.clinic = t.clinic AND"
        f" s.device = t.device WHERE {where} ORDER BY t.rollout_id DESC, t.wave, t.clinic,"
        " t.device", params).fetchall()
    boxes = []
    for row in rows:
        box = dict(zip(_TARGET_COLUMNS + _RUNNING_COLUMNS, row[:-2], strict=True))
        name, software = row[-2], row[-1]
        if is_release(str(name)):  # a release: the software version the box reports
            box.update(running=f"{name}@{software}" if software else None,
                       running_digest=None, package_digest=None)
        box["software"] = is_release(str(name))
        box["seen"] = seen(box)
        boxes.append(box)
    return boxes


def seen(target: dict[str, Any]) -> bool:
    """Whether the box's last status reports it runs the rollout's package: its name and
    version, and its manifest digest (a rollout from before digests were kept: name and
    version)."""
    if not target["running"] or target["running"] != target["package"]:
        return False
    return target["package_digest"] is None or target["running_digest"] == \
        target["package_digest"]


def finished(target: dict[str, Any]) -> bool:
    """Whether a box no longer holds its rollout back: it failed, or it installed the
    package and its status shows it runs it."""
    return target["step"] in FAILED_STEPS or (target["step"] in INSTALLED_STEPS
                                              and bool(target["seen"]))


def chunks(tx: Transaction, archive_sha256: str) -> Iterator[tuple[int, bytes]]:
    """(index, bytes) of each chunk of an archive, in order."""
    for index, data in tx.execute("SELECT idx, data FROM rollout_chunks WHERE"
                                  " archive_sha256 = ? ORDER BY idx", (archive_sha256,)):
        yield int(index), bytes(data)


def _offer_payload(row: dict[str, Any], now: float) -> dict[str, Any]:
    payload = {"schema": downlink.SCHEMA_VERSION, "created_at": int(now),
               "rollout": int(row["id"]), "name": row["name"], "version": row["version"],
               "archive_sha256": row["archive_sha256"],
               "archive_bytes": int(row["archive_bytes"]),
               "unpacked_bytes": int(row["unpacked_bytes"]),
               "chunk_bytes": int(row["chunk_bytes"]), "chunk_sha256": list(row["chunk_sha256"])}
    try:
        downlink.check_rollout(payload)
    except EgressRefused as exc:
        raise RolloutError(f"rollout {row['id']} cannot be offered: {exc}") from exc
    return payload


def advance(tx: Transaction, now: float | None = None, *, only: int | None = None,
            box_timeout_s: float = DEFAULT_BOX_TIMEOUT_S) -> int:
    """Move the active rollouts on: a box offered more than ``box_timeout_s`` ago that has
    neither installed nor failed, or whose enrolment was revoked, is ``timed_out`` (a
    failure: it no longer holds the next wave back); pause on a failure that calls for it,
    offer the next wave once the waves before it have finished, mark a rollout done when
    every box has; the number of boxes offered."""
    now = time.time() if now is None else now
    if tx.postgres:  # two receivers' publishers never offer one wave twice
        tx.execute("SELECT pg_advisory_xact_lock(?)", (_ADVANCE_LOCK,))
    offered = 0
    where, params = ("state = ?", (ACTIVE,)) if only is None else \
        ("state = ? AND id = ?", (ACTIVE, int(only)))
    for row in tx.execute(f"SELECT {', '.join(_COLUMNS)} FROM rollouts WHERE {where}",
                          params).fetchall():
        current = _with_counts(tx, dict(zip(_COLUMNS, row, strict=True)))
        _time_out(tx, int(current["id"]), now - box_timeout_s, now)
        offered += _advance_one(tx, current, now)
    return offered


def _time_out(tx: Transaction, rollout_id: int, offered_before: float, now: float) -> None:
    marks = ", ".join("?" * len(IN_PROGRESS_STEPS))
    tx.execute(f"UPDATE rollout_targets SET step = 'timed_out', reason = '', updated_at = ?"
               f" WHERE rollout_id = ? AND step IN ({marks}) AND offered_at < ?",
               (now, rollout_id, *IN_PROGRESS_STEPS, offered_before))
    tx.execute(f"UPDATE rollout_targets SET step = 'timed_out', reason = 'revoked',"
               f" updated_at = ? WHERE rollout_id = ? AND step IN (?, {marks}) AND EXISTS"
               " (SELECT 1 FROM devices d WHERE d.clinic = rollout_targets.clinic AND"
               " d.device = rollout_targets.device AND d.revoked_at IS NOT NULL)",
               (now, rollout_id, WAITING, *IN_PROGRESS_STEPS))


def _advance_one(tx: Transaction, row: dict[str, Any], now: float) -> int:
    boxes = targets(tx, row["id"])
    failed = [b for b in boxes if b["step"] in FAILED_STEPS]
    canary_failed = bool(row["canary"]) and any(b["wave"] == 0 for b in failed)
    if canary_failed or (failed and row["pause_on_failure"]):
        _set_state(tx, row["id"], PAUSED, "canary_failed" if canary_failed else "failure", now)
        return 0
    waiting = [b for b in boxes if b["step"] == WAITING]
    if not waiting:
        if all(finished(b) for b in boxes):
            _set_state(tx, row["id"], DONE, "", now)
        return 0
    wave = min(b["wave"] for b in waiting)
    if any(b["wave"] < wave and not finished(b) for b in boxes):
        return 0  # the wave before is still on its way, or not yet seen running it
    payload = _offer_payload(row, now)
    count = 0
    for box in (b for b in waiting if b["wave"] == wave):
        seq = queue_downlink(tx, box["clinic"], box["device"], downlink.KIND_ROLLOUT, payload,
                             now)
        tx.execute("UPDATE rollout_targets SET offer_seq = ?, offered_at = ?, step = 'sent',"
                   " updated_at = ? WHERE rollout_id = ? AND clinic = ? AND device = ?",
                   (seq, now, now, row["id"], box["clinic"], box["device"]))
        count += 1
    return count


def _set_state(tx: Transaction, rollout_id: int, state: str, reason: str, now: float) -> None:
    tx.execute("UPDATE rollouts SET state = ?, state_reason = ?, updated_at = ? WHERE id = ?",
               (state, reason, now, int(rollout_id)))


#: the step a device event about a rollout puts its box at
_EVENT_STEPS = {"model_installed": "on_trial", "model_kept": "kept",
                "model_rolled_back": "rolled_back"}


def note_event(tx: Transaction, clinic: str, device: str, payload: dict[str, Any],
               now: float) -> bool:
    """Record a device event that names a rollout (in the receiver's transaction); whether
    it moved a box. A step never goes back (events may arrive out of order)."""
    rollout_id = payload.get("rollout")
    if not rollout_id:
        return False
    event, reason = payload.get("event"), payload.get("reason", "")
    if event == "rollout":
        step = payload.get("step", "")
    elif event == "model_refused":
        step = "golden_failed" if reason == "golden_cases_failed" else "refused"
    else:
        step = _EVENT_STEPS.get(str(event), "")
    if step not in _RANK:
        return False
    row = tx.execute("SELECT step, rollback_seq FROM rollout_targets WHERE rollout_id = ? AND"
                     " clinic = ? AND device = ?", (int(rollout_id), clinic, device)).fetchone()
    if row is None or row[0] == WAITING:  # nothing was offered to it: nothing to say
        return False
    current, rollback_seq = str(row[0]), row[1]
    if step == current and step in IN_PROGRESS_STEPS and reason not in ("", "hospital"):
        # a trouble said on the way (a stalled transfer)
        tx.execute("UPDATE rollout_targets SET reason = ?, updated_at = ? WHERE rollout_id = ?"
                   " AND clinic = ? AND device = ?",
                   (reason, now, int(rollout_id), clinic, device))
        return True
    if step == "refused" and current in INSTALLED_STEPS and rollback_seq is not None:
        return False  # a rollback order the box did not carry out: it still runs the package
    if _RANK[step] <= _RANK.get(current, 0):
        return False
    tx.execute("UPDATE rollout_targets SET step = ?, reason = ?, updated_at = ?"
               " WHERE rollout_id = ? AND clinic = ? AND device = ?",
               (step, reason if step in FAILED_STEPS else "", now, int(rollout_id), clinic,
                device))
    return True


def pause(tx: Transaction, rollout_id: int, by: str, now: float | None = None) -> None:
    """Hold a rollout: no further wave is offered (boxes offered already go on)."""
    now = time.time() if now is None else now
    if _state(tx, rollout_id) != ACTIVE:
        raise RolloutError(gettext("rollout %(id)s is not active", id=rollout_id))
    _set_state(tx, rollout_id, PAUSED, "held", now)
    audit(tx, by, "", "rollout_paused", f"rollout:{int(rollout_id)}", "", now)


def resume(tx: Transaction, rollout_id: int, by: str, now: float | None = None) -> int:
    """Go on with a paused rollout (its failed boxes stay as they are); boxes offered now."""
    now = time.time() if now is None else now
    if _state(tx, rollout_id) != PAUSED:
        raise RolloutError(gettext("rollout %(id)s is not paused", id=rollout_id))
    _set_state(tx, rollout_id, ACTIVE, "", now)
    tx.execute("UPDATE rollouts SET pause_on_failure = 0, canary = 0 WHERE id = ?",
               (int(rollout_id),))  # the failures seen so far are accepted by a person
    audit(tx, by, "", "rollout_resumed", f"rollout:{int(rollout_id)}", "", now)
    return advance(tx, now, only=int(rollout_id))


def _state(tx: Transaction, rollout_id: int) -> str:
    row = tx.execute("SELECT state FROM rollouts WHERE id = ?", (int(rollout_id),)).fetchone()
    if row is None:
        raise RolloutError(gettext("no rollout %(id)s", id=rollout_id))
    return str(row[0])


def can_roll_back(target: dict[str, Any]) -> bool:
    """Whether a rollback order goes to this box of a rollout (:func:`targets`' row): it was
    offered the package (not a release of the box's software), has no rollback order yet and
    did not fail it. The rule
    :func:`rollback` follows and the console's rollout page shows."""
    return target["offer_seq"] is not None and target["rollback_seq"] is None \
        and target["step"] not in FAILED_STEPS and not target.get("software")


def undoable(tx: Transaction, clinic: str, device: str) -> dict[str, Any] | None:
    """The box's latest rollout that a rollback of the box undoes (installed or on its way),
    as :func:`targets`' row, or None."""
    return next((t for t in targets(tx, clinic=clinic, device=device)
                 if t["step"] in (*INSTALLED_STEPS, *IN_PROGRESS_STEPS)
                 and not t["software"]), None)


def rollback(tx: Transaction, by: str, *, rollout_id: int | None = None,
             boxes: Iterable[tuple[str, str]] = (), now: float | None = None) -> int:
    """Send a rollback order to each box that installed the rollout's package (every box
    of ``rollout_id``, or each of ``boxes`` in its latest rollout); how many. A rollout
    rolled back as a whole offers nothing more."""
    now = time.time() if now is None else now
    chosen: list[dict[str, Any]] = []
    if rollout_id is not None:
        _state(tx, rollout_id)
        chosen = targets(tx, rollout_id)
        _set_state(tx, rollout_id, ROLLED_BACK, "by_person", now)
    for clinic, device in boxes:
        mine = undoable(tx, clinic, device)
        if mine is None:
            raise RolloutError(gettext("%(box)s runs no package of a rollout to undo",
                                       box=f"{clinic}/{device}"))
        chosen.append(mine)
    sent = 0
    for box in chosen:
        if not can_roll_back(box):
            continue
        row = rollout(tx, box["rollout_id"])
        assert row is not None
        payload = {"schema": downlink.SCHEMA_VERSION, "created_at": int(now),
                   "rollout": int(row["id"]), "name": row["name"], "version": row["version"]}
        seq = queue_downlink(tx, box["clinic"], box["device"], downlink.KIND_ROLLBACK, payload,
                             now)
        tx.execute("UPDATE rollout_targets SET rollback_seq = ?, updated_at = ? WHERE"
                   " rollout_id = ? AND clinic = ? AND device = ?",
                   (seq, now, box["rollout_id"], box["clinic"], box["device"]))
        audit(tx, by, "", "rollback_sent", f"box:{box['clinic']}/{box['device']}",
              f"rollout {row['id']}: {row['name']}@{row['version']}", now)
        sent += 1
    return sent
