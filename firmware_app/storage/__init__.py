"""The box's database and spool: every SQL statement on the box's database lives here."""
