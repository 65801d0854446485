"""ONNX in: safe loading, checking, shape inference, the IR and graph passes."""
