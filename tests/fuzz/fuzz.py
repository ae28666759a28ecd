"""Coverage-guided fuzzing (atheris / libFuzzer) of one target from ``targets.py``.

    python -m tests.fuzz.fuzz TARGET [libFuzzer options…] [CORPUS_DIR…]

e.g. ``python -m tests.fuzz.fuzz decode -max_total_time=600 tests/fuzz/corpus/decode``
(``make fuzz`` runs every target). An input that raises is a bug: libFuzzer
writes it as ``crash-*``; replay it with ``tests/fuzz/test_fuzz.py`` by adding
it to ``tests/fuzz/regressions/<target>/``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from tests.fuzz.targets import TARGETS


def main() -> None:
    """Run libFuzzer on the target named first on the command line."""
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
