"""Backend keys → backend classes, imported lazily, and what each can run.

The table of backends is ``clinibox_common/contracts/backends.py``; this module
turns its rows into classes.

Only the backend that is asked for is imported, so a box without OpenVINO or
LiteRT starts normally; asking for a missing one raises BackendUnavailable
with the pip extra that installs it.
"""

from __future__ import annotations

import importlib

from clinibox_common.contracts.backends import BACKENDS, BackendInfo, formats_of
from engine.runtime.base import BackendUnavailable, RuntimeBackend

#: which artifact formats each backend can run
FORMATS: dict[str, tuple[str, ...]] = {key: info.formats for key, info in BACKENDS.items()}


def backend_keys() -> list[str]:
    """Every known backend key, in preference order for ties."""
    return list(BACKENDS)


def backends_for_format(artifact_format: str) -> list[str]:
    """The backends that can run an artifact of this format."""
    return [key for key, formats in FORMATS.items() if artifact_format in formats]


def _info(key: str) -> BackendInfo:
    formats_of(key)  # ValueError naming the known keys
    return BACKENDS[key]


def install_hint(key: str) -> str:
    """How to install a backend's runtime package."""
    return _info(key).install


def backend_class(key: str) -> type[RuntimeBackend]:
    """The backend class for ``key``; BackendUnavailable (naming the extra) if missing."""
    info = _info(key)
    try:
        module = importlib.import_module(info.module)
        cls: type[RuntimeBackend] = getattr(module, info.class_name)
        available = cls.is_available()
    except ImportError as exc:
        raise BackendUnavailable(
            f"runtime backend {key!r} cannot be imported ({exc}); install it: {info.install}"
        ) from exc
    if not available:
        raise BackendUnavailable(
            f"runtime backend {key!r} is not installed or not usable here; "
            f"install it: {info.install}"
        )
    return cls


def create_backend(key: str) -> RuntimeBackend:
    """A new, unloaded backend instance for ``key``."""
    return backend_class(key)()


def available_backends() -> list[str]:
    """The backends usable on this machine (their packages import)."""
    available = []
    for key in BACKENDS:
        try:
            backend_class(key)
        except BackendUnavailable:
            continue
        available.append(key)
    return available
