"""Shared cost-model pieces: operation counts, liveness memory plans, roofline, trace export."""
