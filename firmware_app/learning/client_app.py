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
low priority (the analysis's own: ``service/priority.py``); the box's images come first.

Outermost of all, ``guard_mod`` (``guard_mod.py``) refuses instructions that would expose
this box's head. A failure leaves the box as a fixed code only (Flower sends an error's text
to the hospital): the case file's path, which may name the clinic, stays in the box's log.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from flwr.client import NumPyClient
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Context

from clinibox_common.contracts.federated import training_in_bounds
from clinibox_common.errors import CliniboxError
from engine.learning.cam_head import DEFAULT_SHARPNESS, CamHead, TrainingSettings, fine_tune
from firmware_app.learning.cases import CaseFileError, LabelledCases, read_cases
from firmware_app.learning.guard_mod import guard_mod
from firmware_app.service.priority import lower_this_thread

log = logging.getLogger(__name__)


class TrainingFailed(CliniboxError, RuntimeError):
    """This box could not train; its message is a code, all the hospital learns."""


class HeadClient(NumPyClient):
    """Trains the round's head on one box's labelled cases."""

    def __init__(self, cases_path: Path, settings: TrainingSettings, sharpness: float) -> None:
        self.cases_path, self.settings, self.sharpness = cases_path, settings, sharpness

    def _head_and_cases(self, parameters: list[np.ndarray]) -> tuple[CamHead, LabelledCases]:
        vector = np.asarray(parameters[0], np.float64).reshape(-1)
        head = CamHead(vector[:-1], float(vector[-1]), self.sharpness)
        try:
            cases = read_cases(self.cases_path, head.channels)
        except CaseFileError as exc:
            log.error("federated round: %s", exc)
            raise TrainingFailed("case_file_unreadable") from None
        if len(cases) == 0:
            raise TrainingFailed("no_labelled_cases")
        return head, cases

    def evaluate(self, parameters: list[np.ndarray], config: dict) -> tuple[float, int, dict]:
        """How many labelled cases this box holds, and nothing else (the round's record
        counts them). No loss: the ServerApp chooses the head an evaluation carries, so a
        loss in clear would let it probe this box's labels around secure aggregation."""
        _head, cases = self._head_and_cases(parameters)
        return 0.0, len(cases), {}

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list, int, dict]:
        """The round's head [C + 1] in, this box's fine-tuned head out (weight 1)."""
        head, cases = self._head_and_cases(parameters)
        trained = fine_tune(head, cases.maps, cases.labels, self.settings, anchor=head)
        if not np.isfinite(trained.as_vector()).all():
            raise TrainingFailed("training_diverged")
        return [trained.as_vector().astype(np.float32)], 1, {}


def client_fn(context: Context) -> object:
    """The client of one message: the cases' path from the SuperNode's configuration, the
    training settings from the run's."""
    lower_this_thread("clinibox-learning")
    run = context.run_config
    default = TrainingSettings()
    try:
        steps = run.get("local-steps", default.steps)
        if isinstance(steps, float) and not steps.is_integer():
            raise ValueError("a number of steps is whole")
        settings = TrainingSettings(steps=int(steps),
                                    learning_rate=float(run.get("learning-rate",
                                                                default.learning_rate)),
                                    proximal=float(run.get("proximal", default.proximal)))
        sharpness = float(run.get("sharpness", DEFAULT_SHARPNESS))
    except (TypeError, ValueError, OverflowError):
        raise TrainingFailed("training_settings_out_of_range") from None
    # the hospital's ServerApp could ask for any: the box trains only within the bounds
    if not training_in_bounds(settings.steps, settings.learning_rate, settings.proximal,
                              sharpness):
        raise TrainingFailed("training_settings_out_of_range")
    cases = Path(str(context.node_config["cases"]))
    return HeadClient(cases, settings, sharpness).to_client()


app = ClientApp(client_fn=client_fn, mods=[guard_mod, secaggplus_mod, fixedclipping_mod])
