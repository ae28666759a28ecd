"""A Flower ``Grid`` whose every wait for the boxes' answers ends (decision 0056).

Flower's default round stages (``DefaultWorkflow``'s evaluation, its parameters' start) wait
for every sampled box's answer without a limit: one box that keeps its connection and never
answers would hold the round for the others until Flower's message lifetime (12 hours) runs
out. This grid gives every such wait the ServerApp's stage timeout; a box that answers
later is left out as dropped, and the round goes on with the others.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run


class TimedGrid(Grid):
    """``grid`` with ``timeout`` seconds for each wait that names none."""

    def __init__(self, grid: Grid, timeout: float) -> None:
        self.grid = grid
        self.timeout = timeout

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return self.grid.send_and_receive(
            messages, timeout=self.timeout if timeout is None else timeout)
