"""The image tier's fixtures: the hospital on the host (``tests/image/hospital.py``)."""

from tests.image.hospital import hospital  # noqa: F401  (a module-scoped fixture)
