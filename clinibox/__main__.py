"""``python -m clinibox``: the same as the ``clinibox`` command."""

import sys

from clinibox.table import main

if __name__ == "__main__":  # not when a spawned child process imports the main module
    sys.exit(main())
