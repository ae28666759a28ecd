"""clinibox: the headless lesion-detection service that runs on the box."""

__version__ = "0.1.0"
