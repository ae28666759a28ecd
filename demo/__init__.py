"""The demo model: an example application of the converter toolchain, trained on phantoms.

``python -m demo.train`` (``make demo-model``) trains a detector on procedurally generated
phantoms (``phantoms/``), distils, prunes and quantizes it with ``converters`` and writes the
signed DEMONSTRATION ONLY package the box runs out of the box. It is not for clinical use.
The converter toolchain never imports this package (an import contract in pyproject.toml).
"""
