"""hal_specs: the spec data shipped with hal (target sheets, conformance profiles, JSON schemas)."""
