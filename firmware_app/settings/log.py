"""The ``[logging]`` section: log verbosity (``log.py``: ``logging`` is the standard library's)."""

from __future__ import annotations

from dataclasses import dataclass

from clinibox_common.settings_loader import one_of, setting


@dataclass
class LoggingConfig:
    """Log verbosity."""

    level: str = setting(one_of("DEBUG", "INFO", "WARNING", "ERROR"), "log level", "INFO")
