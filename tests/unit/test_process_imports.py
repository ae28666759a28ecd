"""What each of the appliance's long-lived processes imports: the contract behind its memory
figures (bench/appliance.py, bench/viewer_memory.py).

Each probe runs in a fresh interpreter, so what other tests imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
        "from firmware_app.settings.box import Config, StorageConfig\n"
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
