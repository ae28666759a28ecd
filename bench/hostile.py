"""The whole appliance's memory through every attack of issues 13 and 43, against its own reference.

`clinibox serve` runs with its viewer (the process tree: service, gunicorn
master and workers, the decoder sandbox). The reference, in the same run, is
the tree's PSS after analysing a batch of ordinary CT phantoms. Then each
attack runs while the tree's PSS is sampled every 50 ms; the figures are the
peak during the attack and the PSS after it, with the reference beside them,
and whether a real modality (dcmtk's storescu) could still store meanwhile.

    .venv/bin/python -m bench.hostile [--files 40]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sqlite3
import struct
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BOX_DEFAULTS, REPO, figure, machine, phantom_files, save
from bench.process_memory import PeakSampler, tree_pss_mb
from tests.box_harness import echoscu, send, serve, stop, wait_for, write_config
from tests.corpus import j2k_bomb, rle_giant
from tests.hostile import Browser, store_pdus
from tests.lying_scu import CASES as LYING_CASES
from tests.lying_scu import LyingSCU
from tests.ports import free_ports

ATTACKER = "127.0.0.2"
#: the two addresses that try to hold every association slot
HOGS = ("127.0.0.2", "127.0.0.3")


def count(db: Path, sql: str) -> int:
    """One number the box's database answers (read-only)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def results(db: Path) -> int:
    """Instances with a final status."""
    return count(db, "SELECT COUNT(*) FROM instances WHERE status NOT IN "
                     "('queued', 'processing')")


def attack_usb_files(box: dict, work: Path) -> dict:
    """The 1.4 KB JPEG 2000 bomb, the 8 MB → 512 MB RLE object and a sparse 1 GB file,
    dropped into the import folder (as a USB stick is)."""
    before = results(box["db"])
    (box["import"] / "j2k_bomb.dcm").write_bytes(j2k_bomb("bench-bomb"))
    (box["import"] / "rle_giant.dcm").write_bytes(rle_giant("bench-giant"))
    with open(box["import"] / "sparse.dcm", "wb") as handle:
        handle.truncate(2**30)
    wait_for(lambda: results(box["db"]) >= before + 3, 300, "the three files' outcomes")
    return {}


def attack_endless_data_set(box: dict, work: Path) -> dict:
    """One association streams 3 × max_object_mb and never sends the last fragment."""
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
    from pynetdicom import AE

    ae = AE(ae_title="ATTACKER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", box["port"], ae_title="CLINIBOX",
                         bind_address=(ATTACKER, 0))
    sent = 0
    try:
        for pdu in store_pdus(assoc, 3 * box["max_object_mb"] * 2**20)[:-1]:
            assoc.dul.socket.socket.sendall(pdu)
            sent += len(pdu)
    except OSError:
        pass
    wait_for(lambda: not assoc.is_established, 30, "the box to drop the association")
    ae.shutdown()
    return {"sent_mb_before_cut": round(sent / 2**20, 1)}


def attack_giant_pdu(box: dict, work: Path) -> dict:
    """A P-DATA-TF PDU claiming 1.5 GB, its first 64 KB sent."""
    sock = socket.create_connection(("127.0.0.1", box["port"]), source_address=(ATTACKER, 0))
    sock.sendall(struct.pack(">BBL", 0x04, 0, 1536 * 2**20) + bytes(64 * 1024))
    sock.settimeout(10)
    try:
        closed = sock.recv(1) == b""
    except ConnectionResetError:  # closed with our unread bytes still queued: a reset
        closed = True
    sock.close()
    return {"closed_by_box": closed}


def attack_silent_connections(box: dict, work: Path) -> dict:
    """Eight silent TCP connections from one address while a modality sends 10 CT slices."""
    silent = [socket.create_connection(("127.0.0.1", box["port"]),
                                       source_address=(ATTACKER, 0)) for _ in range(8)]
    seconds = send(box["port"], box["files"][:10])
    for sock in silent:
        sock.close()
    return {"modality_stored_10_in_s": round(seconds, 2)}


def attack_password_guessing(box: dict, work: Path) -> dict:
    """60 wrong passwords for the nurse from another address, then the nurse logs in."""
    guesser = Browser(box["web_port"], box["cert"], source=ATTACKER)
    answers = {}
    for n in range(60):
        status = guesser.login("nadia", f"guess-{n}")[0]
        answers[status] = answers.get(status, 0) + 1
    started = time.perf_counter()
    status = Browser(box["web_port"], box["cert"]).login("nadia", "the-clinic-nurse-1")[0]
    return {"attacker_answers": answers, "nurse_login_status": status,
            "nurse_login_ms": round((time.perf_counter() - started) * 1000, 1)}


def attack_lying_commands(box: dict, work: Path) -> dict:
    """Each lying C-STORE of issue 43 (a command naming another instance or class than its
    data set, no SOP Instance UID, UIDs that are no UIDs) on an association of its own from
    the attacker's address; the box's answers, and whether any of them was stored."""
    from pydicom.uid import CTImageStorage, MRImageStorage

    def rows() -> int:
        return count(box["db"], "SELECT COUNT(*) FROM instances")

    before = rows()
    answers = {}
    for case, (build, _orthanc, _expected) in LYING_CASES.items():
        data, sop_class, sop_instance = build()
        with LyingSCU(box["port"], "CLINIBOX", [CTImageStorage, MRImageStorage],
                      source=ATTACKER) as scu:
            status = scu.store(data, sop_class=sop_class, sop_instance=sop_instance)
        answers[case] = "no answer (association ended)" if status is None else f"{status:#06x}"
    return {"answers": answers, "stored": rows() - before}


def attack_slot_hogging(box: dict, work: Path) -> dict:
    """Two addresses each open and hold as many associations as the box gives them; then a
    modality from a third address sends 10 CT slices."""
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
    from pynetdicom import AE

    ae = AE(ae_title="ATTACKER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    held: dict[str, list] = {HOGS[0]: [], HOGS[1]: []}
    try:
        for address in HOGS:
            for _ in range(8):
                assoc = ae.associate("127.0.0.1", box["port"], ae_title="CLINIBOX",
                                     bind_address=(address, 0))
                if not assoc.is_established:
                    break
                held[address].append(assoc)
        try:
            seconds: float | None = round(send(box["port"], box["files"][10:20]), 2)
        except RuntimeError:  # storescu was refused: the attackers hold every slot
            seconds = None
    finally:
        for assocs in held.values():
            for assoc in assocs:
                assoc.release()
        ae.shutdown()
    return {"held_by_address": {a: len(x) for a, x in held.items()},
            "modality_stored_10_in_s": seconds}


def attack_report_reloads(box: dict, work: Path) -> dict:
    """A logged-in nurse's browser reloads one study's report 300 times; how many audit rows
    that writes."""
    def audit_rows() -> int:
        return count(box["db"], "SELECT COUNT(*) FROM audit")

    browser = Browser(box["web_port"], box["cert"])
    assert browser.login("nadia", "the-clinic-nurse-1")[0] == 302
    before = audit_rows()
    statuses: dict[int, int] = {}
    for _ in range(300):
        status = browser.request("GET", "/study/1/report")[0]
        statuses[status] = statuses.get(status, 0) + 1
    return {"answers": statuses, "audit_rows_written": audit_rows() - before}


ATTACKS = [attack_usb_files, attack_endless_data_set, attack_giant_pdu,
           attack_silent_connections, attack_lying_commands, attack_slot_hogging,
           attack_password_guessing, attack_report_reloads]


def main() -> None:
    """Run the reference, then every attack, on one appliance; print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=40)
    args = parser.parse_args()
    files = phantom_files(Path(tempfile.gettempdir()) / f"clinibox-bench-ct-{args.files}",
                          args.files, "ct", seed=7)
    work = Path(tempfile.mkdtemp(prefix="clinibox-hostile-"))
    (port, web_port), max_object_mb = free_ports(2), 64
    config = write_config(
        work / "box.toml", work / "state", port, BOX_DEFAULTS,
        dicom={"max_associations_per_peer": 4},
        storage={"max_object_mb": max_object_mb},
        usb={"enabled": True, "watch_dir": str(work / "import"), "poll_seconds": 0.2,
             "settle_seconds": 0.5},
        web={"enabled": True, "port": web_port, "host": "0.0.0.0"})
    proc = serve(config, work / "serve.log", wait_for_model=True)
    box = {"port": port, "web_port": web_port, "db": work / "state" / "clinibox.db",
           "import": work / "import", "files": files, "max_object_mb": max_object_mb,
           "cert": work / "state" / "keys" / "web-cert.pem"}
    figures: dict = {"machine": machine("pynetdicom", "pydicom", "numpy")}
    try:
        wait_for(lambda: echoscu(port) and box["cert"].exists(), 180, "clinibox")
        import subprocess
        subprocess.run([sys.executable, "-m", "clinibox", "user", "add", "nadia",
                        "--role", "clinician", "--password-stdin", "--config", str(config)],
                       input="the-clinic-nurse-1\n", text=True, check=True, cwd=REPO,
                       capture_output=True)
        time.sleep(2)
        idle = tree_pss_mb(proc.pid)
        with PeakSampler(proc.pid) as sampler:
            send(port, files)
            wait_for(lambda: results(box["db"]) >= len(files), 600, "the reference batch")
        reference = {"idle": idle, "peak": sampler.peak, "after": tree_pss_mb(proc.pid)}
        figures["reference (ordinary CT batch)"] = reference
        for attack in ATTACKS:
            with PeakSampler(proc.pid) as sampler:
                extra = attack(box, work)
            time.sleep(1)
            figures[attack.__name__] = {"peak": sampler.peak, "after": tree_pss_mb(proc.pid),
                                        "peak_over_reference_mb": round(
                                            sampler.peak["total"] - reference["peak"]["total"],
                                            1), **extra}
            assert proc.poll() is None, f"the appliance died during {attack.__name__}"
        figures["outcomes"] = [tuple(r) for r in sqlite3.connect(box["db"]).execute(
            "SELECT status, substr(reason, 1, 90) FROM instances WHERE status != 'processed'")]
    finally:
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    reference = "the same appliance analysing the ordinary CT batch, same run"
    batch = figures["reference (ordinary CT batch)"]
    kept = {"idle": figure(batch["idle"]["total"], "MB PSS"),
            "ordinary CT batch: peak": figure(batch["peak"]["total"], "MB PSS"),
            "ordinary CT batch: after": figure(batch["after"]["total"], "MB PSS")}
    for attack in ATTACKS:
        row = figures[attack.__name__]
        what = attack.__name__.removeprefix("attack_").replace("_", " ")
        kept[f"{what}: peak"] = figure(row["peak"]["total"], "MB PSS", reference)
        kept[f"{what}: peak over the batch's"] = figure(row["peak_over_reference_mb"], "MB",
                                                        reference)
    save("hostile", figures, kept,
         notes=f"clinibox serve with its viewer, {args.files} CT phantoms as the reference "
               "batch, [storage] max_object_mb = 64; PSS of the process tree every 50 ms")


if __name__ == "__main__":
    main()
