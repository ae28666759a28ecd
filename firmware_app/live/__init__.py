"""Bedside live mode: a live source's video read, analysed frame by frame, shown, and kept
in a session (``docs/clinic/live.md``; decision 0042)."""
