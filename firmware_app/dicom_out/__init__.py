"""DICOM results for the clinic's PACS.

SR, SEG and key image (highdicom), the DICOM outbox's sender, de-identified export.
"""
