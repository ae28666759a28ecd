"""What each of the appliance's long-lived processes imports: the contract behind its memory
figures (bench/appliance.py, bench/viewer_memory.py).

Each probe runs in a fresh interpreter, so what other tests imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pydicom", "pynetdicom", "highdicom", "dicognito", "fpdf", "fontTools", "paho",
         "onnxruntime", "openvino", "ai_edge_litert")


def loaded_after(code: str) -> list[str]:
    tops = "{m.split('.')[0] for m in sys.modules}"
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted({tops} & {set(HEAVY)!r})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_viewer_serving_pages_holds_no_dicom_stack_no_pdf_writer_and_no_runtime(tmp_path):
    """Previews are read with numpy alone; exports and PDFs load their libraries (or their
    child process) only when asked."""
    loaded = loaded_after(
        "from firmware_app.settings.box import Config\n"
        "from firmware_app.settings.storage import StorageConfig\n"
        "from web.app import create_app\n"
        f"app = create_app(Config(storage=StorageConfig(state_dir={str(tmp_path)!r})))\n"
        "client = app.test_client()\n"
        "assert client.get('/login').status_code == 200\n"
        "assert client.get('/').status_code == 302\n")
    assert loaded == []


def test_the_service_without_a_pacs_never_loads_the_document_makers():
    """The SR/SEG makers (highdicom) load with the first document a PACS destination wants;
    the service's wiring alone imports the receiver's DICOM stack and nothing heavier."""
    loaded = loaded_after("import firmware_app.service.appliance\n"
                          "import firmware_app.service.study_completion\n")
    assert "highdicom" not in loaded and "fpdf" not in loaded
    assert {"pydicom", "pynetdicom", "paho"} <= set(loaded)
    # the chosen runtime loads with the model, never at import
    assert not {"onnxruntime", "openvino", "ai_edge_litert"} & set(loaded)


@pytest.mark.slow
def test_a_study_s_documents_are_made_in_a_child_the_service_never_loads_highdicom(tmp_path):
    """A PACS destination wants an SR, SEG and key image: they are made (and queued) while
    highdicom stays out of the service; the maker is warm while the study arrives and
    stops when idle."""
    probe = f"""
import sys, time
from pathlib import Path
import numpy as np
from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import generate
from firmware_app.dicom_out.source import ModelIdentity
from firmware_app.ingest.landing import Lander
from firmware_app.service.appliance import load_runner
from firmware_app.service.study_completion import StudyCompleter
from firmware_app.service.worker import Worker

from firmware_app.settings.box import Config, from_dict
from firmware_app.settings.storage import StorageConfig
from firmware_app.storage import db
from firmware_app.storage.spool import make_spool
config = Config(storage=StorageConfig(state_dir={str(tmp_path / 'state')!r}))
config.runtime.backend = "onnxruntime"
config.pacs.destinations = from_dict({{"pacs": {{"destinations": [
    {{"name": "pacs", "host": "127.0.0.1", "send": ["sr", "seg", "key_image"]}}]}}}}
    ).pacs.destinations
conn = db.connect(config.database_path); db.initialise(conn)
spool = make_spool(config)
path = write_dicom(ct_dataset(generate("ct", np.random.default_rng(5), lesion=True)),
                   Path({str(tmp_path / 'ct.dcm')!r}))
Lander(spool, config.database_path, 2**26).land(path.read_bytes(), sop_instance_uid=None,
                                                source="dicom", origin="T")
runner = load_runner(config)
Worker(config, spool, runner).run_once()
completer = StudyCompleter(config, ModelIdentity.from_manifest(runner.package.manifest), "b1")
completer.tick(now=time.time() - 3600)   # not stable yet: the maker warms up
warm = completer.maker.sandbox.running
done = completer.tick(now=time.time() + 120)
kinds = sorted(r[0] for r in conn.execute("SELECT kind FROM dicom_outbox"))
stopped = completer.maker.stop_if_idle(0.0)
print(warm, done, kinds, "highdicom" in sys.modules, stopped, completer.maker.sandbox.running)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-8:] == ["True", "1", "['key_image',", "'seg',", "'sr']",
                                        "False", "True", "False"]
