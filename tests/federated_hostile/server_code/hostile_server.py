"""Code a stranger's bundle carries to the hospital's SuperLink: were it ever imported there, it
would leave a mark next to Flower's home (the test looks for it), with the SuperLink's rights."""

import os
from pathlib import Path

from flwr.serverapp import ServerApp

Path(os.environ.get("FLWR_HOME", "."), "hostile-server-code-ran").write_text("ran")

app = ServerApp()
