"""The hospital's console: ``clinibox central web`` (alerts, verdicts, fleet, drift, audit)."""
