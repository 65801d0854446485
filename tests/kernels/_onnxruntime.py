"""onnxruntime as the contrib-op tests' reference: a model run as written (graph optimisations off,
so each node is its own kernel, not one of onnxruntime's fusions), and a calibration reader for its
static quantizer."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnxruntime as ort


def run_as_written(blob: bytes | str, feeds: dict[str, np.ndarray], threads: int = 0) -> list[np.ndarray]:
    """onnxruntime's outputs for ``feeds``, its graph optimisations off (``threads``: its intra-op
    threads, 0 for its default)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"]).run(None, feeds)


def calibration_reader(batches: Iterable[dict[str, np.ndarray]]):
    """``batches`` as the CalibrationDataReader onnxruntime's quantize_static reads."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    return _Batches()
