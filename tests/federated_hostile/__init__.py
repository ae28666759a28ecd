"""A hospital's changed ServerApp, for the boxes' guard to refuse (tests only)."""
