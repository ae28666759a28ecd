"""The running appliance: its wiring, the worker, the viewer process, systemd notify."""
