"""Sensors: new uploads, output requests and approvals become runs."""
