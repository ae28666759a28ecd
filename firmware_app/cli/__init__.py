"""The box's own commands, each module registering its own (``add_parsers``); the table of every
``clinibox`` command is ``clinibox/table.py``, on the floor above."""
