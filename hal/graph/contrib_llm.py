"""Stand-ins (``hal.graph.contrib``) for onnxruntime's transformer and LLM contrib ops: the packed
weight products (MatMulNBits, MatMulBnb4, GatherBlockQuantized), its attention ops (Attention,
QAttention, MultiHeadAttention, GroupQueryAttention) and its hybrid models' recurrent ones
(CausalConvWithState, LinearAttention and its gate). Each is inferred as standard ops giving its
outputs the same shapes and types; a present state sized by a fed length stays unknown."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from hal.graph.contrib import PREFIX, _axes_op, _heads, _ins, _Known, _product, _same_as, _stands_in


@_stands_in("MatMulNBits", "MatMulBnb4")
def _matmul_nbits(node, a, known):
    """A (..., K) times B unpacked to (K, N): N and K are attributes."""
    if not node.input or "N" not in a or "K" not in a:
        return None
    x = node.input[0]
    return _product(x, int(a["K"]), int(a["N"]), node.output[0], known.types.get(x, TensorProto.FLOAT), known)


@_stands_in("GatherBlockQuantized")
def _gather_block_quantized(node, a, known):
    """data's rows gathered along gather_axis, in the scales' type; packed uint8 data holds 8 / bits
    codes a byte along its last axis."""
    data, indices, scales = _ins(node, 3)
    dims = known.static(data) if data else None
    if dims is None or not indices or not scales or scales not in known.types:
        return None
    if known.types.get(data) == TensorProto.UINT8 and dims:
        dims[-1] *= 8 // int(a.get("bits", 4))
    unpacked = known.declare(node.output[0] + "_data", known.types[scales], dims)
    return [helper.make_node("Gather", [unpacked, indices], [node.output[0]], axis=int(a.get("gather_axis", 0)))]


def _present(k_proj: list[onnx.NodeProto], k_heads: str, past: str, out: str, known: _Known
             ) -> list[onnx.NodeProto]:
    """Attention's present state (2, B, heads, past + S, head size): the keys in heads twice (for K
    and V), after the past along the sequence."""
    one = PREFIX + out + "_one"
    both = PREFIX + out + "_kv"
    nodes = [*k_proj, *_axes_op("Unsqueeze", k_heads, one, [0], known.opset, 13),
             helper.make_node("Concat", [one, one], [both if past else out], axis=0)]
    if past:
        nodes.append(helper.make_node("Concat", [past, both], [out], axis=3))
    return nodes


@_stands_in("Attention", "QAttention")
def _attention(node, a, known):
    """output (B, S, V's hidden size): the input times a (hidden, V hidden) slice of the packed
    weights; present: see ``_present`` (the past itself where it shares the present's buffer).
    QAttention's input is codes and its output the float bias's type: the codes cast to it first."""
    quantized = node.op_type == "QAttention"
    x, w, bias = _ins(node, 3)
    past = _ins(node, 9)[8 if quantized else 4]
    weights = known.static(w) if w else None
    heads = int(a.get("num_heads", 0))
    if not x or weights is None or len(weights) != 2 or heads < 1:
        return None
    sizes = list(a.get("qkv_hidden_sizes", [])) or [weights[1] // 3] * 3
    if len(sizes) != 3 or sizes[1] % heads:
        return None
    outs = [*node.output, ""][:2]
    nodes = []
    if quantized:
        if bias not in known.types:
            return None
        elem = known.types[bias]
        nodes.append(helper.make_node("Cast", [x], [PREFIX + outs[0] + "_x"], to=elem))
        x = PREFIX + outs[0] + "_x"
    else:
        elem = known.types.get(x, TensorProto.FLOAT)
    nodes += _product(x, weights[0], sizes[2], outs[0], elem, known)
    if outs[1]:
        if past and a.get("past_present_share_buffer", 0):
            nodes += _same_as(past, [outs[1]])
        else:
            k = PREFIX + outs[1] + "_k"
            k_proj = _product(x, weights[0], sizes[1], k, elem, known)
            nodes += _present([*k_proj, *_heads(k, k + "_heads", heads, sizes[1] // heads)], k + "_heads",
                              past, outs[1], known)
    return nodes


@_stands_in("MultiHeadAttention")
def _multi_head_attention(node, a, known):
    """output (B, S, heads x V's head size) for separate 3-D query, key and value or a 4-D (B, heads,
    L, head size) key and value; present_key/value (B, heads, past + L, head size) for 3-D ones."""
    q, k, v, _, _, _, past_k, past_v = _ins(node, 8)
    heads = int(a.get("num_heads", 0))
    qd, vd = known.dims.get(q), known.dims.get(v) if v else None
    if heads < 1 or qd is None or len(qd) != 3 or vd is None:
        return None
    if len(vd) == 3 and isinstance(vd[2], int):
        v_hidden = vd[2]
    elif len(vd) == 4 and isinstance(vd[3], int):
        v_hidden = heads * vd[3]
    else:
        return None
    outs = [*node.output, "", ""][:3]
    nodes = _product(q, qd[2], v_hidden, outs[0], known.types.get(q, TensorProto.FLOAT), known)
    for name, past, present in ((k, past_k, outs[1]), (v, past_v, outs[2])):
        d = known.dims.get(name)
        if not present or d is None:
            continue
        if len(d) == 4:  # already (B, heads, L, head size): the present is the key or value itself
            nodes += _same_as(name, [present])
        elif len(d) == 3 and isinstance(d[2], int) and d[2] % heads == 0:
            split = PREFIX + present + "_heads"
            nodes += _heads(name, split if past else present, heads, d[2] // heads)
            if past:
                nodes.append(helper.make_node("Concat", [past, split], [present], axis=2))
    return nodes


@_stands_in("GroupQueryAttention")
def _group_query_attention(node, a, known):
    """output (B, S, heads x head size), from a query of that width or a packed QKV one; the present
    key and value are sized by a fed total length and stay unknown, but for a windowed cache
    (sliding_window_cache), whose present is its past's shape."""
    q, k, _, past_key, past_value = _ins(node, 5)
    heads, kv_heads = int(a.get("num_heads", 0)), int(a.get("kv_num_heads", 0))
    qd = known.dims.get(q)
    if heads < 1 or kv_heads < 1 or qd is None or len(qd) != 3 or not isinstance(qd[2], int):
        return None
    presents = []
    if a.get("sliding_window_cache", 0) and past_key and past_value:
        presents = [helper.make_node("Identity", [past], [o]) for past, o in zip((past_key, past_value),
                                                                                 node.output[1:3]) if o]
    if k:
        return _same_as(q, node.output[:1]) + presents
    if qd[2] % (heads + 2 * kv_heads):
        return None
    width = heads * (qd[2] // (heads + 2 * kv_heads))
    return _product(q, qd[2], width, node.output[0], known.types.get(q, TensorProto.FLOAT), known) + presents


@_stands_in("CausalConvWithState", "LinearAttentionGate", "LinearAttention")
def _stateful(node, a, known):
    """CausalConvWithState's output is its input's shape, LinearAttentionGate's two its ``a``'s;
    LinearAttention's (B, T, max(q, kv heads) x value head size); a present state is its past's shape."""
    x, _, v, past = _ins(node, 4)
    outs = [*node.output, ""][:2]
    if node.op_type != "LinearAttention":
        return _same_as(x, outs if node.op_type == "LinearAttentionGate" else outs[:1]) + \
            (_same_as(past, outs[1:]) if past and node.op_type == "CausalConvWithState" else [])
    hq, hkv, vd = int(a.get("q_num_heads", 0)), int(a.get("kv_num_heads", 0)), known.dims.get(v)
    if hq < 1 or hkv < 1 or not v or vd is None or len(vd) != 3 or not isinstance(vd[2], int):
        return None
    ps = _same_as(past, outs[1:]) if past else []
    if hkv >= hq:
        return _same_as(v, outs[:1]) + ps
    return _product(v, vd[2], hq * (vd[2] // hkv), outs[0], known.types.get(x, TensorProto.FLOAT), known) + ps
