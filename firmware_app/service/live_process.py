"""Each live source in a process of its own (``clinibox live SOURCE``), restarted when it
ends.

A source's process decodes what the source sends under an address-space bound
(``[live] memory_mb``): a hostile stream that crashes FFmpeg or reaches the bound ends that
process alone, never the service, DICOM ingest or the other sources. The service then says
so in the source's state file (``decoder_failed``, with the exit status: the page shows it)
and starts the process again with backoff.
"""

from __future__ import annotations

from pathlib import Path

from clinibox_common.contracts.statuses import LiveState
from firmware_app.service.viewer_process import ViewerProcess
from firmware_app.storage.live_frames import write_stopped


class LiveProcess(ViewerProcess):
    """``clinibox live SOURCE`` as a restarted child of the service."""

    def __init__(self, config_path: str | None, source: str, live_root: Path) -> None:
        super().__init__(config_path, "live", source)
        self.source = source
        self.live_root = live_root
        self.what = f"live source {source}"

    def exited(self, returncode: int, delay: float) -> None:
        """Say on the source's page that its process ended, then log it."""
        write_stopped(self.live_root, self.source, str(LiveState.DECODER_FAILED),
                      {"status": returncode, "restart_seconds": round(delay)})
        super().exited(returncode, delay)
