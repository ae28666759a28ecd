"""clinibox: the headless lesion-detection service that runs on the box."""

from importlib import metadata

try:  # the installed distribution's: the tree the box runs, whatever its release
    __version__ = metadata.version("clinibox")
except metadata.PackageNotFoundError:  # sources not installed (make install installs them)
    __version__ = "0.0.0"
