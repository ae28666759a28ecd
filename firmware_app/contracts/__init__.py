"""Formats shared with the workstation and the hospital.

Signing, enrolment bundles, the telemetry envelope, the egress schema (what may
leave the box) and the MQTT topics. Nothing here imports the rest of the box.
"""
