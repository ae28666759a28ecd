"""Procedurally generated phantoms: CT-like and ultrasound-like images with known lesions.

A small numpy + pydicom package shared by the tests, the benchmarks and the demo model's
training (``demo/``); nothing in it is a real patient. ``images`` draws the phantoms and
their ground truth, ``dicom`` writes them as DICOM files the box reads as a modality's,
``series`` writes CT volumes slice by slice. ``python -m phantoms --help`` writes files.
"""
