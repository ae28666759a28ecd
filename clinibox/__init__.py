"""``clinibox``: the one command, the top floor. A table of commands, each imported only when it
runs: the box's (``firmware_app/cli``), the clinic viewer's (``web``), the hospital's
(``central``) and the workstation converter's (``converters``). Nothing imports this package.
"""
