"""Model packages on the box.

Load and verify (``package``), the one answer to "which package runs" (``store``),
install and roll back (``install``), trial (``trial``) and golden cases (``golden``).
"""
