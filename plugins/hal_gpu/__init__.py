"""The gpu target plugin."""
