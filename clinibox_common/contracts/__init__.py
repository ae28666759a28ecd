"""Formats shared with the workstation and the hospital.

Signing, enrolment bundles, the telemetry envelope, the egress schema (what may
leave the box), the MQTT topics and the box's words for its states and kinds
(``statuses.py``). Nothing here imports the rest of the box.
"""
