"""The reference ``cpu`` target: exact execution on the host, the oracle every target is compared with."""
