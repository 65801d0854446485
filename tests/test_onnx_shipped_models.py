"""The small models onnx ships with their inputs and expected outputs, beside its node cases and light
zoo: ``pytorch-converted`` (PyTorch's nn modules, exported at opset 6 and later), ``pytorch-operator``
and ``simple`` (sequences, string normalisation, control flow). Every target runs each one and matches
the expected outputs as onnx's backend runner compares them (rtol 1e-3, atol 1e-7). The exceptions,
asserted: Gradient (``ai.onnx.preview.training``), which no target runs, and the LPU's refusal of
sequences, whose element count it cannot lay out before the run. (Before opset 7, PRelu's slope of
one value per channel applied along axis 1: the 3 ``PReLU_*_multiparam`` models showed it.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import hal

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
MODELS = sorted(p for kind in ("pytorch-converted", "pytorch-operator", "simple") for p in (DATA / kind).iterdir()
                if (p / "model.onnx").is_file())
TARGETS = ["cpu", "gpu", "lpu", "wafer"]
#: models whose graphs hold sequences through to an output or a sequence op the LPU cannot lay out
#: (test_sequence_model7's SplitToSequence, read only at a constant position, becomes a Split: it runs)
LPU_SEQUENCES = {f"test_sequence_model{i}" for i in (1, 2, 3, 4, 5, 6, 8)}


def _read(path: Path) -> np.ndarray:
    t = onnx.TensorProto()
    t.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(t)


def test_the_shipped_models_are_found() -> None:
    assert len(MODELS) >= 130, len(MODELS)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("folder", MODELS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_shipped_model_gives_its_expected_outputs(folder: Path, target: str) -> None:
    model = onnx.load(str(folder / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    names = [i.name for i in model.graph.input]
    if "Gradient" in ops:
        with pytest.raises(hal.UnsupportedOpError, match="no kernel for Gradient"):
            hal.InferenceSession(model, target=target)
        return
    if target == "lpu" and folder.name in LPU_SEQUENCES:
        with pytest.raises(hal.UnsupportedOpError, match="no shape known at compile time"):
            hal.InferenceSession(model, target=target)
        return
    session = hal.InferenceSession(model, target=target)
    for data in sorted(folder.glob("test_data_set_*")):
        feeds = dict(zip(names, (_read(p) for p in sorted(data.glob("input_*.pb")))))
        want = [_read(p) for p in sorted(data.glob("output_*.pb"))]
        got = session.run(None, feeds)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            if w.dtype == object:  # strings, stored as bytes
                assert np.shape(g) == w.shape and [str(s) for s in np.ravel(g)] == [
                    s.decode() if isinstance(s, bytes) else str(s) for s in w.ravel()]
            else:
                np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-7)
