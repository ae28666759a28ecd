"""Command-line entry point (placeholder while bootstrapping)."""


def main() -> int:
    """Run the clinibox command line."""
    return 0
