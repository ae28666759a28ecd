"""Run every benchmark in turn (ingest, backends, end-to-end, memory, telemetry, viewer,
retention, model lifecycle, hostile input, decode sandbox, previews, viewer memory,
lesion findings, lesion sizes against truth, the whole appliance, what a CT slice costs, the
heatmap on the lesion, 3-D lesions of a series, an export's memory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script in ("ingest.py", "backends.py", "end_to_end.py", "memory.py", "telemetry.py",
               "viewer.py", "retention.py", "lifecycle.py", "hostile.py",
               "decode_sandbox.py", "previews.py", "viewer_memory.py", "findings.py",
               "sizes.py", "appliance.py", "slice_cost.py", "heatmap_on_lesion.py",
               "volume_lesions.py", "export_memory.py"):
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=True, cwd=HERE.parent)
