"""The web foundations the box's viewer (``web``) and the hospital's console share.

Password rules, the failed-login throttle's arithmetic, server-side session rules, the
security headers, cookie flags and CSRF, the session check, the error pages, the per-request
language and its switch, the shared page parts (Jinja macros in ``templates/webcore/``), the
TLS certificate and the gunicorn server: one copy, imported by both apps
(docs/development/web-foundations.md). Its modules import nothing of either app and no
database: each app keeps its own store and hands webcore plain values or callables.
Nothing is imported here, so ``webcore.passwords`` does not pull in Flask.
"""
