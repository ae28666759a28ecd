"""The hospital-side receiver: decrypt, verify, de-duplicate, store and summarise.

``central.receiver`` takes envelopes from the MQTT broker, ``central.store``
keeps them (SQLite or PostgreSQL), ``central.report`` and ``central.drift``
turn them into a per-device health table, and ``central.cli`` is the
``clinibox central`` command line.
"""
