"""The hospital's rollouts on the box: fetch the offered package, install it, report each step.

A rollout offer or rollback order reaches the box over the downlink (signed by the
hospital, sealed to the box, kept in ``model_offers`` before it is acknowledged). The
:class:`Updater` thread of the service works through the open ones, oldest first:

* **rollout**: refused at once, before a byte is fetched, when the package is not the box's
  ``[models] name`` (``invalid``), is below the version floor (``older_version``) or the disk
  lacks room for the archive, its unpacked copy and ``[updates] min_free_mb`` (``no_space``).
  Otherwise the archive is fetched chunk by chunk through a :class:`ChunkSource` (the broker
  link: ``telemetry/package_fetch.py``), each chunk checked against the SHA-256 the signed
  offer lists and appended, with an fsync, to ``<state_dir>/updates/<sha256>.part``. The
  partial file is the progress: after a broker outage, a ``kill -9`` or a power cut the box
  checks the chunks it has again and asks for the next one. The pace keeps the average under
  ``[updates] max_kbps``. A chunk whose hash is wrong is dropped and asked for again; after
  :data:`BAD_CHUNKS_ALLOWED` in a row the offer is refused (``tampered``). The whole archive's
  SHA-256 is checked, then it is installed by :func:`models.install.install`, the one path
  ``clinibox model install`` takes (signature by a trusted key, every file's hash, name,
  version floor, golden cases on this box's CPU, switch, trial).
* **rollback**: :func:`models.install.rollback` back to the kept previous package, only while
  the box runs the version the order names.

While it downloads, the updater notes how far it has come every few seconds
(``storage/download_progress.py``: bytes, total, rate; the device page, ``clinibox status`` and
``clinibox model status`` show them with the time left) and tells the hospital at each tenth
of the archive (a ``downloading`` step with ``received_bytes`` and ``total_bytes``).

Each step is a ``rollout`` device event for the hospital (``offered``, ``downloading``,
``downloaded``, ``verified``, ``golden_passed``; ``refused`` with its reason); the install,
its refusal, the trial's end and a rollback report themselves (``model_installed``,
``model_refused``, ``model_kept``, ``model_rolled_back``), naming the rollout. A newer order
for the same package closes the older ones (the receiver does it as it keeps the newer one).
The running service sees the store's new state and reloads; images received meanwhile wait in
the queue and are analysed by whichever model runs when they are taken.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Protocol

from clinibox_common.contracts import downlink
from clinibox_common.contracts.manifest import PackageError
from clinibox_common.contracts.software_release import EVENT_REASONS as RELEASE_REASONS
from clinibox_common.contracts.software_release import file_name, is_release
from clinibox_common.errors import CliniboxError
from clinibox_common.fs import fsync_dir
from engine.model_package import version_key
from firmware_app import __version__
from firmware_app.models.download_meter import DownloadMeter
from firmware_app.models.install import UpdateRefused, install, report_event, rollback
from firmware_app.models.store import store_for
from firmware_app.settings.box import Config
from firmware_app.storage import db, download_progress, model_offers
from firmware_app.storage.model_offers import ModelOffer
from firmware_app.words import software_words

log = logging.getLogger(__name__)

#: chunks with a wrong hash accepted in a row before the offer is refused as tampered
BAD_CHUNKS_ALLOWED = 3
#: chunks that did not come in a row before the hospital is told the transfer stalls (the
#: box goes on asking: a rural link comes back)
STALLED_AFTER = 10
#: seconds between looks at the open orders when nothing wakes the updater
IDLE_SECONDS = 30.0
#: seconds between looks for the software updater's outcome of a handed release
RELEASE_POLL_SECONDS = 5.0
#: how long a handed release may lie untaken before the box says it cannot apply it
UNTAKEN_SECONDS = 15 * 60.0


class ChunkSource(Protocol):
    """Where the package's chunks come from (the broker link, in the service)."""

    def fetch(self, topic: str, timeout: float) -> bytes | None:
        """One chunk's bytes, or None when it did not come within ``timeout``."""


class OfferClosed(CliniboxError):
    """The order being worked on was closed meanwhile (a newer one replaced it); caught by
    the updater's loop, never raised out of it."""

    kind = "model order closed"


def updates_dir(config: Config) -> Path:
    """Where downloads in progress and finished archives wait: ``<state_dir>/updates``."""
    return config.state_dir / "updates"


class Updater:
    """Works through the hospital's open rollout offers and rollback orders (one thread)."""

    def __init__(self, config: Config, source: ChunkSource | None) -> None:
        self.config = config
        self.source = source
        self.folder = updates_dir(config)

    # -- the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event, wake: threading.Event) -> None:
        """Until ``stop``: tell the hospital of orders closed on arrival or replaced, handle
        each open order, then wait for ``wake`` (a new order)."""
        store_for(self.config).clean_leftovers()
        while not stop.is_set():
            wake.clear()
            offers: list[ModelOffer] = []
            try:
                self.report_closed()
                offers = self._open()
                if offers:
                    self.handle(offers[0], stop)
                    continue
            except OfferClosed:
                continue
            except (OSError, sqlite3.Error) as exc:  # a busy database, a passing failure
                log.error("model updates: %s; trying again shortly", exc)
                stop.wait(self.config.updates.retry_seconds)
                continue
            except Exception:  # one bad order must not stop the updates (or loop forever)
                log.exception("model updates failed%s",
                              f" on order {offers[0].seq}" if offers else "")
                if offers:
                    self._give_up(offers[0])
                else:
                    stop.wait(self.config.updates.retry_seconds)
                continue
            wake.wait(IDLE_SECONDS)

    def _give_up(self, offer: ModelOffer) -> None:
        """Close an order that failed unexpectedly, and say so (its files removed)."""
        try:
            self._drop(offer)
            self._step(offer, "refused", reason="load_failed", done=True)
        except Exception as exc:  # the loop goes on whatever happens here
            log.error("model updates: the order %d could not be closed: %s", offer.seq, exc)

    def report_closed(self) -> None:
        """Tell the hospital of each order closed without the updater: refused on arrival
        (another package, too late) or replaced by a newer one (its download dropped)."""
        with self._database() as conn:
            closed = model_offers.unreported(conn)
        for offer in closed:
            self._drop(offer)
            report_event(self.config, "rollout", offer.reason or "invalid", offer.model_id,
                         rollout=offer.rollout, step="refused",
                         note=f"rollout {offer.rollout} of {offer.model_id}: refused "
                              f"({offer.reason})")
            with self._database() as conn, db.transaction(conn):
                model_offers.mark_reported(conn, offer.seq)

    def _database(self) -> closing[sqlite3.Connection]:
        """A connection of its own to the box's database, closed after the ``with``."""
        return closing(db.connect(self.config.database_path))

    def _open(self) -> list[ModelOffer]:
        with self._database() as conn:
            return model_offers.open_offers(conn)

    def _current(self, seq: int) -> ModelOffer | None:
        with self._database() as conn:
            return model_offers.get(conn, seq)

    def _step(self, offer: ModelOffer, step: str, *, reason: str = "", done: bool = False,
              report: bool = True) -> None:
        """Record ``step`` for ``offer`` and tell the hospital (a ``rollout`` event);
        OfferClosed when a newer order closed it meanwhile (nothing recorded or told)."""
        with self._database() as conn, db.transaction(conn):
            written = model_offers.set_step(conn, offer.seq, step, reason=reason, done=done)
        if not written:
            raise OfferClosed(f"order {offer.seq} was closed")
        if report:
            report_event(self.config, "rollout", reason or "hospital", offer.model_id,
                         rollout=offer.rollout, step=step,
                         note=f"rollout {offer.rollout} of {offer.model_id}: {step}"
                              + (f" ({reason})" if reason else ""))

    def handle(self, offer: ModelOffer, stop: threading.Event) -> None:
        """Take one order as far as it goes now (a link that fails leaves it open)."""
        if offer.kind == downlink.KIND_ROLLBACK:
            self._roll_back(offer)
            return
        if is_release(offer.name):
            self._release(offer, stop)
            return
        if offer.step != "offered" and store_for(self.config).read().active == offer.version:
            # the install had switched when the service stopped (a kill -9, a power cut)
            # before the order was closed: it is done, and install reported it
            self._drop(offer)
            self._step(offer, "on_trial", done=True, report=False)
            return
        if offer.step == "offered":
            state = store_for(self.config).read()
            if state.active == offer.version and not self.config.models.version:
                # this box runs it already (installed by hand, or by an earlier rollout)
                self._step(offer, "on_trial" if state.trial is not None else "kept", done=True)
                return
            if not self._begin(offer, self.refusal(offer)):
                return
        archive = self.download(offer, stop)
        if archive is None:
            return
        self._install(offer, archive)

    def _begin(self, offer: ModelOffer, refusal: str) -> bool:
        """Refuse the offer for ``refusal`` (told to the hospital), or start its download;
        whether it goes on."""
        if refusal:
            log.warning("rollout %d of %s refused: %s", offer.rollout, offer.model_id, refusal)
            self._step(offer, "refused", reason=refusal, done=True)
            return False
        self._step(offer, "offered")
        self._step(offer, "downloading")
        return True

    # -- a release of the box's own software ----------------------------------------------
    def _release(self, offer: ModelOffer, stop: threading.Event) -> None:
        """A release: refused before a byte is fetched when it is not newer than the running
        version or does not fit the disk; fetched as a package is; handed to root's updater
        (``clinibox-software-update``, which tries it and keeps it or goes back by itself);
        its outcome told to the hospital when it comes, by whichever version then runs."""
        if offer.step == "offered":
            if offer.version == __version__:
                self._step(offer, "kept", done=True)  # this box runs it already
                return
            if not self._begin(offer, self.release_refusal(offer)):
                return
        if offer.step in ("offered", "downloading"):
            archive = self.download(offer, stop)
            if archive is not None:
                self._hand_over(offer, archive)
            return
        if self._archive(offer).exists():  # downloaded, not yet handed (a restart between)
            self._hand_over(offer, self._archive(offer))
            return
        self._await_outcome(offer, stop)

    def release_refusal(self, offer: ModelOffer) -> str:
        """Why a release is refused before anything is fetched ("" when it is not)."""
        if version_key(offer.version) <= version_key(__version__):
            return "older_version"
        payload = offer.payload
        needed = (2 * payload["archive_bytes"] + payload["unpacked_bytes"]
                  + self.config.updates.min_free_mb * 2**20)
        self.folder.mkdir(parents=True, exist_ok=True)
        if shutil.disk_usage(self.folder).free < needed:
            return "no_space"
        return ""

    def _hand_over(self, offer: ModelOffer, archive: Path) -> None:
        """Leave the checked archive where root's updater takes it (renamed into place)."""
        folder = self.config.software_incoming_dir
        folder.mkdir(mode=0o750, parents=True, exist_ok=True)
        temporary = folder / f".{file_name(offer.version)}.part"
        shutil.copyfile(archive, temporary)
        with temporary.open("rb") as data:
            os.fsync(data.fileno())
        os.replace(temporary, folder / file_name(offer.version))
        fsync_dir(folder)
        self._drop(offer)
        log.info("rollout %d: %s handed to the software updater", offer.rollout,
                 offer.model_id)

    def _await_outcome(self, offer: ModelOffer, stop: threading.Event) -> None:
        """Tell the hospital how root's updater ended the release, once it has; a release
        that lies untaken (no update unit on this box) is refused after a while."""
        outcome = software_words.read_outcome()
        if outcome is not None and outcome.get("file") == file_name(offer.version) \
                and float(outcome.get("at") or 0) >= offer.updated_at:
            reason = RELEASE_REASONS.get(str(outcome.get("reason")), "")
            if outcome.get("outcome") == "kept":
                self._step(offer, "kept", done=True)
            elif outcome.get("outcome") == "reverted":
                self._step(offer, "rolled_back", reason=reason or "selftest_failed",
                           done=True)
            else:
                self._step(offer, "refused", reason=reason or "invalid", done=True)
            return
        handed = self.config.software_incoming_dir / file_name(offer.version)
        if handed.exists() and time.time() - offer.updated_at > UNTAKEN_SECONDS:
            handed.unlink(missing_ok=True)
            log.error("rollout %d: no software updater took %s in %.0f minutes (is "
                      "clinibox-software-update.path enabled?)", offer.rollout,
                      handed.name, UNTAKEN_SECONDS / 60)
            self._step(offer, "refused", reason="not_installed", done=True)
            return
        stop.wait(RELEASE_POLL_SECONDS)  # root's updater works (and may restart this service)

    # -- checks before a byte is fetched ---------------------------------------------------
    def refusal(self, offer: ModelOffer) -> str:
        """Why the offer is refused before anything is fetched ("" when it is not)."""
        config = self.config
        if offer.name != config.models.name or config.models.version:
            return "invalid"  # another package, or a version pinned in the config
        state = store_for(config).read()
        if state.floor and version_key(offer.version) < version_key(state.floor):
            return "older_version"
        payload = offer.payload
        part = self._part(offer)
        have = part.stat().st_size if part.exists() else 0
        needed = (payload["archive_bytes"] - have + 2 * payload["unpacked_bytes"]
                  + config.updates.min_free_mb * 2**20)
        self.folder.mkdir(parents=True, exist_ok=True)
        if shutil.disk_usage(self.folder).free < needed:
            return "no_space"
        return ""

    # -- the transfer ----------------------------------------------------------------------
    def _part(self, offer: ModelOffer) -> Path:
        return self.folder / f"{offer.payload['archive_sha256']}.part"

    def _archive(self, offer: ModelOffer) -> Path:
        return self.folder / f"{offer.payload['archive_sha256']}.tar.gz"

    def resume_point(self, offer: ModelOffer) -> int:
        """How many chunks of the partial file are whole and right (the rest is cut off)."""
        part, payload = self._part(offer), offer.payload
        if not part.exists():
            return 0
        size, hashes = payload["chunk_bytes"], payload["chunk_sha256"]
        good = 0
        with part.open("rb") as data:
            for expected in hashes:
                chunk = data.read(size)
                if not chunk or hashlib.sha256(chunk).hexdigest() != expected:
                    break
                good += 1
        keep = min(good * size, payload["archive_bytes"])
        with part.open("r+b") as data:
            data.truncate(keep)
            data.flush()
            os.fsync(data.fileno())
        return good

    def download(self, offer: ModelOffer, stop: threading.Event) -> Path | None:
        """The whole archive, checked; None when the link or a stop left it unfinished."""
        archive = self._archive(offer)
        if archive.exists():
            return archive
        if self.source is None:
            log.warning("rollout %d waits: the box has no broker link", offer.rollout)
            stop.wait(IDLE_SECONDS)
            return None
        payload = offer.payload
        self.folder.mkdir(parents=True, exist_ok=True)
        index = self.resume_point(offer)
        if index:
            log.info("rollout %d: resuming at chunk %d of %d", offer.rollout, index + 1,
                     len(payload["chunk_sha256"]))
        bad = missed = 0
        meter = DownloadMeter(payload["archive_bytes"],
                              min(index * payload["chunk_bytes"], payload["archive_bytes"]),
                              time.monotonic())
        self._progress(offer, meter)
        pace = self.config.updates.max_kbps * 1000 / 8  # bytes a second (0: no cap)
        # a whole chunk must fit in the wait, even at the cap's pace on a slow link
        timeout = self.config.updates.chunk_timeout_seconds + (
            payload["chunk_bytes"] / pace if pace else 0.0)
        with self._part(offer).open("ab") as part:
            while index < len(payload["chunk_sha256"]):
                if stop.is_set():
                    return None
                current = self._current(offer.seq)
                if current is None or current.done:
                    part.close()
                    self._drop(offer)
                    raise OfferClosed(f"order {offer.seq} was closed")
                started = time.monotonic()
                topic = downlink.chunk_topic(payload["archive_sha256"], index)
                chunk = self.source.fetch(topic, timeout)
                if chunk is None:
                    missed += 1
                    log.info("rollout %d: chunk %d did not come (%d in a row); asking again "
                             "later", offer.rollout, index + 1, missed)
                    if missed == STALLED_AFTER:  # said once per stall; the box goes on asking
                        self._step(offer, "downloading", reason="transfer")
                    # soon after a link that just came back, then less and less often
                    stop.wait(min(self.config.updates.retry_seconds, float(missed)))
                    continue
                missed = 0
                if hashlib.sha256(chunk).hexdigest() != payload["chunk_sha256"][index]:
                    bad += 1
                    log.warning("rollout %d: chunk %d has the wrong hash (%d in a row)",
                                offer.rollout, index + 1, bad)
                    if bad >= BAD_CHUNKS_ALLOWED:
                        part.close()
                        self._drop(offer)
                        self._step(offer, "refused", reason="tampered", done=True)
                        return None
                    stop.wait(self.config.updates.retry_seconds)
                    continue
                bad = 0
                try:
                    part.write(chunk)
                    part.flush()
                    os.fsync(part.fileno())
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    part.close()
                    self._drop(offer)
                    self._step(offer, "refused", reason="no_space", done=True)
                    return None
                index += 1
                meter.add(len(chunk), time.monotonic())
                self._progress(offer, meter)
                if pace:
                    stop.wait(max(0.0, len(chunk) / pace - (time.monotonic() - started)))
        return self._finish(offer)

    def _progress(self, offer: ModelOffer, meter: DownloadMeter) -> None:
        """Note how far the download has come (every few seconds, for the device page and
        ``clinibox status``) and tell the hospital at each tenth of the archive."""
        now = time.monotonic()
        if meter.save_due(now) or meter.received >= meter.total:
            with self._database() as conn, db.transaction(conn):
                download_progress.record(conn, offer.seq, meter.received, meter.total,
                                         meter.rate(), time.time())
        if meter.tell_due():
            report_event(self.config, "rollout", "hospital", offer.model_id,
                         rollout=offer.rollout, step="downloading",
                         progress=(meter.received, meter.total),
                         note=f"rollout {offer.rollout} of {offer.model_id}: downloading, "
                              f"{meter.received} of {meter.total} bytes")

    def _finish(self, offer: ModelOffer) -> Path | None:
        """Check the whole archive's hash and keep it under its final name."""
        part, archive = self._part(offer), self._archive(offer)
        digest = hashlib.sha256()
        with part.open("rb") as data:
            for block in iter(lambda: data.read(2**20), b""):
                digest.update(block)
        if digest.hexdigest() != offer.payload["archive_sha256"]:
            self._drop(offer)
            self._step(offer, "refused", reason="tampered", done=True)
            return None
        os.replace(part, archive)
        fsync_dir(self.folder)
        self._clear_progress()
        self._step(offer, "downloaded")
        return archive

    def _clear_progress(self) -> None:
        with self._database() as conn, db.transaction(conn):
            download_progress.clear(conn)

    def _drop(self, offer: ModelOffer) -> None:
        """Remove the order's download, whole or partial (a rollback order has none; an
        archive another open order fetches too is kept for it)."""
        sha = offer.payload.get("archive_sha256")
        if sha is not None:
            self._clear_progress()
        if sha is None or any(o.payload.get("archive_sha256") == sha
                              for o in self._open() if o.seq != offer.seq):
            return
        for path in (self._part(offer), self._archive(offer)):
            path.unlink(missing_ok=True)

    # -- install and rollback --------------------------------------------------------------
    def _install(self, offer: ModelOffer, archive: Path) -> None:
        try:
            install(self.config, archive, by=model_offers.ACTOR, reason="hospital",
                    rollout=offer.rollout, on_step=lambda step: self._step(offer, step))
        except PackageError as exc:
            log.error("rollout %d of %s refused: %s", offer.rollout, offer.model_id, exc)
            step = "golden_failed" if exc.code == "golden_cases_failed" else "refused"
            # install told the hospital itself (model_refused) unless it was not even this
            # box's package
            self._step(offer, step, reason=exc.code, done=True,
                       report=isinstance(exc, UpdateRefused) and exc.code == "invalid")
        else:
            self._step(offer, "on_trial", done=True, report=False)
        finally:
            self._drop(offer)

    def _roll_back(self, offer: ModelOffer) -> None:
        try:
            rollback(self.config, "hospital", by=model_offers.ACTOR, expect=offer.version)
        except PackageError as exc:
            log.warning("rollback order of rollout %d not done: %s", offer.rollout, exc)
            self._step(offer, "refused", reason=exc.code, done=True)
        else:
            self._step(offer, "rolled_back", done=True, report=False)
