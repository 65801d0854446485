"""onnxruntime's mixture-of-experts contrib ops, MoE and QMoE (domain ``com.microsoft``), as
onnxruntime 1.32's CPU kernels compute them. onnxruntime's GenAI builder writes them for gpt-oss
(fused interleaved SwiGLU with biases; QMoE with 4-bit blocks) and Mixtral / Phi-MoE style models
(SiLU with an FC3 gate).

* MoE's routing: ``router_probs`` (tokens, experts) are logits: each row's softmax in float32 (max
  subtracted, exponentials summed left to right, each times the sum's reciprocal), the k most
  probable experts, ties to the higher expert index; their probabilities are the mixing weights,
  times the reciprocal of their sum when ``normalize_routing_weights`` is 1. QMoE's: the k largest
  logits softmaxed among themselves whatever normalize_routing_weights says, or ``router_weights``
  at the chosen experts (normalised when asked). A weight not > 0 skips its expert.
  ``use_sparse_mixer`` (k must be 2) changes nothing on onnxruntime's CPU, nor here.
* Each expert e: h = x @ fc1[e]^T + fc1_bias[e]; the activation (relu; gelu in its tanh form;
  silu; identity; or swiglu over h's interleaved gate / linear pairs, gate = h[2i], linear =
  h[2i + 1]: min(gate, limit) * sigmoid(alpha * min(gate, limit)) * (clamp(linear, +-limit) +
  beta)); then y = a @ fc2[e]^T + fc2_bias[e]. The token's output sums weight x y over its
  experts in expert order, in float32. float16 / bfloat16 are widened and the result rounded once,
  as onnxruntime's float16 kernels compute (it registers no bfloat16 one).
* 2-D input (tokens, hidden) or 3-D (batch, sequence, hidden), token by token; the output has the
  input's shape. Weights (experts, fusion x inter, hidden) for fc1 (fusion 2 for swiglu), (experts,
  hidden, inter) for fc2; QMoE's as MatMulNBits' codes (see ``qmoe``).

Beyond onnxruntime's CPU kernels, following the ops' schema and the CUDA kernel: FC3 (the CPU
kernels fail at run time) multiplies the activation, act(h) * (x @ fc3[e]^T + fc3_bias[e]) (SiLU's
Mixtral gate); swiglu_fusion 2 reads [gate | linear] halves and 0 the gate from FC1, the linear from
FC3 (the CPU kernels refuse both when the session is built); MoE's legacy weight layout, fc1
(experts, hidden, fusion x inter) and fc2 (experts, inter, hidden), multiplies as x @ fc1[e], as
the op defined it then, where onnxruntime 1.32's CPU kernel accepts the shapes but reads their
memory as the current layout. Refused (``refuses``, so targets refuse such a node when they
compile): activations other than these five (geglu, relu2 are CUDA's), swiglu_limit_after_activation,
use_sparse_mixer with k != 2, k < 1, fused swiglu with a separate FC3; QMoE's quant types other than
'int', 3-bit weights, weights_prepacked=1 and the FP4 / FP8 scale inputs.

Shapes for compile-time planning come from ``hal.graph.contrib``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hal.kernels.activation import expf
from hal.kernels.contrib_genai import int8_blocked_product, unpack_codes
from hal.kernels.registry import kernel

Array = np.ndarray
DOMAIN = "com.microsoft"
_F32 = np.float32
#: the activations onnxruntime's CPU kernel computes
ACTIVATIONS = ("relu", "gelu", "silu", "identity", "swiglu")
#: gelu's tanh form, as onnxruntime's CPU MoE writes its constants
_GELU_C, _GELU_A = _F32(0.7978845608), _F32(0.044715)


def moe_unsupported(op: str, attrs: dict, has_fc3: bool, has_fc3_bias: bool) -> str | None:
    """What of (Q)MoE's attributes this kernel does not compute, or onnxruntime refuses; None when
    it computes the node."""
    act = str(attrs.get("activation_type", "relu"))
    if act not in ACTIVATIONS:
        return (f"{op} activation_type {act!r}: onnxruntime's CPU kernel computes {', '.join(ACTIVATIONS)} "
                f"(geglu and relu2 are its CUDA kernel's)")
    k = int(attrs.get("k", 1))
    if k < 1:
        return f"{op} k must be at least 1, got {k}"
    if int(attrs.get("use_sparse_mixer", 0)) == 1 and k != 2:
        return f"{op} use_sparse_mixer needs k=2 (as onnxruntime refuses it), got k={k}"
    if int(attrs.get("swiglu_limit_after_activation", 0)):
        return f"{op} swiglu_limit_after_activation=1 (onnxruntime computes it on CUDA only)"
    if has_fc3_bias and not has_fc3:
        return f"{op} has an FC3 bias but no FC3 weights"
    fusion = int(attrs.get("swiglu_fusion", 0))
    if act == "swiglu":
        if fusion not in (0, 1, 2):
            return f"{op} swiglu_fusion must be 0, 1 or 2, got {fusion}"
        if fusion and has_fc3:
            return f"{op} with fused swiglu (swiglu_fusion={fusion}) holds FC3 in FC1: it takes no FC3 input"
        if not fusion and not has_fc3:
            return f"{op} with swiglu_fusion=0 reads the linear half from FC3: FC3 weights are missing"
    return None


def _moe_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    ins = [*inputs, *[""] * 8]
    return moe_unsupported("MoE", attrs, bool(ins[6]), bool(ins[7]))


# --- routing and mixing -----------------------------------------------------------------------------


def _router_logits(op: str, router_probs: Array, tokens: int, k: int) -> Array:
    """The router's (tokens, experts) logits in float32, checked against the tokens and k."""
    if router_probs.ndim != 2 or router_probs.shape[0] != tokens:
        raise ValueError(f"{op} router_probs must be (tokens, experts) with {tokens} token rows, got shape "
                         f"{router_probs.shape}")
    if k > router_probs.shape[1]:
        raise ValueError(f"{op} k must be at most the number of experts ({router_probs.shape[1]}), got {k}")
    return router_probs.astype(_F32)


def routes(router_probs: Array, tokens: int, k: int, normalize: bool, op: str = "MoE") -> tuple[Array, Array]:
    """Each token's k experts (tokens, k), most probable first (ties to the higher index), and their
    float32 weights: the softmax of the router's logits, over the chosen ones' sum when ``normalize``."""
    logits = _router_logits(op, router_probs, tokens, k)
    experts = logits.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        e = expf(logits - logits.max(axis=1, keepdims=True, initial=-np.inf))
        total = np.cumsum(e, axis=1, dtype=_F32)[:, -1:] if experts else np.ones((tokens, 1), _F32)
        probs = e * (_F32(1) / total)
    index = np.broadcast_to(np.arange(experts), probs.shape)
    order = np.lexsort((-index, -probs), axis=-1)[:, :k]  # probability descending, then index descending
    weight = np.take_along_axis(probs, order, axis=1)
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            weight = weight * (_F32(1) / np.cumsum(weight, axis=1, dtype=_F32)[:, -1:])
    return order, weight.astype(_F32)


def mix(x: Array, order: Array, weight: Array, expert: Callable[[int, Array], Array]) -> Array:
    """Σ weight x expert(e, tokens) over each token's routes, added expert by expert in index order
    (onnxruntime's order) in float32; a route whose weight is not > 0 is skipped."""
    out = np.zeros(x.shape, _F32)
    live = weight > 0
    for e in np.unique(order[live]):
        rows, slot = np.nonzero((order == e) & live)
        y = expert(int(e), x[rows])
        out[rows] += weight[rows, slot][:, None] * y
    return out


def activate(h: Array, act: str, *, fused: int, alpha: float, beta: float, limit: float) -> Array:
    """The activation of FC1's float32 output h (tokens, rows); swiglu halves the rows."""
    with np.errstate(over="ignore"):
        if act == "relu":
            return np.maximum(h, _F32(0))
        if act == "gelu":
            return _F32(0.5) * h * (_F32(1) + np.tanh(_GELU_C * (h + _GELU_A * h * h * h)))
        if act == "silu":
            return h * (_F32(1) / (_F32(1) + np.exp(-h)))
        if act == "identity":
            return h
        # swiglu: interleaved (gate, linear) pairs, or [gate | linear] halves
        half = h.shape[-1] // 2
        gate, linear = (h[..., 0::2], h[..., 1::2]) if fused == 1 else (h[..., :half], h[..., half:])
        return swiglu(gate, linear, alpha=alpha, beta=beta, limit=limit)


def swiglu(gate: Array, linear: Array, *, alpha: float, beta: float, limit: float) -> Array:
    gate = np.minimum(gate, _F32(limit))
    linear = np.clip(linear, _F32(-limit), _F32(limit))
    z = _F32(alpha) * gate
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(z))
        sig = np.where(z > 0, _F32(1) / (_F32(1) + e), e / (_F32(1) + e))
    return gate * sig * (linear + _F32(beta))


#: an expert's product: (expert, tokens (n, in)) -> (n, out) float32
Product = Callable[[int, Array], Array]


def _act_options(act: str, fused: int, limit, alpha, beta) -> dict:
    return {"act": act, "fused": fused, "alpha": float(alpha), "beta": float(beta),
            "limit": np.inf if limit is None else float(limit)}


def _expert(options: dict, fc1: Product, fc2: Product, fc3: Product | None, b1: Array | None, b2: Array | None,
            b3: Array | None) -> Product:
    """One expert's FFN over its tokens: FC1 (+ bias), the activation (gated by FC3 when given), FC2
    (+ bias), in float32."""
    act, fused = options["act"], options["fused"]
    swiglu_args = {name: options[name] for name in ("alpha", "beta", "limit")}

    def bias(b: Array | None, e: int):
        return _F32(0) if b is None else b[e].astype(_F32)

    def expert(e: int, xs: Array) -> Array:
        h = fc1(e, xs) + bias(b1, e)
        if act == "swiglu" and not fused:  # the gate from FC1, the linear half from FC3
            a = swiglu(h, fc3(e, xs) + bias(b3, e), **swiglu_args)
        else:
            a = activate(h, act, fused=fused, **swiglu_args)
            if fc3 is not None:  # the gate: act(FC1) x FC3, as onnxruntime's CUDA kernel
                a = a * (fc3(e, xs) + bias(b3, e))
        return fc2(e, a.astype(_F32)) + bias(b2, e)

    return expert


def check_shape(op: str, name: str, x: Array | None, want: tuple[int, ...]) -> None:
    if x is not None and tuple(x.shape) != want:
        raise ValueError(f"{op} {name} must have shape {want}, got {tuple(x.shape)}")


def tokens_of(op: str, x: Array) -> Array:
    if x.ndim not in (2, 3):
        raise ValueError(f"{op} input must be (tokens, hidden) or (batch, sequence, hidden), got shape {x.shape}")
    return x.reshape(-1, x.shape[-1])


# --- MoE ---------------------------------------------------------------------------------------------


def _layout(fc1: Array, fc2: Array, hidden: int, swiglu_act: bool) -> tuple[int, bool]:
    """(inter_size, legacy): onnxruntime's reading of the weights' shapes. A legacy layout holds fc1
    as (experts, hidden, fc1 rows) and fc2 as (experts, inter, hidden)."""
    inter = fc2.shape[1] * fc2.shape[2] // hidden if hidden else 0
    legacy = (hidden != inter and fc2.shape[1] == inter) or (hidden == inter and swiglu_act and fc1.shape[1] == hidden)
    return inter, legacy


@kernel("MoE", since=1, domain=DOMAIN, refuses=_moe_refuses)
def moe(input, router_probs, fc1_experts_weights, fc1_experts_bias=None, fc2_experts_weights=None,
        fc2_experts_bias=None, fc3_experts_weights=None, fc3_experts_bias=None, *, k=1, activation_type="relu",
        normalize_routing_weights=0, use_sparse_mixer=0, swiglu_fusion=0, swiglu_limit=None, activation_alpha=1.0,
        activation_beta=0.0, swiglu_limit_after_activation=0):
    """onnxruntime's MoE (see the module docstring): each token through its top-k experts' FC1,
    activation and FC2, mixed by its routing weights; the output has the input's shape and type."""
    act = str(activation_type)
    attrs = {"activation_type": act, "k": k, "use_sparse_mixer": use_sparse_mixer, "swiglu_fusion": swiglu_fusion,
             "swiglu_limit_after_activation": swiglu_limit_after_activation}
    why = moe_unsupported("MoE", attrs, fc3_experts_weights is not None, fc3_experts_bias is not None)
    if why:  # called directly: the registry's ``refuses`` keeps such a node from any compiled program
        raise ValueError(why)
    if fc2_experts_weights is None:
        raise ValueError("MoE needs fc2_experts_weights (input 4)")
    x = tokens_of("MoE", input)
    hidden = x.shape[1]
    fc1, fc2, fc3 = fc1_experts_weights, fc2_experts_weights, fc3_experts_weights
    for name, w in (("fc1_experts_weights", fc1), ("fc2_experts_weights", fc2), ("fc3_experts_weights", fc3)):
        if w is not None and w.ndim != 3:
            raise ValueError(f"MoE {name} must be 3-D (experts, rows, columns), got shape {w.shape}")
    experts = router_probs.shape[-1]
    fused = int(swiglu_fusion) if act == "swiglu" else 0
    inter, legacy = _layout(fc1, fc2, hidden, act == "swiglu" and fused != 0)
    rows1 = 2 * inter if fused else inter
    if legacy:
        check_shape("MoE", "fc1_experts_weights", fc1, (experts, hidden, rows1))
        check_shape("MoE", "fc2_experts_weights", fc2, (experts, inter, hidden))
        check_shape("MoE", "fc3_experts_weights", fc3, (experts, hidden, inter))
    else:
        check_shape("MoE", "fc1_experts_weights", fc1, (experts, rows1, hidden))
        check_shape("MoE", "fc2_experts_weights", fc2, (experts, hidden, inter))
        check_shape("MoE", "fc3_experts_weights", fc3, (experts, inter, hidden))
    check_shape("MoE", "fc1_experts_bias", fc1_experts_bias, (experts, rows1))
    check_shape("MoE", "fc2_experts_bias", fc2_experts_bias, (experts, hidden))
    check_shape("MoE", "fc3_experts_bias", fc3_experts_bias, (experts, inter))
    order, weight = routes(router_probs, x.shape[0], int(k), normalize_routing_weights == 1)

    def product(w: Array | None) -> Product | None:  # x @ w[e]^T in float32 (legacy: x @ w[e])
        if w is None:
            return None
        return lambda e, xs: xs @ (w[e].astype(_F32) if legacy else w[e].astype(_F32).T)

    options = _act_options(act, fused, swiglu_limit, activation_alpha, activation_beta)
    expert = _expert(options, product(fc1), product(fc2), product(fc3), fc1_experts_bias, fc2_experts_bias,
                     fc3_experts_bias)
    out = mix(x.astype(_F32), order, weight, expert)
    return out.reshape(input.shape).astype(input.dtype)


# --- QMoE --------------------------------------------------------------------------------------------

#: QMoE's inputs past router_weights (FP4 / FP8 global and activation scales), which this kernel refuses
_QMOE_FP_INPUTS = ("fc1_global_scale", "fc2_global_scale", "fc1_act_scale", "fc2_act_scale", "fc1_act_block_scale",
                   "fc2_act_block_scale")


def _bits(attrs: dict, j: int) -> int:
    """Projection j's (1, 2, 3) effective weight bits: its override, else expert_weight_bits."""
    base = int(attrs.get("expert_weight_bits", 4))
    own = attrs.get(f"fc{j}_expert_weight_bits")
    return base if own is None else int(own)


def qmoe_unsupported(attrs: dict, inputs: list[str]) -> str | None:
    ins = [*inputs, *[""] * 21]
    why = moe_unsupported("QMoE", attrs, bool(ins[8]), bool(ins[10]))
    if why:
        return why
    quant = str(attrs.get("quant_type", "int"))
    if quant != "int":
        return f"QMoE quant_type {quant!r}: this kernel computes integer quantization ('int')"
    bits = {j: _bits(attrs, j) for j in (1, 2, 3)}
    if any(b not in (2, 4, 8) for b in bits.values()):
        return (f"QMoE expert weight bits {sorted(set(bits.values()))}: this kernel computes 2, 4 and 8 (not the "
                f"INT3 profile)")
    if int(attrs.get("weights_prepacked", -1)) not in (-1, 0):
        return ("QMoE weights_prepacked=1 (an execution provider's own layout): this kernel reads raw [E, N, K/pack] "
                "bytes")
    if fused_swiglu := (str(attrs.get("activation_type", "relu")) == "swiglu" and attrs.get("swiglu_fusion", 0)):
        if bits[1] != bits[3]:
            return f"QMoE fused swiglu (swiglu_fusion={fused_swiglu}) needs FC3's bits equal to FC1's"
    extra = [n for n, i in zip(_QMOE_FP_INPUTS, ins[15:21]) if i]
    if extra:
        return f"QMoE input(s) {extra} (FP4 / FP8 scales)"
    return None


def _qmoe_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    return qmoe_unsupported(attrs, inputs)


def _quantized(name: str, w: Array, scales: Array | None, zeros: Array | None, *, experts: int, rows: int, cols: int,
               bits: int, block: int, int8: bool) -> Product:
    """Projection ``name``'s product x @ W[e]^T, W[e] (rows, cols) dequantised from its codes as
    (code - zero point) x scale (zero point 2^(bits-1) by default), per row or per block of ``block``
    columns; with ``int8``, x quantised to int8 per block as onnxruntime's int8 kernels do."""
    if w.dtype != np.uint8 or tuple(w.shape) != (experts, rows, cols * bits // 8) or cols * bits % 8:
        raise ValueError(f"QMoE {name}_experts_weights must be uint8 of shape {(experts, rows, cols * bits // 8)} "
                         f"({bits}-bit codes of a ({rows}, {cols}) matrix an expert), got {w.dtype} {tuple(w.shape)}")
    if scales is None:
        raise ValueError(f"QMoE needs {name}_scales for integer quantization")
    blocks = -(-cols // block) if block else 1  # a last block of the rest, as onnxruntime takes it
    check_shape("QMoE", f"{name}_scales", scales, (experts, rows, blocks) if block else (experts, rows))
    if zeros is not None:
        zp = (experts, rows, -(-blocks * bits // 8)) if block else (experts, -(-rows * bits // 8))
        if zeros.dtype != np.uint8:
            raise ValueError(f"QMoE {name}_zero_points must be uint8, got {zeros.dtype}")
        check_shape("QMoE", f"{name}_zero_points", zeros, zp)
    width = block or cols
    at = np.arange(cols) // width  # each column's block

    def weight(e: int) -> tuple[Array, Array]:  # centred codes (rows, cols) int32, each one's scale float32
        codes = unpack_codes(w[e], bits).astype(np.int32)
        scale = scales[e].astype(_F32).reshape(rows, blocks)
        if zeros is None:
            zero = np.full((rows, blocks), 1 << (bits - 1), np.int32)
        elif block:
            zero = unpack_codes(zeros[e], bits)[:, :blocks].astype(np.int32)
        else:
            zero = unpack_codes(zeros[e], bits)[:rows].astype(np.int32).reshape(rows, 1)
        return codes - zero[:, at], scale[:, at]

    def product(e: int, xs: Array) -> Array:
        centred, scale = weight(e)
        if int8:
            return int8_blocked_product(xs, centred, scale, block)
        return xs @ (centred.astype(_F32) * scale).T

    return product


def qmoe_routes(router_probs: Array, router_weights: Array | None, tokens: int, k: int,
                normalize: bool) -> tuple[Array, Array]:
    """QMoE's routing: the k largest logits (ties to the higher index) and the softmax over just
    them; or, with ``router_weights``, their weights at the chosen experts (over their sum when
    ``normalize``)."""
    logits = _router_logits("QMoE", router_probs, tokens, k)
    experts = logits.shape[1]
    index = np.broadcast_to(np.arange(experts), logits.shape)
    order = np.lexsort((-index, -logits), axis=-1)[:, :k]
    if router_weights is not None:
        check_shape("QMoE", "router_weights", router_weights, tuple(router_probs.shape))
        weight = np.take_along_axis(router_weights.astype(_F32), order, axis=1)
        if not normalize:
            return order, weight
    else:
        top = np.take_along_axis(logits, order, axis=1)
        with np.errstate(over="ignore", invalid="ignore"):
            weight = expf(top - top.max(axis=1, keepdims=True, initial=-np.inf))
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.cumsum(weight, axis=1, dtype=_F32)[:, -1:]
        return order, (weight * np.where(total == 0, _F32(0), _F32(1) / total)).astype(_F32)


@kernel("QMoE", since=1, domain=DOMAIN, refuses=_qmoe_refuses)
def qmoe(input, router_probs, fc1_experts_weights, fc1_scales=None, fc1_experts_bias=None, fc2_experts_weights=None,
         fc2_scales=None, fc2_experts_bias=None, fc3_experts_weights=None, fc3_scales=None, fc3_experts_bias=None,
         fc1_zero_points=None, fc2_zero_points=None, fc3_zero_points=None, router_weights=None, *fp_scales, k=1,
         activation_type="relu", normalize_routing_weights=0, use_sparse_mixer=0, swiglu_fusion=0, swiglu_limit=None,
         activation_alpha=1.0, activation_beta=0.0, swiglu_limit_after_activation=0, expert_weight_bits=4,
         fc1_expert_weight_bits=None, fc2_expert_weight_bits=None, fc3_expert_weight_bits=None, block_size=0,
         quant_type="int", weights_prepacked=-1, accuracy_level=0):
    """onnxruntime's QMoE with integer experts, as its CPU kernel computes it: MoE's experts (see
    the module docstring) over weights dequantised as MatMulNBits' (codes low bits first, (code -
    zero point) x scale), per row or per block of ``block_size`` along K; the router's top-k logits
    softmaxed among themselves (or ``router_weights`` mixing). Projections of 8-bit blocks, or 4-bit
    ones at ``accuracy_level`` 4, quantise their input to int8 per block, as MatMulNBits' level 4;
    a projection whose K is not a whole number of blocks (its rest one last block, which the schema
    rules out and onnxruntime takes) dequantises and multiplies in float32."""
    act = str(activation_type)
    attrs = {"activation_type": act, "k": k, "use_sparse_mixer": use_sparse_mixer, "swiglu_fusion": swiglu_fusion,
             "swiglu_limit_after_activation": swiglu_limit_after_activation, "expert_weight_bits": expert_weight_bits,
             "fc1_expert_weight_bits": fc1_expert_weight_bits, "fc2_expert_weight_bits": fc2_expert_weight_bits,
             "fc3_expert_weight_bits": fc3_expert_weight_bits, "quant_type": quant_type,
             "weights_prepacked": weights_prepacked}
    given = [""] * 21  # the node's inputs as the registry's ``refuses`` reads them: "" where absent
    for i, v in [(8, fc3_experts_weights), (10, fc3_experts_bias), *enumerate(fp_scales, start=15)]:
        given[i] = "" if v is None else "given"
    why = qmoe_unsupported(attrs, given)
    if why:  # called directly: the registry's ``refuses`` keeps such a node from any compiled program
        raise ValueError(why)
    if fc2_experts_weights is None:
        raise ValueError("QMoE needs fc2_experts_weights (input 5)")
    if block_size and (block_size < 16 or block_size & (block_size - 1)):
        raise ValueError(f"QMoE block_size must be a power of 2 and at least 16, got {block_size}")
    x = tokens_of("QMoE", input)
    hidden = x.shape[1]
    experts = router_probs.shape[-1]
    bits = {j: _bits(attrs, j) for j in (1, 2, 3)}
    fused = int(swiglu_fusion) if act == "swiglu" else 0
    if fc2_experts_weights.ndim != 3 or fc1_experts_weights.ndim != 3:
        raise ValueError("QMoE fc1 / fc2 expert weights must be 3-D (experts, rows, packed columns)")
    inter = fc2_experts_weights.shape[2] * 8 // bits[2]
    rows1 = 2 * inter if fused else inter
    level4 = int(accuracy_level) == 4

    def projection(j: int, w, s, z, rows: int, cols: int) -> Product | None:
        if w is None:
            return None
        # (a row of columns not a whole number of blocks: onnxruntime dequantises and multiplies in float32)
        int8 = bool(block_size) and not cols % block_size and (bits[j] == 8 or (bits[j] == 4 and level4))
        return _quantized(f"fc{j}", w, s, z, experts=experts, rows=rows, cols=cols, bits=bits[j],
                          block=int(block_size), int8=int8)

    fc1 = projection(1, fc1_experts_weights, fc1_scales, fc1_zero_points, rows1, hidden)
    fc2 = projection(2, fc2_experts_weights, fc2_scales, fc2_zero_points, hidden, inter)
    fc3 = projection(3, fc3_experts_weights, fc3_scales, fc3_zero_points, inter, hidden)
    check_shape("QMoE", "fc1_experts_bias", fc1_experts_bias, (experts, rows1))
    check_shape("QMoE", "fc2_experts_bias", fc2_experts_bias, (experts, hidden))
    check_shape("QMoE", "fc3_experts_bias", fc3_experts_bias, (experts, inter))
    order, weight = qmoe_routes(router_probs, router_weights, x.shape[0], int(k), normalize_routing_weights == 1)
    options = _act_options(act, fused, swiglu_limit, activation_alpha, activation_beta)
    expert = _expert(options, fc1, fc2, fc3, fc1_experts_bias, fc2_experts_bias, fc3_experts_bias)
    out = mix(x.astype(_F32), order, weight, expert)
    return out.reshape(input.shape).astype(input.dtype)
