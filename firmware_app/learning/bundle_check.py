"""The box's check of the Flower App Bundle a round sends, before Flower installs it
(decision 0056).

Flower's SuperNode runs, for each message of a round, a ``flwr-clientapp`` process that
installs the bundle (FAB) the hospital's SuperLink sent, puts the bundle's folder on the
import path and loads the ClientApp its ``pyproject.toml`` names. Unchecked, a bundle that
carries code of its own, or names another ClientApp, would run that code on the box, with
the box's rights and outside the guard (``guard_mod.py``). clinibox's bundle carries no code:
it names the ClientApp installed with clinibox. So the box accepts a bundle only when:

- it holds nothing but ``pyproject.toml`` and Flower's manifest (``.info/CONTENT``);
- it is clinibox's project, of a plain ``N.N.N`` version, unpacking to a few kilobytes;
- its ClientApp is :data:`CLIENT_APP`, the box's own;

and loads it only from the folder of clinibox's project and such a version, whatever name
and version the SuperLink reports for the run.

Anything else is refused with a fixed code (Flower sends an error's text to the hospital),
before a file of it is written. The box's node supervisor (``node.py``) starts the SuperNode
with this module first on its path as ``flwr-clientapp`` (:func:`install_wrapper`); it then
runs Flower's own ``flwr-clientapp`` with the check in front of its installation step.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from clinibox_common.contracts import flower_bundle
from clinibox_common.contracts.flower_bundle import BUNDLE_FILES, CLIENT_APP, BundleRefused

__all__ = ["BUNDLE_FILES", "CLIENT_APP", "BundleRefused", "check_bundle", "install_wrapper",
           "supernode_environment"]


def check_bundle(content: bytes) -> None:
    """Refuse (:class:`BundleRefused`) a bundle that carries code or another ClientApp."""
    flower_bundle.check_bundle(content, "clientapp", CLIENT_APP)


def install_wrapper(folder: Path) -> Path:
    """Write ``folder``/``flwr-clientapp`` (the check, then Flower's ClientApp process, on
    this Python) and return ``folder``: put it first on the SuperNode's ``PATH``."""
    return flower_bundle.write_wrapper(folder, "flwr-clientapp",
                                       "firmware_app.learning.bundle_check")


def supernode_environment(folder: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a SuperNode whose ClientApps pass :func:`check_bundle`: the
    wrapper's folder first on ``PATH``, then this Python's (Flower's commands)."""
    base = dict(os.environ if base is None else base)
    path = os.pathsep.join([str(install_wrapper(folder)), str(Path(sys.executable).parent),
                            base.get("PATH", "")])
    return {**base, "PATH": path}


def main() -> None:
    """``flwr-clientapp`` with :func:`check_bundle` before Flower installs the bundle."""
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    flower_bundle.check_before_install("flwr.supernode.runtime.run_clientapp", check_bundle)
    flower_bundle.check_before_loading("flwr.supernode.runtime.run_clientapp",
                                       "flwr.clientapp.utils")
    sys.argv[0] = "flwr-clientapp"  # Flower tells its processes apart by this name
    flwr_clientapp()


if __name__ == "__main__":
    main()
