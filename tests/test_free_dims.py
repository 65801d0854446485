"""Open input dimensions: bound by name (``dims=``, ``--dim``) the compile and its figures take that
size; left open, the report says they were priced as 1 and a run at another size claims no modelled
latency; a target that prices each run (the LPU's specialisation) reports that run's figures."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.cli import main


def _model():
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"], name="mm"), helper.make_node("Relu", ["a"], ["y"])]
    graph = helper.make_graph(nodes, "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 512])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("target", ["gpu", "wafer"])
def test_bound_dims_are_what_the_report_prices(target):
    model = _model()
    x = np.ones((4096, 512), np.float32)
    bound = hal.InferenceSession(model, target=target, dims={"batch": 4096})
    assert bound.get_inputs()[0].shape == [4096, 512]
    assert bound.report.latency_s > 1.2 * hal.InferenceSession(model, target=target, dims={"batch": 1}).report.latency_s
    bound.run(None, {"x": x})
    assert bound.last_run.modelled_latency_s == bound.report.latency_s
    assert "open_dims_priced_as_1" not in bound.report.details
    with pytest.raises(hal.InputError):  # bound means fixed: another size is not this session's input
        bound.run(None, {"x": x[:3]})
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # the caller's proto as it was


@pytest.mark.parametrize("target", ["gpu", "wafer"])
def test_open_dims_priced_as_1_say_so_and_claim_no_latency_for_another_size(target):
    sess = hal.InferenceSession(_model(), target=target)
    assert sess.report.details["open_dims_priced_as_1"] == ["x[0] (batch)"]
    sess.run(None, {"x": np.ones((1, 512), np.float32)})
    assert sess.last_run.modelled_latency_s == sess.report.latency_s
    sess.run(None, {"x": np.ones((4096, 512), np.float32)})
    assert sess.last_run.modelled_latency_s is None  # was the batch-1 figure


def test_the_lpu_reports_the_figures_of_the_run_it_specialised_for():
    sess = hal.InferenceSession(_model(), target="lpu")
    assert sess.report.latency_s is None  # nothing priced before a run fixes the shapes
    sess.run(None, {"x": np.ones((4096, 512), np.float32)})
    big = sess.last_run.modelled_latency_s
    assert big is not None and sess.report.latency_s == big
    sess.run(None, {"x": np.ones((1, 512), np.float32)})
    assert sess.last_run.modelled_latency_s < big == hal.InferenceSession(_model(), target="lpu",
                                                                          dims={"batch": 4096}).report.latency_s


def test_a_dim_the_model_does_not_have_lists_the_open_ones():
    with pytest.raises(hal.InputError) as ei:
        hal.InferenceSession(_model(), target="gpu", dims={"seq": 4})
    assert "no input has a dimension named 'seq'" in str(ei.value) and "batch (x[0])" in ei.value.hint
    with pytest.raises(hal.InputError):
        hal.compile(_model(), target="gpu", dims={"batch": -1})


def test_estimate_takes_dims_and_refuses_llm_knobs_for_other_models(tmp_path):
    one = hal.estimate(_model(), "gpu", precision="exact").estimates[0]
    many = hal.estimate(_model(), "gpu", precision="exact", dims={"batch": 4096}).estimates[0]
    assert many.latency_s > 1.2 * one.latency_s
    with pytest.raises(hal.InputError) as ei:
        hal.estimate(_model(), "gpu", batch=8)  # was silently the batch-1 figure
    assert "dims={'batch': 8}" in ei.value.hint
    path = tmp_path / "dyn.onnx"
    import onnx

    onnx.save(_model(), path)
    assert main(["estimate", str(path), "-t", "gpu", "--precision", "exact", "--batch", "8"]) == 2
    assert main(["estimate", str(path), "-t", "gpu", "--precision", "exact", "--dim", "batch=8"]) == 0


def test_hal_run_says_when_its_figures_are_not_for_the_sizes_it_ran(tmp_path, capsys):
    import onnx

    path = tmp_path / "dyn.onnx"
    onnx.save(_model(), path)
    x = tmp_path / "x.npz"
    np.savez(x, x=np.ones((8, 512), np.float32))
    assert main(["run", str(path), "-t", "gpu", "--inputs", str(x)]) == 0
    assert "price x[0] (batch) as 1, and this run fed another size" in capsys.readouterr().out
    assert main(["run", str(path), "-t", "gpu", "--dim", "batch=8", "--inputs", str(x)]) == 0
    assert "as 1" not in capsys.readouterr().out


def test_compare_binds_dims_in_every_session_and_sizes_the_random_inputs_by_them():
    one = hal.compare(_model(), "gpu")
    many = hal.compare(_model(), "gpu", dims={"batch": 4096})
    assert many.inputs == {"x": [4096, 512]} and one.inputs == {"x": [1, 512]}
    gpu = [next(r for r in rep.results if r.target == "gpu") for rep in (one, many)]
    assert gpu[1].status == "ok" and gpu[1].latency_s > 1.2 * gpu[0].latency_s
