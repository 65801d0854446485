"""Random inputs: bools are drawn, not all True (a torch padding mask all True masked every position
and every output of a compare was NaN), and hal run --save writes string outputs that load back."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.feeds import random_bools, random_feeds
from hal.graph.load import load


def _padding_masked_attention() -> bytes:
    """Self-attention over x [b, s, 4] with torch's key_padding_mask [b, s] (True: ignore that key),
    as torch exports it: the mask becomes -inf in the scores, and a row all masked is NaN."""
    nodes = [helper.make_node("Unsqueeze", ["mask", "axis1"], ["m3"]),
             helper.make_node("Where", ["m3", "neg_inf", "zero"], ["bias"]),
             helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["x", "xt"], ["scores"]),
             helper.make_node("Add", ["scores", "bias"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "x"], ["y"])]
    g = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", 4]),
                                          helper.make_tensor_value_info("mask", TensorProto.BOOL, ["b", "s"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", 4])],
                          [numpy_helper.from_array(np.array([1], np.int64), "axis1"),
                           numpy_helper.from_array(np.array(-np.inf, np.float32), "neg_inf"),
                           numpy_helper.from_array(np.array(0, np.float32), "zero")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_compare_with_a_random_padding_mask_is_not_all_nan():
    rep = hal.compare(_padding_masked_attention(), "cpu", dims={"b": 2, "s": 7})
    mask = rep._feeds["mask"]
    assert mask.any(axis=-1).all() and (~mask).any(axis=-1).all()
    y = hal.InferenceSession(_padding_masked_attention()).run(None, rep._feeds)[0]
    assert np.isfinite(y).all()  # all True, every key of every row was masked: all NaN
    (cpu,) = rep.results
    assert rep.warnings == [] and cpu.outputs[0].within_tolerance


@pytest.mark.parametrize("shape", [(2, 7), (3, 2), (4, 1, 5), (50, 2), (1, 1, 3, 3)])
def test_random_bools_mix_both_values_in_every_row_and_follow_the_seed(shape):
    a = random_bools(np.random.default_rng(0), shape)
    assert a.shape == shape and a.dtype == bool
    rows = a.reshape(-1, shape[-1])
    assert rows.any(axis=1).all() and (~rows).any(axis=1).all()
    assert np.array_equal(a, random_bools(np.random.default_rng(0), shape))


def test_random_bools_are_an_even_mix_and_a_single_value_is_a_plain_flip():
    big = random_bools(np.random.default_rng(1), (1000, 16))
    assert 0.45 < big.mean() < 0.55
    singles = [random_bools(np.random.default_rng(s), shape) for s in range(40) for shape in ((), (1,), (3, 1))]
    assert all(x.dtype == bool for x in singles)
    flat = np.concatenate([x.reshape(-1) for x in singles])
    assert flat.any() and not flat.all()  # scalars and rows of one: either value, as the seed draws
    assert random_bools(np.random.default_rng(0), (0, 5)).shape == (0, 5)


def test_a_bool_input_leaves_the_other_inputs_as_they_were_drawn():
    # bools draw from a stream of their own: adding a mask input does not change the floats beside it
    g = load(_padding_masked_attention())
    with_mask = random_feeds(g, seed=3, dims={"b": 2, "s": 5})
    rng = np.random.default_rng(3)
    assert np.array_equal(with_mask["x"], rng.standard_normal((2, 5, 4)).astype(np.float32))
    assert not np.array_equal(random_feeds(g, seed=4, dims={"b": 2, "s": 5})["mask"], with_mask["mask"])


def _strings(inp: str, out: str) -> bytes:
    g = helper.make_graph([helper.make_node("Identity", [inp], [out])], "g",
                          [helper.make_tensor_value_info(inp, TensorProto.STRING, [3])],
                          [helper.make_tensor_value_info(out, TensorProto.STRING, [3])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_hal_run_saves_string_outputs_that_np_load_and_hal_inputs_read_without_pickle(tmp_path, capsys):
    # they were pickled object arrays: np.load refused them, and so did hal's own --inputs
    from hal.cli import main

    (tmp_path / "a.onnx").write_bytes(_strings("x", "y"))
    (tmp_path / "b.onnx").write_bytes(_strings("y", "z"))
    np.save(tmp_path / "x.npy", np.array(["cat", "", "eel ü"]))
    out, again = tmp_path / "out.npz", tmp_path / "again.npz"
    assert main(["run", str(tmp_path / "a.onnx"), "--input", f"x={tmp_path / 'x.npy'}", "--save", str(out)]) == 0
    with np.load(out) as saved:
        assert saved["y"].dtype.kind == "U" and saved["y"].tolist() == ["cat", "", "eel ü"]
    assert main(["run", str(tmp_path / "b.onnx"), "--inputs", str(out), "--save", str(again)]) == 0, \
        capsys.readouterr().err
    with np.load(again) as saved:
        assert saved["z"].tolist() == ["cat", "", "eel ü"]


def test_hal_run_save_of_objects_that_are_not_text_is_an_error_that_writes_nothing(tmp_path, monkeypatch, capsys):
    from hal.cli import main
    from hal.session import InferenceSession

    (tmp_path / "a.onnx").write_bytes(_strings("x", "y"))
    np.save(tmp_path / "x.npy", np.array(["a", "b", "c"]))
    out = tmp_path / "out.npz"
    out.write_bytes(b"previous")
    monkeypatch.setattr(InferenceSession, "run", lambda self, names, feeds: [np.array(["a", b"b", None], object)])
    assert main(["run", str(tmp_path / "a.onnx"), "--input", f"x={tmp_path / 'x.npy'}", "--save", str(out)]) == 2
    assert "output 'y' holds bytes values, not only text" in capsys.readouterr().err
    assert out.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == [
        "a.onnx", "out.npz", "x.npy"]
    from hal.files import npz_bytes

    with pytest.raises(hal.InputError, match=r"--save o.npz: output 'y' holds int values, not only text") as e:
        npz_bytes({"y": np.array(["a", 1], dtype=object)}, where="--save o.npz")
    assert "InferenceSession.run" in e.value.hint
