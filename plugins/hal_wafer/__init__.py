"""The wafer target plugin."""
