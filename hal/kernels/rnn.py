"""Recurrent kernels: RNN, GRU and LSTM (forward / reverse / bidirectional, every opset form).

The input projection ``X @ W^T + Wb`` of all time steps is one matmul per direction; only the
recurrence ``H @ R^T`` loops over time. ``sequence_lens`` freezes a batch row's state once its
sequence has ended (and zeroes its Y rows there); a reverse pass starts each row at its own last
step. float16 / bfloat16 run in float32 and are rounded once at the end. A numeric policy passes
``_round_operand`` (``hal.numerics.INNER_PRODUCT_OPS``): each step's state is rounded by it before it
meets R, as a matrix unit reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hal.kernels.registry import kernel

Array = np.ndarray
Act = Callable[[Array], Array]


def _as_is(x: Array) -> Array:
    return x


def _sigmoid(x: Array) -> Array:
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def _make(name: str, alpha: float, beta: float) -> Act:
    return {
        "relu": lambda x: np.maximum(x, 0),
        "tanh": np.tanh,
        "sigmoid": _sigmoid,
        "affine": lambda x: alpha * x + beta,
        "leakyrelu": lambda x: np.where(x < 0, alpha * x, x),
        "thresholdedrelu": lambda x: np.where(x > alpha, x, 0),
        "scaledtanh": lambda x: alpha * np.tanh(beta * x),
        "hardsigmoid": lambda x: np.clip(alpha * x + beta, 0, 1),
        "elu": lambda x: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),
        "softsign": lambda x: x / (1 + np.abs(x)),
        "softplus": lambda x: np.logaddexp(x, 0),
    }[name]


# (uses alpha, uses beta, default alpha, default beta), as onnxruntime reads activation_alpha / _beta
_PARAMS = {
    "affine": (True, True, 1.0, 0.0),
    "leakyrelu": (True, False, 0.01, 0.0),
    "thresholdedrelu": (True, False, 1.0, 0.0),
    "scaledtanh": (True, True, 1.0, 1.0),
    "hardsigmoid": (True, True, 0.2, 0.5),
    "elu": (True, False, 1.0, 0.0),
}
_KNOWN = set(_PARAMS) | {"relu", "tanh", "sigmoid", "softsign", "softplus"}


def _activations(names: Sequence[str] | None, default: list[str], dirs: int, alphas: Sequence[float] | None,
                 betas: Sequence[float] | None) -> list[list[Act]]:
    """Per direction, the cell's activation functions; alpha / beta lists are consumed in order by the
    functions that take them."""
    per_dir = len(default)
    names = list(names) if names else default * dirs
    if len(names) == per_dir and dirs == 2:
        names = names * 2
    if len(names) != per_dir * dirs:
        raise ValueError(f"expected {per_dir * dirs} activations, got {len(names)}: {names}")
    a_iter, b_iter = iter(alphas or []), iter(betas or [])
    fns = []
    for name in names:
        key = name.lower()
        if key not in _KNOWN:
            raise ValueError(f"unsupported recurrent activation {name!r}")
        uses_a, uses_b, da, db = _PARAMS.get(key, (False, False, 0.0, 0.0))
        a = next(a_iter, da) if uses_a else da
        b = next(b_iter, db) if uses_b else db
        fns.append(_make(key, float(a), float(b)))
    return [fns[d * per_dir:(d + 1) * per_dir] for d in range(dirs)]


def _clipper(clip: float | None) -> Act:
    if clip is None:
        return lambda x: x
    return lambda x: np.clip(x, -clip, clip)


def _recurrent(kind: str, X, W, R, B, sequence_lens, initial_h, initial_c, P, *, activation_alpha,
               activation_beta, activations, clip, direction, hidden_size, input_forget, layout,
               linear_before_reset, n_outputs, round_operand=None):
    gates, default_acts = {"RNN": (1, ["Tanh"]), "GRU": (3, ["Sigmoid", "Tanh"]),
                           "LSTM": (4, ["Sigmoid", "Tanh", "Tanh"])}[kind]
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"{kind} direction must be forward, reverse or bidirectional, got {direction!r}")
    dirs = 2 if direction == "bidirectional" else 1
    if W.shape[0] != dirs:
        raise ValueError(f"{kind} direction {direction!r} needs {dirs} weight sets, W has {W.shape[0]}")
    hs = R.shape[-1]
    if hidden_size is not None and hidden_size != hs:
        raise ValueError(f"{kind} hidden_size={hidden_size} but R implies {hs}")
    work = np.float64 if X.dtype == np.float64 else np.float32
    x = X.astype(work)
    if layout:
        x = x.swapaxes(0, 1)
        initial_h = None if initial_h is None else initial_h.swapaxes(0, 1)
        initial_c = None if initial_c is None else initial_c.swapaxes(0, 1)
    steps, batch = x.shape[:2]
    acts = _activations(activations, default_acts, dirs, activation_alpha, activation_beta)
    cl = _clipper(clip)
    # a matrix unit's reading of the state it multiplies (``hal.numerics.INNER_PRODUCT_OPS``: X, W and R
    # arrive rounded; h is made here, step by step)
    rd = round_operand or _as_is
    lens = None if sequence_lens is None else np.asarray(sequence_lens).astype(np.int64).reshape(batch, 1)

    y = np.zeros((steps, dirs, batch, hs), dtype=work)
    y_h = np.empty((dirs, batch, hs), dtype=work)
    y_c = np.empty((dirs, batch, hs), dtype=work)
    for d in range(dirs):
        w, r = W[d].astype(work), R[d].astype(work)
        wb = rb = np.zeros(gates * hs, dtype=work)
        if B is not None:
            wb, rb = B[d, :gates * hs].astype(work), B[d, gates * hs:].astype(work)
        xw = x @ w.T + wb  # (T, N, gates * H): the input projection of every step at once
        h = np.zeros((batch, hs), work) if initial_h is None else initial_h[d].astype(work)
        c = np.zeros((batch, hs), work) if initial_c is None else initial_c[d].astype(work)
        if kind == "LSTM" and P is not None:
            p_i, p_o, p_f = np.split(P[d].astype(work), 3)
        else:
            p_i = p_o = p_f = None
        f = acts[d]
        reverse = direction == "reverse" or d == 1
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            if kind == "RNN":
                h_new = f[0](cl(xw[t] + rd(h) @ r.T + rb))
            elif kind == "GRU":
                xz, xr, xh = np.split(xw[t], 3, axis=-1)
                rz, rr, rh = np.split(r, 3)
                bz, br, bh = np.split(rb, 3)
                hr = rd(h)
                z = f[0](cl(xz + hr @ rz.T + bz))
                rg = f[0](cl(xr + hr @ rr.T + br))
                if linear_before_reset:
                    hh = f[1](cl(xh + rg * (hr @ rh.T + bh)))
                else:
                    hh = f[1](cl(xh + rd(rg * h) @ rh.T + bh))
                h_new = (1 - z) * hh + z * h
            else:
                gi, go, gf, gc = np.split(xw[t] + rd(h) @ r.T + rb, 4, axis=-1)
                if p_i is not None:
                    gi, gf = gi + p_i * c, gf + p_f * c
                i = f[0](cl(gi))
                fg = 1 - i if input_forget else f[0](cl(gf))
                c_new = fg * c + i * f[1](cl(gc))
                if p_o is not None:
                    go = go + p_o * c_new
                h_new = f[0](cl(go)) * f[2](c_new)
            if lens is None:
                h = h_new
                y[t, d] = h_new
                if kind == "LSTM":
                    c = c_new
            else:
                live = t < lens  # (N, 1): rows whose sequence still runs at step t
                h = np.where(live, h_new, h)
                y[t, d] = np.where(live, h_new, 0)
                if kind == "LSTM":
                    c = np.where(live, c_new, c)
        y_h[d], y_c[d] = h, c
    if layout:
        y, y_h, y_c = y.transpose(2, 0, 1, 3), y_h.swapaxes(0, 1), y_c.swapaxes(0, 1)
    outs = [y.astype(X.dtype), y_h.astype(X.dtype)]
    if kind == "LSTM":
        outs.append(y_c.astype(X.dtype))
    return tuple(outs[:max(n_outputs, 1)])


@kernel("RNN", since=1, output_count=True)
def rnn(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
        activations=None, clip=None, direction="forward", hidden_size=None, layout=0, output_sequence=0,
        _n_outputs=2, _round_operand=None):
    """Ht = f(Xt W^T + Ht-1 R^T + Wb + Rb); outputs Y (all steps) and Y_h (last state)."""
    return _recurrent("RNN", X, W, R, B, sequence_lens, initial_h, None, None, activation_alpha=activation_alpha,
                      activation_beta=activation_beta, activations=activations, clip=clip, direction=direction,
                      hidden_size=hidden_size, input_forget=0, layout=layout, linear_before_reset=0,
                      n_outputs=_n_outputs, round_operand=_round_operand)


@kernel("GRU", since=1, output_count=True)
def gru(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
        activations=None, clip=None, direction="forward", hidden_size=None, layout=0, linear_before_reset=0,
        output_sequence=0, _n_outputs=2, _round_operand=None):
    """Gates z, r, h (in that order in W, R, B); outputs Y and Y_h."""
    return _recurrent("GRU", X, W, R, B, sequence_lens, initial_h, None, None, activation_alpha=activation_alpha,
                      activation_beta=activation_beta, activations=activations, clip=clip, direction=direction,
                      hidden_size=hidden_size, input_forget=0, layout=layout,
                      linear_before_reset=linear_before_reset, n_outputs=_n_outputs,
                      round_operand=_round_operand)


@kernel("LSTM", since=1, output_count=True)
def lstm(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, *, activation_alpha=None,
         activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None, input_forget=0,
         layout=0, output_sequence=0, _n_outputs=3, _round_operand=None):
    """Gates i, o, f, c (in that order in W, R, B; peepholes P in order i, o, f); outputs Y, Y_h, Y_c."""
    return _recurrent("LSTM", X, W, R, B, sequence_lens, initial_h, initial_c, P,
                      activation_alpha=activation_alpha, activation_beta=activation_beta, activations=activations,
                      clip=clip, direction=direction, hidden_size=hidden_size, input_forget=input_forget,
                      layout=layout, linear_before_reset=0, n_outputs=_n_outputs, round_operand=_round_operand)
