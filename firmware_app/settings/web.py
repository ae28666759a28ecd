"""The ``[web]`` section: the clinic viewer."""

from __future__ import annotations

from dataclasses import dataclass

from clinibox_common.settings_loader import in_range, one_of, setting


@dataclass
class WebConfig:
    """The clinic viewer: a Flask app served over HTTPS by gunicorn (``clinibox web``)."""

    enabled: bool = setting(doc="start the viewer with clinibox serve (clinibox serve --no-web "
                                "leaves it to its own service)", default=True)
    host: str = setting(doc="address the viewer listens on", default="0.0.0.0")
    port: int = setting(in_range(1, 65535), "viewer HTTPS port", 8080)
    tls_cert: str = setting(doc="certificate (PEM) the viewer presents; empty means a self-signed "
                                "one made on first start under <state_dir>/keys", default="")
    tls_key: str = setting(doc="private key (PEM) of tls_cert", default="")
    threads: int = setting(in_range(1, 64), "requests served at once (each open live page "
                           "holds one while it waits for the next frame)", 8)
    session_idle_minutes: float = setting(in_range(1, 1440), "a session ends after this long idle",
                                          30.0)
    session_max_hours: float = setting(in_range(0.1, 168), "a session ends this long after login",
                                       12.0)
    login_free_failures: int = setting(
        in_range(1, 100), "failed logins for one account from one address before each further "
                        "try waits (2, 4, 8 … s)", 5)
    login_free_failures_per_address: int = setting(
        in_range(1, 1000), "failed logins from one address, all accounts, before its tries wait",
        20)
    login_max_delay_seconds: float = setting(in_range(1, 86400),
                                             "longest wait between login tries", 900.0)
    refresh_seconds: float = setting(in_range(1, 3600), "how often open worklists update", 5.0)
    page_size: int = setting(in_range(10, 1000), "worklist rows per page", 50)
    language: str = setting(
        one_of("", "en", "zh_CN"), 'viewer language: "" follows the browser (Accept-Language, '
        'then English), "zh_CN" or "en" every browser; each user may switch in the page header '
        "(the clinibox commands follow LC_ALL/LANG, then this)", "")
