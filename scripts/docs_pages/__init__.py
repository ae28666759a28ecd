"""The documentation site's generated pages, one module a subject (the mkdocs hook
``scripts/docs_reference.py`` puts them together): ``markdown`` (tables, code, docstrings as
Markdown, the links of the repository's files), ``code_docs`` (what the code says about its
names: ``#:`` comments, group comments, bullet lists), ``settings_page``, ``cli_page``,
``schema_pages`` (the egress schema and envelope, the manifest) and ``word_pages`` (statuses,
reason, refusal and event codes, the DICOM outputs)."""
