"""The lpu target plugin."""
