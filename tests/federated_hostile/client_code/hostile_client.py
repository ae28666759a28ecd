"""Code a bundle carries to the boxes: were it ever imported on a box, it would leave a mark
next to Flower's home (the test looks for it) and read the box's database."""

import os
from pathlib import Path

from flwr.clientapp import ClientApp

Path(os.environ.get("FLWR_HOME", "."), "hostile-code-ran").write_text("ran")

app = ClientApp()
