"""How long a run waits for its boxes to connect (decision 0056).

Each round starts when ``boxes`` boxes are connected (FedAvg samples exactly that many).
Flower's client manager waits for them up to 24 hours, saying nothing: a run whose boxes
never join (a box's ``[learning]`` switched off, outside its hours, or its learning service
stopped) would hold the hospital's ``federated-run`` until its own timeout, with no reason
given. :class:`BoundedBoxWait` waits ``boxes-wait`` seconds instead and then ends the run
with a code (``too_few_boxes_connected``) and the counts, which ``federated-run`` says in
the reader's words.
"""

from __future__ import annotations

from flwr.server.client_manager import SimpleClientManager

from clinibox_common.contracts.federated import MAX_BOXES_WAIT_S
from clinibox_common.errors import CliniboxError


class TooFewBoxes(CliniboxError, RuntimeError):
    """Fewer boxes than a round needs connected within the run's wait; the run ends without
    a head."""


class BoundedBoxWait(SimpleClientManager):
    """Flower's client manager, its wait for the boxes bounded by ``wait_s`` seconds; an
    unanswered wait raises :class:`TooFewBoxes`."""

    def __init__(self, wait_s: float) -> None:
        super().__init__()
        self.wait_s = wait_s

    def wait_for(self, num_clients: int, timeout: int = int(MAX_BOXES_WAIT_S)) -> bool:
        """True once ``num_clients`` boxes are connected; TooFewBoxes when they are not
        within the run's wait."""
        if super().wait_for(num_clients, timeout=min(timeout, self.wait_s)):
            return True
        raise TooFewBoxes(f"too_few_boxes_connected: {self.num_available()} of the "
                          f"{num_clients} boxes a round needs were connected within "
                          f"{self.wait_s:g} s; the run ends without a head")
