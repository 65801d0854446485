"""Feeds from files and random feeds: errors that name what was given and what to do.

random_feeds' size refusal names the input's own dtype and size (it said float64 for a float32 input);
load_inputs says what an .npz passed to --input holds, and refuses an input given twice."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import hal
from hal.cli_args import load_inputs
from hal.feeds import random_feeds
from hal.graph.load import load


def _graph(dtype: int = TensorProto.FLOAT):
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", dtype, ["batch", 3])],
                          [helper.make_tensor_value_info("y", dtype, ["batch", 3])])
    return load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString())


def test_random_feed_too_big_names_the_inputs_own_dtype_and_size():
    with pytest.raises(hal.ResourceError) as e:
        random_feeds(_graph(), dims={"batch": 99999999999})
    msg = str(e.value)
    assert "random input 'x' float32[99999999999, 3]" in msg and "float64" not in msg
    assert f"({99999999999 * 3 * 4:,} bytes)" in msg


def test_random_feed_whose_draw_alone_is_too_big_says_so():
    """A float32 input that fits but whose float64 draw does not: both sizes, each with its dtype."""
    with pytest.raises(hal.ResourceError) as e:
        random_feeds(_graph(), dims={"batch": 50_000_000}, max_memory=1_000_000_000)
    msg = str(e.value)
    assert "random input 'x' float32[50000000, 3] is 572 MiB (600,000,000 bytes)" in msg
    assert "drawn as float64 first: 1.12 GiB (1,200,000,000 bytes)" in msg
    assert random_feeds(_graph(), dims={"batch": 2})["x"].dtype == np.float32


def test_input_given_an_npz_of_one_array_says_what_it_holds(tmp_path):
    np.savez(tmp_path / "feeds.npz", input_ids=np.zeros((1, 4), np.int64))
    with pytest.raises(hal.InputError) as e:
        load_inputs([f"input_ids={tmp_path / 'feeds.npz'}"], None)
    msg = str(e.value)
    assert "several" not in msg and "holding one array, 'input_ids'" in msg
    assert f"--inputs {tmp_path / 'feeds.npz'}" in msg and "np.save('input_ids.npy', array)" in msg
    np.savez(tmp_path / "two.npz", a=np.zeros(1), b=np.ones(1))
    with pytest.raises(hal.InputError, match=r"holding 2 arrays \('a', 'b'\)"):
        load_inputs([f"a={tmp_path / 'two.npz'}"], None)


def test_an_input_given_twice_is_refused(tmp_path):
    np.save(tmp_path / "x1.npy", np.zeros(3, np.float32))
    np.save(tmp_path / "x2.npy", np.ones(3, np.float32))
    with pytest.raises(hal.InputError) as e:
        load_inputs([f"x={tmp_path / 'x1.npy'}", f"x={tmp_path / 'x2.npy'}"], None)
    assert str(e.value).startswith(f"--input x: input 'x' is given twice: by --input x={tmp_path / 'x1.npy'} "
                                   f"and by --input x={tmp_path / 'x2.npy'}")
    np.savez(tmp_path / "feeds.npz", x=np.zeros(3, np.float32), y=np.ones(2, np.float32))
    with pytest.raises(hal.InputError, match=f"input 'x' is given twice: by --inputs {tmp_path / 'feeds.npz'} "
                                             f"and by --input x="):
        load_inputs([f"x={tmp_path / 'x2.npy'}"], str(tmp_path / "feeds.npz"))
    # distinct inputs from both still load
    feeds = load_inputs([f"z={tmp_path / 'x2.npy'}"], str(tmp_path / "feeds.npz"))
    assert sorted(feeds) == ["x", "y", "z"] and feeds["z"].tolist() == [1, 1, 1]


def test_a_bytes_feed_for_a_string_input_is_told_to_cast_to_str_which_then_runs(tmp_path):
    import onnx

    from hal.cli import main

    x = helper.make_tensor_value_info("x", TensorProto.STRING, [2])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "s", [x],
                          [helper.make_tensor_value_info("y", TensorProto.STRING, [2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    sess = hal.InferenceSession(model)
    with pytest.raises(hal.InputError) as ei:
        sess.run(None, {"x": np.array([b"a", b"b"])})
    assert "x.astype(str)" in ei.value.hint  # (x.astype(object) the CLI refuses as a pickle)
    path, feeds = tmp_path / "s.onnx", tmp_path / "x.npz"
    onnx.save(model, path)
    np.savez(feeds, x=np.array([b"a", b"b"]).astype(str))
    assert main(["run", str(path), "--inputs", str(feeds)]) == 0
