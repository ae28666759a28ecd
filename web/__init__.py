"""The clinic viewer: a Flask app on the clinic LAN (worklist, study view, report, device)."""
