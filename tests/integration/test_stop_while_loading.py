"""A stop asked for while the model is still being verified and timed.

``clinibox serve`` receives before its model runs (READY, then the runtime timing in a
child process, then the golden cases). A technician's ``systemctl stop`` or ``restart``
in those seconds ends the loading at once: the timing process is killed, nothing of its
timing is kept, the service exits cleanly, and what was received meanwhile waits, durable,
in the queue for the next start. The bundled demo package (phantom-trained, not for
clinical use) on this machine's real runtimes; dcmtk's storescu as the modality.
"""

from __future__ import annotations

import signal

import psutil

from tests.integration.conftest import storescu, wait_for
from tests.integration.test_dicom_ingest import phantom_dicoms

TIMING_MODULE = "engine.runtime.selection"


def _timing_processes(service: psutil.Process) -> list[psutil.Process]:
    """The service's runtime-timing children (``python -m engine.runtime.selection``)."""
    found = []
    for child in service.children(recursive=True):
        try:
            if TIMING_MODULE in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_stop_while_the_model_loads_ends_the_timing_and_keeps_what_arrived(
        box_factory, tmp_path):
    files = phantom_dicoms(tmp_path / "phantoms", 2, seed=11)
    box = box_factory()  # a fresh state folder: no timings kept, so the model is timed
    assert box.process is not None
    service = psutil.Process(box.process.pid)
    sent = storescu(box.port, files)  # received while the model loads
    assert sent.returncode == 0 and sent.stdout.count("Success") + sent.stderr.count(
        "Success") >= 2, sent.stderr
    timing: list[psutil.Process] = []
    wait_for(lambda: bool(timing.extend(_timing_processes(service)) or timing), 60,
             "the runtime timing process to start")
    assert "clinibox ready: model" not in box.log.read_text()

    box.process.send_signal(signal.SIGTERM)
    assert box.process.wait(timeout=60) == 0
    log = box.log.read_text()
    assert "stopping while the model was loading" in log
    assert "clinibox ready: model" not in log  # the loading did not run on to its end
    _gone, alive = psutil.wait_procs(timing, timeout=10)
    assert not alive, alive  # the timing process was killed with the loading
    assert not list(box.state.glob("runtime-timings-*.json"))  # no half-measured timings
    box.process = None

    box.start()  # the next start times the runtimes again and analyses what waited
    box.wait_idle(2)
    assert box.cli_json("status")["processed"] == 2
    assert list(box.state.glob("runtime-timings-*.json"))
    assert "clinibox ready: model" in box.log.read_text()
