"""onnxruntime's fused float contrib ops (domain ``com.microsoft``), as its graph optimiser writes
them into a model it saves (``SessionOptions.optimized_model_filepath``) and as its transformers
optimizer (``onnxruntime.transformers.optimizer``) writes them: FusedConv, FusedGemm, FusedMatMul,
Gelu, FastGelu, BiasGelu, QuickGelu, BiasAdd, SkipLayerNormalization and
SkipSimplifiedLayerNormalization; and two onnxruntime registers in the ONNX domain from opset 1,
which onnx itself defines later or not at all: SimplifiedLayerNormalization (RMS normalisation) and
LayerNormalization below opset 17 (onnx's from 17, the same kernel). onnx defines none of the
others; their contract is onnxruntime's (``docs/ContribOperators.md``), and its CPU kernels fix the
arithmetic where the contract leaves it open:

* FusedConv is hal's Conv, plus the optional Z (onnxruntime's Conv + Add fusion) added to the
  convolution, then its activation applied in place on the result: Relu, Tanh, Sigmoid,
  LeakyRelu (``activation_params`` [alpha]), Clip ([min, max]) or HardSigmoid ([alpha, beta]),
  the six MLAS fuses into its convolution; no ``activation`` is the identity;
* FusedGemm is hal's Gemm, then the elementwise activation named by ``activation`` (required)
  with its ``activation_alpha`` / ``_beta`` / ``_gamma`` as that op's attributes, each one the
  activation reads required (the functors onnxruntime builds from them: the Relu family, the
  sigmoid-like gates, Softplus / Softsign, and its own ParametricSoftplus and ScaledTanh);
* FusedMatMul is ``alpha`` x op(A) @ op(B): transBatchA moves A's first axis to just before its
  last (A stored as [M, b..., K] is read as [b..., M, K]), then transA swaps its last two axes;
  the same for B. The batch transposes need A and B of one rank, 3 or more;
* Gelu and BiasGelu are erf's form, 0.5 x (1 + erf(x / sqrt 2)); FastGelu tanh's,
  0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))); QuickGelu x sigmoid(alpha x); BiasAdd
  (X + bias) + skip;
* SkipLayerNormalization normalises s = input + skip (+ bias) over the last axis: the output, each
  row's mean and 1 / sqrt(var + epsilon) (float32, the input's shape with its last axis 1) and s
  itself; skip is the input's shape or, for a 3-D input, its last two axes ((1, S, H) or (S, H)),
  shared by every batch entry. The simplified form is RMS normalisation of s (no beta; its bias the
  fourth input), its mean output 0, as onnxruntime writes it.

Shapes for compile-time planning come from ``hal.graph.contrib``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.kernels import activation as act
from hal.kernels._axes import axis_in
from hal.kernels.linalg import _matmul, gemm
from hal.kernels.nn import _conv
from hal.kernels.normalization import _layer_rows, layer_normalization, rms_normalization
from hal.kernels.registry import kernel

Array = np.ndarray
DOMAIN = "com.microsoft"
_F32 = np.dtype(np.float32)


def _fresh(y: Array, *inputs: Any) -> bool:
    """Whether ``y`` may be written in place: a writable array that is none of ``inputs``."""
    return y.__class__ is np.ndarray and y.flags.writeable and all(y is not i for i in inputs)


# ---- FusedConv ------------------------------------------------------------------------------------

#: MLAS's fused activations: name -> how many ``activation_params`` it takes
CONV_ACTIVATIONS = {"Relu": 0, "Tanh": 0, "Sigmoid": 0, "LeakyRelu": 1, "Clip": 2, "HardSigmoid": 2}


def _conv_activation_in_place(y: Array, name: str | None, params: list[float] | None) -> Array:
    """``y`` through FusedConv's activation, written into ``y``."""
    if name is None or name == "":
        return y
    if name not in CONV_ACTIVATIONS:
        raise ValueError(f"FusedConv activation {name!r} is not one onnxruntime fuses into a Conv; "
                         f"expected one of {sorted(CONV_ACTIVATIONS)}")
    p = [float(v) for v in (params or [])]
    if len(p) != CONV_ACTIVATIONS[name]:
        raise ValueError(f"FusedConv activation {name} takes {CONV_ACTIVATIONS[name]} activation_params, "
                         f"got {len(p)} ({p}); give them as the node's activation_params floats")
    if name == "Relu":
        return act.relu_into(y, y)
    if name == "Tanh":
        return np.tanh(y, out=y)
    if name == "Sigmoid":
        np.negative(y, out=y)
        with np.errstate(over="ignore"):  # exp(-x) to inf: 1 / (1 + inf) is the right 0
            np.exp(y, out=y)
        y += 1
        return np.reciprocal(y, out=y)
    if name == "LeakyRelu":
        return np.multiply(y, y.dtype.type(p[0]), out=y, where=y < 0)
    if name == "Clip":
        return np.clip(y, y.dtype.type(p[0]), y.dtype.type(p[1]), out=y)
    y *= y.dtype.type(p[0])  # HardSigmoid: min(max(alpha x + beta, 0), 1)
    y += y.dtype.type(p[1])
    return np.clip(y, 0, 1, out=y)


@kernel("FusedConv", since=1, domain=DOMAIN)
def fused_conv(X, W, B=None, Z=None, *, activation=None, activation_params=None, auto_pad="NOTSET",
               dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    """Conv(X, W, B) (+ Z), then the activation, as one pass more than the Conv (in place)."""
    if X is None or W is None:
        raise ValueError("FusedConv needs its input X and weights W (inputs 0 and 1)")
    y = _conv(X, W, B, auto_pad, dilations, group, pads, strides)
    if not _fresh(y, X, W, B, Z):
        y = y.copy()
    if Z is not None:
        if Z.shape != y.shape:
            raise ValueError(f"FusedConv's Z (input 3) must have the convolution's output shape {y.shape}, "
                             f"got {Z.shape}")
        y += Z
    return _conv_activation_in_place(y, activation, activation_params)


# ---- FusedGemm ------------------------------------------------------------------------------------

#: onnxruntime's elementwise functors (``ElementWiseRangedTransform``): name -> the parameters it
#: reads (each a required ``activation_<name>`` attribute, as onnxruntime requires them)
GEMM_ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "Relu": (), "Tanh": (), "Sigmoid": (), "Softplus": (), "Softsign": (), "LeakyRelu": ("alpha",),
    "HardSigmoid": ("alpha", "beta"), "Elu": ("alpha",), "Selu": ("alpha", "gamma"), "Celu": ("alpha",),
    "ThresholdedRelu": ("alpha",), "ParametricSoftplus": ("alpha", "beta"), "ScaledTanh": ("alpha", "beta"),
}


def _gemm_activation(y: Array, name: str, p: dict[str, float]) -> Array:
    """``y`` (the Gemm's own result) through FusedGemm's activation; the Relu and Tanh in place."""
    if name == "Relu":
        return act.relu_into(y, y)
    if name == "Tanh":
        return np.tanh(y, out=y)
    if name in ("Sigmoid", "Softplus", "Softsign"):
        return getattr(act, name.lower())(y)
    if name == "ParametricSoftplus":  # alpha ln(1 + e^(beta x))
        return act.softplus(y * y.dtype.type(p["beta"])) * y.dtype.type(p["alpha"])
    if name == "ScaledTanh":  # alpha tanh(beta x)
        return np.tanh(y * y.dtype.type(p["beta"])) * y.dtype.type(p["alpha"])
    fn = {"LeakyRelu": act.leaky_relu, "HardSigmoid": act.hard_sigmoid, "Elu": act.elu, "Selu": act.selu,
          "Celu": act.celu, "ThresholdedRelu": act.thresholded_relu}[name]
    return fn(y, **p)


@kernel("FusedGemm", since=1, domain=DOMAIN)
def fused_gemm(A, B, C=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, activation=None,
               activation_alpha=None, activation_beta=None, activation_gamma=None):
    """Gemm, then the elementwise activation with its ``activation_*`` attributes as that op's."""
    if activation not in GEMM_ACTIVATIONS:
        raise ValueError(f"FusedGemm activation {activation!r} is not an elementwise functor onnxruntime "
                         f"fuses into a Gemm; expected one of {sorted(GEMM_ACTIVATIONS)}")
    given = {"alpha": activation_alpha, "beta": activation_beta, "gamma": activation_gamma}
    missing = [f"activation_{k}" for k in GEMM_ACTIVATIONS[activation] if given[k] is None]
    if missing:
        raise ValueError(f"FusedGemm activation {activation} needs the attribute(s) {', '.join(missing)}, "
                         f"as onnxruntime does; give them on the node")
    y = gemm(A, B, C, alpha=alpha, beta=beta, transA=transA, transB=transB)
    if not _fresh(y, A, B, C):
        y = y.copy()
    out = _gemm_activation(y, activation, {k: float(given[k]) for k in GEMM_ACTIVATIONS[activation]})
    return np.asarray(out).astype(y.dtype, copy=False)


# ---- FusedMatMul ----------------------------------------------------------------------------------

def _operand(x: Array, trans: int, trans_batch: int) -> Array:
    if trans_batch:
        x = np.moveaxis(x, 0, -2)  # [M, b..., K] read as [b..., M, K]
    if trans and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    return x


@kernel("FusedMatMul", since=1, domain=DOMAIN)
def fused_matmul(A, B, *, alpha=1.0, transA=0, transB=0, transBatchA=0, transBatchB=0):
    """alpha op(A) @ op(B), op: the batch transpose (first axis to just before the last), then the
    matrix transpose; numpy's matmul broadcasting over the batch axes."""
    if not A.ndim or not B.ndim:
        raise ValueError(f"FusedMatMul needs operands of one dimension or more, got A {A.shape} and B {B.shape}")
    if (transBatchA or transBatchB) and not (A.ndim == B.ndim >= 3):
        raise ValueError(f"FusedMatMul's transBatchA / transBatchB need A and B of one rank, 3 or more; got "
                         f"A {A.shape} and B {B.shape}")
    a, b = _operand(A, transA, transBatchA), _operand(B, transB, transBatchB)
    k_a = a.shape[-1]
    k_b = b.shape[-2] if b.ndim >= 2 else b.shape[0]
    if k_a != k_b:
        raise ValueError(f"FusedMatMul: op(A) {a.shape} and op(B) {b.shape} do not multiply (K {k_a} against "
                         f"{k_b}; A {A.shape}, B {B.shape}, transA={transA}, transB={transB}, "
                         f"transBatchA={transBatchA}, transBatchB={transBatchB})")
    try:
        y = _matmul(a, b)
    except ValueError as e:
        raise ValueError(f"FusedMatMul: the batch axes of op(A) {a.shape} and op(B) {b.shape} do not "
                         f"broadcast ({e})") from None
    if alpha != 1.0:
        if not _fresh(y, A, B):
            y = y.copy()
        y *= y.dtype.type(alpha)
    return y


# ---- Gelu family ----------------------------------------------------------------------------------

def _bias(x: Array, bias: Array | None, op: str) -> Array:
    if bias is None:
        return x
    if bias.ndim != 1 or not x.ndim or bias.shape[0] != x.shape[-1]:
        raise ValueError(f"{op}'s bias must be 1-D with the input's last dimension ({x.shape[-1] if x.ndim else '?'}),"
                         f" got {bias.shape}")
    return x + bias


@kernel("Gelu", since=1, domain=DOMAIN)
def gelu(X):
    return act.gelu(X)


def _narrow(x: Array) -> bool:
    return x.dtype.itemsize < 4 and x.dtype.kind in "fV"  # float16, bfloat16


def _once(fn, x: Array, *more: Array | None) -> Array:
    """``fn`` of 16-bit floats computed wide and rounded once, as onnxruntime rounds them once (its
    float kernels between casts): the bias's sum, alpha x and the sigmoid each rounded to float16 had
    put BiasGelu 11 ulp and QuickGelu 6 ulp from the float64 answer, onnxruntime 1.2 and 2.3. In
    float64 (Gelu's own form for them) hal is within 0.5 ulp of that answer."""
    if not _narrow(x):
        return fn(x, *more)
    wide = [None if m is None else m.astype(np.float64) for m in more]
    return fn(x.astype(np.float64), *wide).astype(x.dtype)


@kernel("BiasGelu", since=1, domain=DOMAIN)
def bias_gelu(A, B):
    if B is None:
        raise ValueError("BiasGelu needs its bias B (input 1); a Gelu without one is com.microsoft Gelu")
    return _once(lambda a, b: act.gelu(_bias(a, b, "BiasGelu")), A, B)


@kernel("FastGelu", since=1, domain=DOMAIN)
def fast_gelu(X, bias=None):
    return _once(lambda x, b: act.gelu(_bias(x, b, "FastGelu"), approximate="tanh"), X, bias)


@kernel("QuickGelu", since=1, domain=DOMAIN)
def quick_gelu(X, *, alpha=1.702):
    def run(x: Array) -> Array:
        g = act.sigmoid(x * x.dtype.type(alpha) if alpha != 1.0 else x)
        g *= x
        return g

    return _once(run, X)


@kernel("BiasAdd", since=1, domain=DOMAIN)
def bias_add(X, bias, skip):
    """(X + bias) + skip: X and skip (N, S, C), bias (C)."""
    if X.ndim != 3 or skip.shape != X.shape:
        raise ValueError(f"BiasAdd needs a 3-D input X (N, S, C) and skip of its shape, got X {X.shape} and "
                         f"skip {skip.shape}")
    y = _bias(X, bias, "BiasAdd")
    y += skip
    return y


# ---- SkipLayerNormalization -----------------------------------------------------------------------

def _check_hidden(v: Array | None, h: int, what: str, op: str) -> None:
    if v is not None and (v.ndim != 1 or v.shape[0] != h):
        raise ValueError(f"{op}'s {what} must be 1-D of the hidden size {h} (the input's last dimension), "
                         f"got {v.shape}")


def _skip_sum(x: Array, skip: Array, bias: Array | None, gamma: Array, beta: Array | None, op: str) -> Array:
    """input + skip (+ bias), with onnxruntime's checks of the shapes; float32 for 16-bit floats
    (onnxruntime widens them, sums and normalises, and rounds the outputs once)."""
    if x.ndim not in (2, 3):
        raise ValueError(f"{op}'s input must be 2-D or 3-D (batch, sequence, hidden), got {x.shape}")
    if skip is None or gamma is None:
        raise ValueError(f"{op} needs its skip (input 1) and gamma (input 2)")
    if skip.shape != x.shape and not (x.ndim == 3 and skip.shape in ((1, *x.shape[1:]), x.shape[1:])):
        raise ValueError(f"{op}'s skip must have the input's shape {x.shape}, or for a 3-D input its last two "
                         f"dimensions ((1, S, H) or (S, H)), got {skip.shape}")
    h = x.shape[-1]
    _check_hidden(gamma, h, "gamma", op)
    _check_hidden(beta, h, "beta", op)
    _check_hidden(bias, h, "bias", op)
    if x.dtype.itemsize < 4:
        x, skip = x.astype(_F32), skip.astype(_F32)
        bias = None if bias is None else bias.astype(_F32)
    s = x + skip
    if bias is not None:
        s += bias
    return s


def _wide(v: Array | None, s: Array) -> Array | None:
    """A parameter in the working type of the sum ``s``."""
    return None if v is None else v.astype(s.dtype, copy=False)


def _skip_outputs(y: Array, mean: Array | None, inv: Array | None, s: Array, n: int, dtype: np.dtype
                  ) -> Array | tuple:
    y = y.astype(dtype, copy=False)
    if n <= 1:
        return y
    shape = (*s.shape[:-1], 1)
    stats = (np.zeros(shape, _F32) if mean is None else np.asarray(mean, _F32).reshape(shape),
             np.asarray(inv, _F32).reshape(shape))
    return (y, *stats, s.astype(dtype, copy=False))[:n]


@kernel("SkipLayerNormalization", since=1, domain=DOMAIN, output_count=True)
def skip_layer_normalization(input, skip, gamma, beta=None, bias=None, *, epsilon=1e-12, _n_outputs=1):
    s = _skip_sum(input, skip, bias, gamma, beta, "SkipLayerNormalization")
    g, b = _wide(gamma, s), _wide(beta, s)
    if _n_outputs <= 1:
        return layer_normalization(s, g, b, axis=-1, epsilon=epsilon, _n_outputs=1).astype(input.dtype, copy=False)
    y, mean, inv = layer_normalization(s, g, b, axis=-1, epsilon=epsilon, _n_outputs=3)
    return _skip_outputs(y, mean, inv, s, _n_outputs, input.dtype)


def _inv_rms(x: Array, axis: int, epsilon: float) -> Array:
    """1 / sqrt(mean(x^2) + epsilon) per row of the axes from ``axis`` on, in the stash type."""
    w = _layer_rows(x, axis)
    inv = np.mean(np.square(w), axis=1) if w.size else np.zeros(w.shape[0], w.dtype)
    inv += epsilon
    np.sqrt(inv, out=inv)
    return np.reciprocal(inv, out=inv)


@kernel("SkipSimplifiedLayerNormalization", since=1, domain=DOMAIN, output_count=True)
def skip_simplified_layer_normalization(input, skip, gamma, bias=None, *, epsilon=1e-12, _n_outputs=1):
    s = _skip_sum(input, skip, bias, gamma, None, "SkipSimplifiedLayerNormalization")
    y = rms_normalization(s, _wide(gamma, s), axis=-1, epsilon=epsilon)
    if _n_outputs <= 1:
        return y.astype(input.dtype, copy=False)
    return _skip_outputs(y, None, _inv_rms(s, s.ndim - 1, epsilon), s, _n_outputs, input.dtype)


# ---- the ONNX-domain registrations onnxruntime makes from opset 1 --------------------------------
# Their schemas type Y by the scale (X: T, scale: V -> Y: V): onnxruntime's CPU kernels compute in
# float32 and write V, so a float16 X with a float32 scale gives float32 rounded once.


def _as_wide_as(x: Array, scale: Array) -> Array:
    """``x`` in the scale's type where that is the wider float, so Y is rounded once, to V."""
    wide = np.result_type(x.dtype, scale.dtype)
    return x if wide == x.dtype else x.astype(wide)


@kernel("SimplifiedLayerNormalization", since=1, output_count=True)
def simplified_layer_normalization(X, scale, *, axis=-1, epsilon=1e-5, stash_type=1, _n_outputs=1):
    """RMS normalisation over the axes from ``axis`` on: Y = X / sqrt(mean(X^2) + epsilon) x scale in
    the scale's type, and 1 / sqrt(mean(X^2) + epsilon) (float32, X's shape with those axes 1) when
    asked."""
    if X.ndim == 0:
        raise ValueError("SimplifiedLayerNormalization needs an input of at least one dimension")
    axis = axis_in(axis, X.ndim)
    y = rms_normalization(_as_wide_as(X, scale), scale, axis=axis, epsilon=epsilon).astype(scale.dtype, copy=False)
    if _n_outputs <= 1:
        return y
    inv = _inv_rms(X, axis, epsilon).astype(_F32, copy=False)
    return y, inv.reshape(X.shape[:axis] + (1,) * (X.ndim - axis))


@kernel("LayerNormalization", since=1, output_count=True)
def layer_normalization_1(X, scale, B=None, *, axis=-1, epsilon=1e-5, stash_type=1, _n_outputs=3):
    """onnxruntime's LayerNormalization, an ONNX-domain op from opset 1: its LayerNorm fusion writes it
    into opset 13/14 models, which onnx only defines from 17. onnx's arithmetic, but Y takes the
    scale's type (its schema: X: T, scale: V -> Y: V), as Olive's and the fp16 converter's mixed
    models have it; from 17, onnx's own op has one type for both."""
    out = layer_normalization(_as_wide_as(X, scale), scale, B, axis=axis, epsilon=epsilon, stash_type=stash_type,
                              _n_outputs=_n_outputs)
    if _n_outputs <= 1:
        return out.astype(scale.dtype, copy=False)
    return (out[0].astype(scale.dtype, copy=False), *out[1:])
