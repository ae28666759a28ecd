"""The box's side of a hospital rollout (``models/updates.py``), chunk by chunk.

The packages are real signed copies of the demo package, packed by the one archive format;
the golden cases really run on ONNX Runtime; the store, the partial download and the outbox
are real files and SQLite. The chunks come from :class:`Chunks`, a dictionary standing in for
the broker's retained topics: the broker itself is in
``tests/integration/test_rollouts_e2e.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from clinibox_common.contracts import downlink
from clinibox_common.contracts.egress import EgressRefused, check_message
from clinibox_common.contracts.package_archive import pack
from firmware_app.models.store import store_for
from firmware_app.models.updates import STALLED_AFTER, OfferClosed, Updater
from firmware_app.settings.box import Config, from_dict
from firmware_app.storage import db, hospital_reviews, model_offers
from tests.model_packages import make_package

CHUNK = 64 * 1024


class Chunks:
    """The retained chunk topics of one archive, with a count of what was asked for."""

    def __init__(self, archive: Path, chunk_bytes: int = CHUNK) -> None:
        data = archive.read_bytes()
        self.sha = hashlib.sha256(data).hexdigest()
        self.parts = [data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]
        self.asked: list[int] = []
        #: chunk index → bytes to answer instead (a tampered chunk)
        self.forged: dict[int, bytes] = {}
        #: stop answering after this many chunks (a link that breaks), None: never
        self.break_after: int | None = None

    def fetch(self, topic: str, timeout: float) -> bytes | None:
        """The chunk on ``topic``, as the broker's retained message would give it."""
        index = int(topic.rsplit("/", 1)[1])
        assert topic == downlink.chunk_topic(self.sha, index)
        if self.break_after is not None and len(self.asked) >= self.break_after:
            return None
        self.asked.append(index)
        return self.forged.get(index, self.parts[index])


def offer_payload(archive: Path, chunks: Chunks, rollout: int = 7, *, name: str = "",
                  version: str = "") -> dict:
    """The hospital's checked offer of ``archive`` (``central/rollouts.py`` builds the same)."""
    manifest_name, manifest_version = archive.name.removesuffix(".tar.gz").rsplit("-", 1)
    payload = {"schema": 1, "created_at": 1_800_000_000, "rollout": rollout,
               "name": name or manifest_name, "version": version or manifest_version,
               "archive_sha256": chunks.sha, "archive_bytes": archive.stat().st_size,
               "unpacked_bytes": 3 * archive.stat().st_size, "chunk_bytes": CHUNK,
               "chunk_sha256": [hashlib.sha256(p).hexdigest() for p in chunks.parts]}
    downlink.check_rollout(payload)
    return payload


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return from_dict({"storage": {"state_dir": str(tmp_path / "state")},
                      "runtime": {"backend": "onnxruntime", "precision": "fp32"},
                      "updates": {"max_kbps": 0, "retry_seconds": 0.01, "min_free_mb": 0}})


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    """Signed packages 1.1.0 and 1.2.0 and a 1.3.0 whose golden cases fail, as archives."""
    folder = tmp_path_factory.mktemp("archives")
    made = {}
    for version, failing in (("1.1.0", False), ("1.2.0", False), ("1.3.0", True)):
        root = make_package(folder / "packages", version, failing_golden=failing)
        made[version] = pack(root, folder / f"clinibox-demo-lesion-{version}.tar.gz").path
    return made


def keep(config: Config, seq: int, payload: dict, kind: str = downlink.KIND_ROLLOUT):
    """Keep an order as the downlink receiver does; the kept row."""
    conn = db.open_database(config.database_path)
    try:
        with db.transaction(conn):
            assert model_offers.add(conn, seq=seq, kind=kind, payload=payload, step="offered")
        offer = model_offers.get(conn, seq)
    finally:
        conn.close()
    assert offer is not None
    return offer


def steps(config: Config) -> list[tuple]:
    """The device events queued for the hospital: (event, step or reason, rollout)."""
    conn = sqlite3.connect(config.database_path)
    try:
        rows = [json.loads(r[0]) for r in conn.execute(
            "SELECT payload FROM outbox WHERE kind = 'event' ORDER BY seq")]
    finally:
        conn.close()
    for row in rows:
        check_message("event", row, None)
    # the download's progress reports (``received_bytes``) are the progress test's
    return [(r["event"], r.get("step") or r["reason"], r.get("rollout")) for r in rows
            if "received_bytes" not in r]


def order(config: Config, seq: int) -> model_offers.ModelOffer:
    conn = db.open_database(config.database_path)
    try:
        found = model_offers.get(conn, seq)
    finally:
        conn.close()
    assert found is not None
    return found


@pytest.mark.slow
def test_an_offer_is_fetched_checked_installed_and_each_step_reported(config, archives):
    chunks = Chunks(archives["1.1.0"])
    offer = keep(config, 1, offer_payload(archives["1.1.0"], chunks))
    Updater(config, chunks).handle(offer, threading.Event())
    state = store_for(config).read()
    assert state.active == "1.1.0" and state.trial is not None and state.trial.rollout == 7
    assert chunks.asked == list(range(len(chunks.parts)))  # each chunk once, in order
    assert steps(config) == [
        ("rollout", "offered", 7), ("rollout", "downloading", 7), ("rollout", "downloaded", 7),
        ("rollout", "verified", 7), ("rollout", "golden_passed", 7),
        ("model_installed", "hospital", 7)]
    done = order(config, 1)
    assert done.done and done.step == "on_trial"
    assert not list((config.state_dir / "updates").iterdir())  # nothing left behind


@pytest.mark.slow
def test_a_download_cut_off_resumes_where_it_stood(config, archives):
    chunks = Chunks(archives["1.1.0"])
    assert len(chunks.parts) > 3
    offer = keep(config, 1, offer_payload(archives["1.1.0"], chunks))
    stop = threading.Event()
    chunks.break_after = 2  # the link breaks after two chunks: the updater waits and asks again

    def stop_soon(topic: str, timeout: float) -> bytes | None:
        got = Chunks.fetch(chunks, topic, timeout)
        if got is None:
            stop.set()  # the service is stopped (kill -9 leaves the same partial file)
        return got

    chunks_fetch, chunks.fetch = chunks.fetch, stop_soon  # type: ignore[method-assign]
    Updater(config, chunks).handle(offer, stop)
    part = config.state_dir / "updates" / f"{chunks.sha}.part"
    assert part.stat().st_size == 2 * CHUNK and store_for(config).read().active == ""
    with part.open("ab") as torn:  # a power cut in the middle of the third chunk's write
        torn.write(chunks.parts[2][:1000])
    chunks.fetch, chunks.break_after = chunks_fetch, None  # type: ignore[method-assign]
    Updater(config, chunks).handle(order(config, 1), threading.Event())
    assert chunks.asked == [0, 1, *range(2, len(chunks.parts))]  # the torn chunk again, once
    assert store_for(config).read().active == "1.1.0"


@pytest.mark.slow
def test_a_stop_after_the_switch_but_before_the_order_closed_is_not_a_refusal(config,
                                                                             archives):
    chunks = Chunks(archives["1.1.0"])
    offer = keep(config, 1, offer_payload(archives["1.1.0"], chunks))
    updater = Updater(config, chunks)
    closed = updater._step
    updater._step = lambda o, step, **kw: None if step == "on_trial" else closed(o, step, **kw)
    updater.handle(offer, threading.Event())  # the service died before the order was closed
    assert store_for(config).read().active == "1.1.0" and not order(config, 1).done
    reported = steps(config)
    Updater(config, chunks).handle(order(config, 1), threading.Event())  # the next start
    done = order(config, 1)
    assert done.done and done.step == "on_trial" and done.reason == ""
    assert steps(config) == reported  # nothing more said: it was installed and reported
    assert store_for(config).read().active == "1.1.0"


def test_a_tampered_chunk_is_asked_again_and_a_forger_who_persists_is_refused(config,
                                                                               archives):
    chunks = Chunks(archives["1.1.0"])
    offer = keep(config, 1, offer_payload(archives["1.1.0"], chunks))
    chunks.forged[1] = b"\x00" * CHUNK
    Updater(config, chunks).handle(offer, threading.Event())
    assert chunks.asked == [0, 1, 1, 1] and store_for(config).read().active == ""
    assert steps(config)[-1] == ("rollout", "refused", 7)
    refused = order(config, 1)
    assert refused.done and refused.reason == "tampered"
    assert not (config.state_dir / "updates" / f"{chunks.sha}.part").exists()


@pytest.mark.slow
def test_refusals_before_a_byte_is_fetched(config, archives, tmp_path):
    chunks = Chunks(archives["1.2.0"])
    Updater(config, chunks).handle(keep(config, 1, offer_payload(archives["1.2.0"], chunks)),
                                   threading.Event())
    assert store_for(config).read().floor == "1.2.0"
    asked = len(chunks.asked)
    older = Chunks(archives["1.1.0"])
    Updater(config, older).handle(keep(config, 2, offer_payload(archives["1.1.0"], older, 8)),
                                  threading.Event())
    assert older.asked == [] and order(config, 2).reason == "older_version"
    full = from_dict({**json.loads(json.dumps({"storage": {"state_dir": str(config.state_dir)},
                                               "runtime": {"backend": "onnxruntime"}})),
                      "updates": {"min_free_mb": 1_000_000}})
    big = Chunks(archives["1.3.0"])
    Updater(full, big).handle(keep(config, 3, offer_payload(archives["1.3.0"], big, 9)),
                              threading.Event())
    assert big.asked == [] and order(config, 3).reason == "no_space"
    assert len(chunks.asked) == asked
    assert [s for s in steps(config) if s[2] in (8, 9)] == [
        ("rollout", "refused", 8), ("rollout", "refused", 9)]


@pytest.mark.slow
def test_golden_cases_failing_on_this_box_keep_the_old_model(config, archives):
    chunks = Chunks(archives["1.3.0"])
    Updater(config, chunks).handle(keep(config, 1, offer_payload(archives["1.3.0"], chunks)),
                                   threading.Event())
    assert store_for(config).read().active == ""  # the bundled package still runs
    failed = order(config, 1)
    assert failed.step == "golden_failed" and failed.reason == "golden_cases_failed"
    assert steps(config)[-1] == ("model_refused", "golden_cases_failed", 7)


@pytest.mark.slow
def test_a_rollback_order_goes_back_only_from_the_version_it_names(config, archives):
    chunks = Chunks(archives["1.1.0"])
    Updater(config, chunks).handle(keep(config, 1, offer_payload(archives["1.1.0"], chunks)),
                                   threading.Event())
    wrong = {"schema": 1, "created_at": 1_800_000_000, "rollout": 7,
             "name": "clinibox-demo-lesion", "version": "9.9.9"}
    Updater(config, None).handle(keep(config, 2, wrong, downlink.KIND_ROLLBACK),
                                 threading.Event())
    assert store_for(config).read().active == "1.1.0" and order(config, 2).step == "refused"
    right = {**wrong, "version": "1.1.0"}
    Updater(config, None).handle(keep(config, 3, right, downlink.KIND_ROLLBACK),
                                 threading.Event())
    assert store_for(config).read().active == "1.0.0" and order(config, 3).step == "rolled_back"
    assert steps(config)[-1] == ("model_rolled_back", "hospital", 7)
    conn = db.open_database(config.database_path)
    try:  # the orders' sequence numbers count in the downlink's watermark
        assert hospital_reviews.watermark(conn) == 3
    finally:
        conn.close()


def test_an_offer_whose_chunk_list_does_not_fit_its_size_is_refused_by_the_contract(
        archives):
    chunks = Chunks(archives["1.1.0"])
    payload = offer_payload(archives["1.1.0"], chunks)
    with pytest.raises(EgressRefused, match="one hash per chunk"):
        downlink.check_rollout({**payload, "chunk_sha256": payload["chunk_sha256"][:-1]})
    with pytest.raises(ValueError):
        downlink.chunk_topic("../../x", 0)


def test_a_newer_offer_replaces_one_in_progress_and_the_hospital_is_told(config, archives):
    chunks = Chunks(archives["1.1.0"])
    first = keep(config, 1, offer_payload(archives["1.1.0"], chunks, 7))
    stop = threading.Event()
    chunks.break_after = 2
    fetch = chunks.fetch

    def replaced_midway(topic: str, timeout: float) -> bytes | None:
        got = fetch(topic, timeout)
        if got is None:  # the link stalls; meanwhile the hospital sends rollout 8
            newer = Chunks(archives["1.2.0"])
            conn = db.open_database(config.database_path)
            try:
                with db.transaction(conn):
                    model_offers.add(conn, seq=2, kind=downlink.KIND_ROLLOUT,
                                     payload=offer_payload(archives["1.2.0"], newer, 8),
                                     step="offered")
                    model_offers.finish_older(conn, "clinibox-demo-lesion", 2, "replaced")
            finally:
                conn.close()
        return got

    chunks.fetch = replaced_midway  # type: ignore[method-assign]
    updater = Updater(config, chunks)
    with pytest.raises(OfferClosed):
        updater.handle(first, stop)
    assert not (config.state_dir / "updates" / f"{chunks.sha}.part").exists()  # dropped
    updater.report_closed()
    assert steps(config)[-1] == ("rollout", "refused", 7)
    assert order(config, 1).reason == "replaced"
    updater.report_closed()  # told once
    assert [s for s in steps(config) if s[1] == "refused"] == [("rollout", "refused", 7)]


def test_a_rollback_order_is_never_closed_by_a_newer_offer(config, archives):
    chunks = Chunks(archives["1.1.0"])
    back = {"schema": 1, "created_at": 1_800_000_000, "rollout": 6,
            "name": "clinibox-demo-lesion", "version": "1.0.5"}
    keep(config, 1, back, downlink.KIND_ROLLBACK)
    conn = db.open_database(config.database_path)
    try:
        with db.transaction(conn):
            model_offers.add(conn, seq=2, kind=downlink.KIND_ROLLOUT,
                             payload=offer_payload(archives["1.1.0"], chunks), step="offered")
            assert model_offers.finish_older(conn, "clinibox-demo-lesion", 2, "replaced") == 0
    finally:
        conn.close()
    assert not order(config, 1).done


def test_an_order_for_another_package_is_kept_closed_and_reported(config, archives):
    from firmware_app.telemetry.downlink import DownlinkReceiver

    chunks = Chunks(archives["1.1.0"])
    receiver = DownlinkReceiver.__new__(DownlinkReceiver)
    receiver.config, receiver.on_order = config, None
    conn = db.open_database(config.database_path)
    try:
        payload = offer_payload(archives["1.1.0"], chunks, name="another-model")
        assert receiver._keep_order(conn, 1, downlink.KIND_ROLLOUT, payload, False) == "kept"
    finally:
        conn.close()
    assert order(config, 1).done and steps(config) == []
    Updater(config, chunks).report_closed()
    assert steps(config) == [("rollout", "refused", 7)] and chunks.asked == []


def test_a_full_disk_refuses_the_offer_and_frees_what_it_wrote(config, archives, monkeypatch):
    import errno
    import os

    chunks = Chunks(archives["1.1.0"])
    offer = keep(config, 1, offer_payload(archives["1.1.0"], chunks))
    real = os.fsync
    calls = []

    def full(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", full)
    Updater(config, chunks).handle(offer, threading.Event())
    refused = order(config, 1)
    assert refused.done and refused.reason == "no_space"
    assert not list((config.state_dir / "updates").glob("*.part"))
    assert len(chunks.asked) == 3  # not fetched again and again


def test_an_unexpected_failure_closes_the_order_and_the_updater_goes_on(config, archives,
                                                                         monkeypatch):
    import firmware_app.models.updates as updates

    def broken(*args, **kwargs):
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(updates, "rollback", broken)
    back = {"schema": 1, "created_at": 1_800_000_000, "rollout": 6,
            "name": "clinibox-demo-lesion", "version": "1.0.0"}
    keep(config, 1, back, downlink.KIND_ROLLBACK)
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=Updater(config, None).run, args=(stop, wake))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not order(config, 1).done and time.monotonic() < deadline:
            time.sleep(0.05)
        assert thread.is_alive()
    finally:
        stop.set()
        wake.set()
        thread.join(10)
    closed = order(config, 1)
    assert closed.done and closed.reason == "load_failed"


@pytest.mark.slow
def test_an_offer_of_the_version_running_already_is_not_a_failure(config, archives):
    chunks = Chunks(archives["1.1.0"])
    Updater(config, chunks).handle(keep(config, 1, offer_payload(archives["1.1.0"], chunks)),
                                   threading.Event())
    again = Chunks(archives["1.1.0"])
    Updater(config, again).handle(
        keep(config, 2, offer_payload(archives["1.1.0"], again, 8)), threading.Event())
    assert again.asked == [] and order(config, 2).step == "on_trial"
    assert steps(config)[-1] == ("rollout", "on_trial", 8)


def test_a_stalled_download_is_told_once_and_the_box_keeps_asking(config, archives):
    chunks = Chunks(archives["1.1.0"])
    chunks.break_after = 1
    offer = keep(config, 1, offer_payload(archives["1.1.0"], chunks))
    stop = threading.Event()
    misses = []
    fetch = chunks.fetch

    def stalled(topic: str, timeout: float) -> bytes | None:
        got = fetch(topic, timeout)
        if got is None:
            misses.append(topic)
            if len(misses) > 2 * STALLED_AFTER:
                stop.set()
        return got

    chunks.fetch = stalled  # type: ignore[method-assign]
    Updater(config, chunks).handle(offer, stop)
    conn = sqlite3.connect(config.database_path)
    try:
        reasons = [json.loads(r[0])["reason"] for r in conn.execute(
            "SELECT payload FROM outbox WHERE kind = 'event' ORDER BY seq")]
    finally:
        conn.close()
    assert reasons.count("transfer") == 1 and not order(config, 1).done


@pytest.mark.slow
def test_what_an_install_cut_short_left_is_removed(config, archives):
    import os

    leftover = config.model_store_dir / ".staging-cut"
    (leftover / "package").mkdir(parents=True)
    old = 1_700_000_000
    os.utime(leftover, (old, old))
    young = config.model_store_dir / ".staging-now"
    young.mkdir()
    chunks = Chunks(archives["1.1.0"])
    Updater(config, chunks).handle(keep(config, 1, offer_payload(archives["1.1.0"], chunks)),
                                   threading.Event())
    assert not leftover.exists() and young.exists()  # an install running now is left alone


@pytest.mark.slow
def test_a_replaced_offer_of_the_same_archive_leaves_its_download_to_the_newer(config,
                                                                            archives):
    chunks = Chunks(archives["1.1.0"])
    keep(config, 1, offer_payload(archives["1.1.0"], chunks, 7))
    part = config.state_dir / "updates" / f"{chunks.sha}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(chunks.parts[0] + chunks.parts[1])  # two chunks came for rollout 7
    conn = db.open_database(config.database_path)
    try:
        with db.transaction(conn):  # rollout 8 offers the same archive; 7 is replaced
            model_offers.add(conn, seq=2, kind=downlink.KIND_ROLLOUT,
                             payload=offer_payload(archives["1.1.0"], chunks, 8),
                             step="offered")
            model_offers.finish_older(conn, "clinibox-demo-lesion", 2, "replaced")
    finally:
        conn.close()
    updater = Updater(config, chunks)
    updater.report_closed()
    assert part.stat().st_size == 2 * CHUNK  # kept for rollout 8
    updater.handle(order(config, 2), threading.Event())
    assert chunks.asked == list(range(2, len(chunks.parts)))  # it resumed where 7 stood
    assert store_for(config).read().active == "1.1.0"


def test_a_refused_package_is_never_kept_as_the_one_to_go_back_to(tmp_path):
    from clinibox_common.contracts import signing
    from firmware_app.models.install import UpdateRefused, install, rollback

    signing.generate_key_pair(tmp_path / "h.pem", tmp_path / "h.pub")
    hospital_box = from_dict({"storage": {"state_dir": str(tmp_path / "state")},
                              "runtime": {"backend": "onnxruntime", "precision": "fp32"},
                              "models": {"trusted_keys": [str(tmp_path / "h.pub")],
                                         "trust_demo_key": False}})
    package = make_package(tmp_path / "p", "1.1.0", key=tmp_path / "h.pem")
    install(hospital_box, package)  # the bundled demo package is refused here: not kept
    state = store_for(hospital_box).read()
    assert (state.active, state.previous) == ("1.1.0", "")
    assert not store_for(hospital_box).package_root("1.0.0").exists()
    with pytest.raises(UpdateRefused, match="no previous model package"):
        rollback(hospital_box, "worker_crashed")


@pytest.mark.slow
def test_after_a_rollback_the_update_table_says_which_version_left_and_which_runs(
        config, archives):
    """Two rollouts installed, then a technician rolls back: the newer rollout's row says
    rolled back (by a technician), the older one's that it runs again, kept; neither says
    "installed, on trial" any more, in English or Chinese. A trial that passes says kept."""
    from clinibox_common.i18n import use_locale
    from firmware_app.models.install import rollback
    from firmware_app.storage.status import model_orders
    from firmware_app.words import model_update_words as model_words

    for seq, version in ((1, "1.1.0"), (2, "1.2.0")):
        chunks = Chunks(archives[version])
        Updater(config, chunks).handle(
            keep(config, seq, offer_payload(archives[version], chunks, rollout=6 + seq)),
            threading.Event())
    assert [order(config, seq).step for seq in (1, 2)] == ["on_trial", "on_trial"]
    assert rollback(config) == ("clinibox-demo-lesion@1.2.0", "clinibox-demo-lesion@1.1.0")
    older, newer = order(config, 1), order(config, 2)
    assert (newer.step, newer.reason) == ("rolled_back", "technician")
    assert (older.step, older.reason) == ("kept", "")
    conn = db.open_database(config.database_path)
    try:
        shown = model_orders(conn)
    finally:
        conn.close()
    assert [model_words.outcome(o) for o in shown] == [
        "rolled back to the previous model (by a technician)", "installed and kept"]
    with use_locale("zh_CN"):
        on_trial = model_words.step("on_trial")
        chinese = [model_words.outcome(o) for o in shown]
    assert on_trial not in chinese and not re.search("[A-Za-z]", "".join(chinese))
    # an order refused stays refused, whatever happens to its version later
    chunks = Chunks(archives["1.3.0"])
    Updater(config, chunks).handle(keep(config, 3, offer_payload(archives["1.3.0"], chunks, 9)),
                                   threading.Event())
    conn = db.open_database(config.database_path)
    try:
        with db.transaction(conn):
            assert model_offers.settle(conn, "clinibox-demo-lesion", "1.3.0",
                                       "rolled_back", "technician") == 0
    finally:
        conn.close()
    assert order(config, 3).step == "golden_failed"


@pytest.mark.slow
def test_the_download_s_progress_is_kept_shown_and_told(config, archives, monkeypatch,
                                                        tmp_path, capsys):
    """While a package comes in, the box keeps bytes, total, rate and time left in its
    database (every few seconds, not at every chunk), ``clinibox status`` and ``model status``
    show them, and the hospital is told at each tenth; a whole archive clears them."""
    import types

    from clinibox.table import main
    from clinibox_common.i18n import use_locale
    from firmware_app.models import updates
    from firmware_app.storage import download_progress
    from firmware_app.words import model_update_words as model_words

    clock = iter(range(0, 10_000))  # each look at the clock: one more second
    monkeypatch.setattr(updates, "time", types.SimpleNamespace(
        monotonic=lambda: float(next(clock)), time=time.time))
    chunks = Chunks(archives["1.1.0"])
    offer = keep(config, 1, offer_payload(archives["1.1.0"], chunks))
    stop = threading.Event()
    chunks.break_after = 3

    def stop_soon(topic: str, timeout: float) -> bytes | None:
        got = Chunks.fetch(chunks, topic, timeout)
        if got is None:
            stop.set()
        return got

    chunks_fetch, chunks.fetch = chunks.fetch, stop_soon  # type: ignore[method-assign]
    Updater(config, chunks).handle(offer, stop)
    conn = db.open_database(config.database_path)
    try:
        shown = download_progress.current(conn)
    finally:
        conn.close()
    total = archives["1.1.0"].stat().st_size
    assert shown is not None and shown["seq"] == 1 and shown["total_bytes"] == total
    # written every 2 s of the fake clock: the third chunk's bytes may wait for the next note
    assert 2 * CHUNK <= shown["received_bytes"] <= 3 * CHUNK
    assert shown["rate_bps"] > 0 and shown["seconds_left"] > 0
    assert shown["percent"] == round(100 * shown["received_bytes"] / total, 1)
    line = model_words.progress(shown, time.time())
    assert re.fullmatch(r"[\d.]+ MB of [\d.]+ MB \([\d.]+ %\), [\d.]+ KB/s, about \d+ (s|min) "
                        r"left", line), line
    with use_locale("zh_CN"):
        chinese = model_words.progress(shown, time.time())
    assert "剩" in chinese and not re.search(r"[A-Za-z]", re.sub(r"MB|KB", "", chinese)), \
        chinese
    toml = tmp_path / "box.toml"
    toml.write_text(f'[storage]\nstate_dir = "{config.state_dir.as_posix()}"\n'
                    "[dicom]\nenabled = false\n")
    monkeypatch.setenv("LANG", "C")
    assert main(["status", "--config", str(toml)]) == 0
    assert model_words.progress(shown, time.time()).split(", about")[0] in capsys.readouterr().out
    assert main(["model", "status", "--config", str(toml)]) == 0
    assert "download:" in capsys.readouterr().out
    assert steps(config)[-1] == ("rollout", "downloading", 7)
    # the rest comes: the hospital hears each tenth once, with numbers only, then "downloaded"
    chunks.fetch, chunks.break_after = chunks_fetch, None  # type: ignore[method-assign]
    Updater(config, chunks).handle(order(config, 1), threading.Event())
    rows = sqlite3.connect(config.database_path).execute(
        "SELECT payload FROM outbox WHERE kind = 'event' ORDER BY seq").fetchall()
    sent = [json.loads(r[0]) for r in rows]
    for event in sent:
        check_message("event", event, None)
    progress = [(e["received_bytes"], e["total_bytes"]) for e in sent if "received_bytes" in e]
    assert progress and all(t == total for _r, t in progress)
    received = [r for r, _t in progress]
    assert received == sorted(set(received)) and len(received) <= 9
    tenths = [10 * r // total for r in received]
    assert len(tenths) == len(set(tenths))  # one message a tenth at most
    conn = db.open_database(config.database_path)
    try:
        assert download_progress.current(conn) is None
    finally:
        conn.close()
