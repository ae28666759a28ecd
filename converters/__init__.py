"""Workstation toolchain: phantom data, demo model training, conversion and packaging."""
