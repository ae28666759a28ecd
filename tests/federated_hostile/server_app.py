"""A ServerApp a hospital changed to weaken secure aggregation: two of four boxes may rebuild
a third's mask (threshold 2). The boxes' guard (``firmware_app/learning/guard_mod.py``) must
refuse it at the setup stage, so no box's head is ever masked for it."""

from __future__ import annotations

import numpy as np
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """One round with a threshold of 2 among 4 boxes."""
    boxes = int(context.run_config["boxes"])
    initial = np.load(str(context.run_config["initial-head"]), allow_pickle=False)
    average = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=boxes,
                     min_available_clients=boxes,
                     initial_parameters=ndarrays_to_parameters([initial.astype(np.float32)]))
    strategy = DifferentialPrivacyClientSideFixedClipping(average, 0.0, 1.0, boxes)
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=1),
                           strategy=strategy)
    DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
        num_shares=boxes, reconstruction_threshold=2, clipping_range=64.0,
        max_weight=1))(grid, legacy)
