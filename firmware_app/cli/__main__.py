"""``python -m firmware_app.cli``: the same as the ``clinibox`` command."""

import sys

from firmware_app.cli.table import main

sys.exit(main())
