"""The shared floor every clinibox application stands on: the contracts between them (signing,
manifest, envelope, egress, downlink, enrolment, heads, statuses, reasons), the words and their
translations (``i18n``), errors, settings loading, and the file and child-process helpers. It
imports nothing of the project."""
