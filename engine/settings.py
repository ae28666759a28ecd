"""The settings the engine reads: what one object may cost to decode, and which runtime runs a
model. The box's configuration (``firmware_app/settings/box.py``) holds them as its ``[limits]``
and ``[runtime]`` sections; the converter and the demo build them directly."""

from __future__ import annotations

from dataclasses import dataclass

from clinibox_common.contracts.backends import BACKEND_CHOICES, PRECISIONS
from clinibox_common.settings_loader import in_range, one_of, setting


@dataclass
class LimitsConfig:
    """Limits on what one object may cost to decode."""

    max_rows: int = setting(in_range(8, 65535), "largest image height accepted", 16384)
    max_columns: int = setting(in_range(8, 65535), "largest image width accepted", 16384)
    max_frames: int = setting(in_range(1, 100000), "most frames in one object", 4000)
    max_decoded_mb: int = setting(in_range(1, 65536), "decoded pixel memory per object", 1024)
    sandbox_memory_mb: int = setting(
        in_range(64, 65536), "memory the decoder process may take on top of its code", 2048)
    sandbox_seconds: float = setting(
        in_range(1, 3600), "longest decode of one object, in the decoder's own time (waiting "
                           "for a CPU behind receiving is not counted)", 60.0)
    max_megapixels: float = setting(
        in_range(0.01, 1000), "largest frame in megapixels (40 admits every full-field "
                            "mammography detector, up to 4728 × 5928)", 40.0)
    min_rows: int = setting(in_range(1, 4096), "smaller images get a quality warning", 64)


@dataclass
class RuntimeConfig:
    """Which runtime backend and artifact run the model."""

    backend: str = setting(one_of(*BACKEND_CHOICES), "backend", "auto")
    precision: str = setting(one_of("auto", *PRECISIONS), "artifact precision", "auto")
    threads: int = setting(in_range(0, 256), "inference threads; 0 lets the runtime decide", 0)
    device: str = setting(doc="OpenVINO device (AUTO, CPU, GPU, NPU)", default="AUTO")
