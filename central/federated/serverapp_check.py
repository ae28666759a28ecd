"""The hospital's check of the Flower App Bundle a run sends, before its SuperLink's ServerApp
process installs it (decision 0056).

Flower's SuperLink runs each run's ServerApp in a ``flwr-serverapp`` process, which installs
the run's bundle, puts its folder on the import path and loads the ServerApp the bundle names.
Anyone who can reach the SuperLink's port can start a run (open-source Flower's Control API
has no login), so unchecked, a bundle with code of its own would run that code on the
hospital's server with the SuperLink's rights. ``clinibox central superlink`` starts the
SuperLink with this module first on its path as ``flwr-serverapp``
(:func:`install_wrapper`): it refuses any bundle but clinibox's own (``pyproject.toml`` and
Flower's manifest only, naming :data:`SERVER_APP`), with a code, before a file of it is
written; then runs Flower's own ``flwr-serverapp``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from clinibox_common.contracts import flower_bundle
from clinibox_common.contracts.flower_bundle import SERVER_APP


def check_bundle(content: bytes) -> None:
    """Refuse (``BundleRefused``) a bundle that carries code or names another ServerApp."""
    flower_bundle.check_bundle(content, "serverapp", SERVER_APP)


def install_wrapper(folder: Path) -> Path:
    """Write ``folder``/``flwr-serverapp`` (the check, then Flower's ServerApp process) and
    return ``folder``: put it first on the SuperLink's ``PATH``."""
    return flower_bundle.write_wrapper(folder, "flwr-serverapp",
                                       "central.federated.serverapp_check")


def main() -> None:
    """``flwr-serverapp`` with :func:`check_bundle` before Flower installs the bundle."""
    from flwr.superlink.cli.flwr_serverapp import flwr_serverapp

    flower_bundle.check_before_install("flwr.superlink.runtime.run_serverapp", check_bundle)
    sys.argv[0] = "flwr-serverapp"  # Flower tells its processes apart by this name
    flwr_serverapp()


if __name__ == "__main__":
    main()
