"""Technician operations: the self-test and offline provisioning."""
