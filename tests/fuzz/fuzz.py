"""Coverage-guided fuzzing (atheris / libFuzzer) of one target from ``targets.py``.

    python -m tests.fuzz.fuzz TARGET [libFuzzer options…] [CORPUS_DIR…]

e.g. ``python -m tests.fuzz.fuzz decode -max_total_time=600 tests/fuzz/corpus/decode``
(``make fuzz`` runs every target). An input that raises is a bug: libFuzzer
writes it as ``crash-*``; replay it with ``tests/fuzz/test_fuzz.py`` by adding
it to ``tests/fuzz/regressions/<target>/``.
"""

from __future__ import annotations

import logging
import sys

import atheris

#: what the inputs travel through: the project (the hospital's receiver too), the DICOM
#: parser and the image libraries it calls. Instrumenting every import (numpy, requests,
#: babel …) took 30 of a run's first seconds on a 2-core AVX2 EPYC and gave libFuzzer
#: only noise; pydicom's generated dictionaries are data, never branches an input reaches.
INSTRUMENTED = ["firmware_app", "central", "pydicom", "PIL", "rle", "tests"]
NOT_INSTRUMENTED = ["pydicom._dicom_dict", "pydicom._private_dict", "pydicom._uid_dict"]

with atheris.instrument_imports(include=INSTRUMENTED, exclude=NOT_INSTRUMENTED):
    from tests.fuzz.targets import TARGETS


def main() -> None:
    """Run libFuzzer on the target named first on the command line."""
    target = TARGETS[sys.argv[1]]
    # the receiver logs each refusal; millions of them would only slow the fuzzer down
    logging.getLogger("clinibox.central").setLevel(logging.ERROR)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
