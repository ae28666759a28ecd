"""A session keeper on a fresh box's state folder, its clock in the test's hands (the keeper
tests of tests/unit/firmware_app/test_live_engine.py and test_live_attacks.py)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from firmware_app.ingest.landing import Lander
from firmware_app.live.keeper import Keeper
from firmware_app.settings.box import Config, from_dict
from firmware_app.storage import db, live_sessions
from firmware_app.storage.live_sessions import LiveSession
from firmware_app.storage.spool import make_spool


@dataclass
class KeeperBox:
    """A keeper of source us-1 with a session open, and the clock it reads."""

    config: Config
    session: LiveSession
    keeper: Keeper
    clock: list[float]

    @contextlib.contextmanager
    def database(self) -> Iterator[sqlite3.Connection]:
        """A connection to the box's database, closed after."""
        with contextlib.closing(db.connect(self.config.database_path)) as conn:
            yield conn


def keeper_box(root: Path, wrap: Callable[[Lander], Lander] = lambda lander: lander
               ) -> KeeperBox:
    """A box's state under ``root`` with a session open on us-1 and its keeper (landing
    through ``wrap(lander)``)."""
    config = from_dict({"storage": {"state_dir": str(root / "state")},
                        "live": {"sources": [{"name": "us-1", "url": "/dev/video0"}]}})
    db.private_state_dir(config.state_dir)
    with contextlib.closing(db.connect(config.database_path)) as conn:
        db.initialise(conn)
        session = live_sessions.start(conn, source="us-1", started_by="nurse")
    clock = [0.0]
    lander = wrap(Lander(make_spool(config), config.database_path, 2**30))
    keeper = Keeper(config.live.sources[0], config.live, config.database_path, lander,
                    station="box-1", now=lambda: clock[0])
    return KeeperBox(config, session, keeper, clock)
