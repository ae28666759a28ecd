"""The box's Flower ClientApp: fine-tune the head on the box's own labelled cases and send
back only the head (decision 0056).

Flower's SuperNode (``flower-supernode``, run by the box next to its service) starts this
app for each message of a round. The round's global head arrives; the app trains it on the
cases of the file the SuperNode's ``--node-config 'cases="…"'`` names
(:mod:`firmware_app.learning.cases`), pulled towards the global head (FedProx), and returns
the trained head. Two of Flower's mods wrap it, outermost first:

- ``secaggplus_mod``: the head leaves the box masked (SecAgg+); the hospital can add the
  boxes' heads up but never read one;
- ``fixedclipping_mod``: the change from the global head is clipped to the round's norm
  before masking, so the noise the hospital adds to the sum bounds what any one box can
  reveal (client-level differential privacy, accounted in the round's record).

Each box counts once in the average (``num_examples`` is 1): the hospital's noise is sized
for one box's clipped update, and no clinic outweighs the others. The training runs at a
low priority (nice 10); the box's images come first.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from flwr.client import NumPyClient
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Context

from engine.learning.cam_head import DEFAULT_SHARPNESS, CamHead, TrainingSettings, fine_tune
from firmware_app.learning.cases import read_cases

#: nice(2) increment of a training process: below the box's service and receiver
TRAINING_NICENESS = 10


class HeadClient(NumPyClient):
    """Trains the round's head on one box's labelled cases."""

    def __init__(self, cases_path: Path, settings: TrainingSettings, sharpness: float) -> None:
        self.cases_path, self.settings, self.sharpness = cases_path, settings, sharpness

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list, int, dict]:
        """The round's head [C + 1] in, this box's fine-tuned head out (weight 1)."""
        vector = np.asarray(parameters[0], np.float64).reshape(-1)
        head = CamHead(vector[:-1], float(vector[-1]), self.sharpness)
        cases = read_cases(self.cases_path, head.channels)
        trained = fine_tune(head, cases.maps, cases.labels, self.settings, anchor=head)
        return [trained.as_vector().astype(np.float32)], 1, {}


def _lower_priority() -> None:
    """Run below the box's own work."""
    with contextlib.suppress(OSError):
        os.nice(TRAINING_NICENESS)


def client_fn(context: Context) -> object:
    """The client of one message: the cases' path from the SuperNode's configuration, the
    training settings from the run's."""
    _lower_priority()
    run = context.run_config
    default = TrainingSettings()
    settings = TrainingSettings(steps=int(run.get("local-steps", default.steps)),
                                learning_rate=float(run.get("learning-rate",
                                                            default.learning_rate)),
                                proximal=float(run.get("proximal", default.proximal)))
    cases = Path(str(context.node_config["cases"]))
    return HeadClient(cases, settings, float(run.get("sharpness", DEFAULT_SHARPNESS))).to_client()


app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod, fixedclipping_mod])
