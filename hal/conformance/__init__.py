"""Conformance: onnx's node tests, the light model zoo and API contract tests, on any target."""
