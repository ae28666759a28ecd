"""Run every benchmark in turn (ingest, backends, end-to-end, memory, telemetry, viewer,
retention, model lifecycle, hostile input, decode sandbox, previews, viewer memory,
lesion findings, lesion sizes against truth, the whole appliance, what a CT slice costs, the
heatmap on the lesion, 3-D lesions of a series, an export's memory, the hospital receivers
under a province's load), each as a module from
the repository root: ``python -m bench.run_all`` (``make bench``)."""

from __future__ import annotations

import subprocess
import sys

from bench.common import REPO

SCRIPTS = ("ingest", "backends", "end_to_end", "memory", "telemetry", "viewer", "retention",
           "lifecycle", "hostile", "decode_sandbox", "previews", "viewer_memory", "findings",
           "sizes", "appliance", "slice_cost", "heatmap_on_lesion", "volume_lesions",
           "export_memory", "central_load", "live")


def main() -> None:
    """Run each of ``SCRIPTS``; stop at the first that fails."""
    for script in SCRIPTS:
        print(f"== bench.{script}", flush=True)
        subprocess.run([sys.executable, "-m", f"bench.{script}"], check=True, cwd=REPO)


if __name__ == "__main__":
    main()
