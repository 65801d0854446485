"""Signal kernels: DFT, STFT, the Hann / Hamming / Blackman windows, MelWeightMatrix.

Signals carry a trailing axis of size 1 (real) or 2 (real, imaginary), as ONNX lays them out; the
transforms run through numpy.fft (complex64 below float64) and return the input's dtype. STFT frames the signal
with a strided window view and transforms every frame in one call.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto
from onnx.helper import tensor_dtype_to_np_dtype

from hal.kernels._axes import axis_in
from hal.kernels.registry import kernel

Array = np.ndarray


def _complex(x: Array) -> Array:
    """(..., 1 | 2) real layout to a complex array without the trailing axis.

    float64 signals transform in complex128, narrower ones in complex64 (numpy.fft keeps single
    precision), so float32 results carry float32 rounding, as single-precision runtimes do.
    """
    ctype = np.complex128 if x.dtype == np.float64 else np.complex64
    if x.shape[-1] == 1:
        return x[..., 0].astype(ctype)
    if x.shape[-1] == 2:
        return (x[..., 0] + 1j * x[..., 1]).astype(ctype)
    raise ValueError(f"a signal's last axis must be 1 (real) or 2 (complex), got {x.shape[-1]}")


def _interleaved(z: Array, dtype: np.dtype) -> Array:
    return np.stack([z.real, z.imag], axis=-1).astype(dtype)


def _dft(x: Array, length: int | None, axis: int, inverse: int, onesided: int) -> Array:
    axis = axis_in(axis, x.ndim)
    if axis == x.ndim - 1:
        raise ValueError("DFT: the axis cannot be the trailing real/imaginary axis")
    z = _complex(x)
    if inverse:
        if onesided:  # one-sided spectrum in, full real signal out (IRFFT)
            n = length if length is not None else 2 * (x.shape[axis] - 1)
            return np.fft.irfft(z, n=n, axis=axis)[..., None].astype(x.dtype)
        return _interleaved(np.fft.ifft(z, n=length, axis=axis), x.dtype)
    y = np.fft.fft(z, n=length, axis=axis)
    if onesided:
        y = np.take(y, np.arange(y.shape[axis] // 2 + 1), axis=axis)
    return _interleaved(y, x.dtype)


def _length(v: Array | None) -> int | None:
    if v is None or np.asarray(v).size == 0:
        return None
    return int(np.asarray(v).reshape(-1)[0])


@kernel("DFT", since=17)
def dft_17(input: Array, dft_length: Array | None = None, axis: int = 1, inverse: int = 0, onesided: int = 0
           ) -> Array:
    return _dft(input, _length(dft_length), axis, inverse, onesided)


@kernel("DFT", since=20)
def dft(input: Array, dft_length: Array | None = None, axis: Array | None = None, inverse: int = 0,
        onesided: int = 0) -> Array:
    a = _length(axis)
    return _dft(input, _length(dft_length), -2 if a is None else a, inverse, onesided)


@kernel("STFT", since=17)
def stft(signal: Array, frame_step: Array, window: Array | None = None, frame_length: Array | None = None,
         onesided: int = 1) -> Array:
    if signal.ndim == 2:  # [batch, length]: a real signal, as onnxruntime reads it (torch's TorchScript
        signal = signal[..., None]  # exporter writes torch.stft so; the spec asks for [batch, length, 1])
    step = int(np.asarray(frame_step).reshape(-1)[0])
    n_fft = _length(frame_length)
    if window is not None:
        window = np.asarray(window)
        span = window.shape[0]
        if n_fft is None:
            n_fft = span
    else:
        if n_fft is None:
            n_fft = signal.shape[1]
        span = n_fft
        window = np.ones(span)
    z = _complex(signal)  # (batch, length)
    frames = sliding_window_view(z, span, axis=1)[:, ::step]  # (batch, frames, span)
    y = np.fft.fft(frames * window.astype(z.real.dtype), n=n_fft, axis=-1)
    if onesided:
        y = y[..., : n_fft // 2 + 1]
    return _interleaved(y, signal.dtype)


# --- windows ---------------------------------------------------------------------------------------


def _window(size: Array, periodic: int, output_datatype: int, cosines: tuple[float, ...]) -> Array:
    """sum_k c_k cos(2 pi k n / N) with N = size (periodic) or size - 1 (symmetric), in float64, the
    cosine terms summed before the constant one, as onnx's reference and onnxruntime sum them: a
    Blackman window's peak is then exactly 1 (0.42 + 0.5 + 0.08 is 0.9999999999999999, which an
    integer output truncated to 0). A symmetric window of one point divides by 0: NaN, as there."""
    n_points = int(np.asarray(size).reshape(-1)[0])
    denom = n_points if periodic else n_points - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        phase = 2 * np.pi * np.arange(n_points, dtype=np.float64) / denom
    y = np.zeros(n_points, dtype=np.float64)
    for k, c in enumerate(cosines[1:], start=1):
        y += c * np.cos(k * phase)
    y += cosines[0]
    with np.errstate(invalid="ignore"):  # NaN to an integer type: the cast's own value, as there
        return y.astype(tensor_dtype_to_np_dtype(output_datatype))


@kernel("HannWindow", since=17)
def hann_window(size: Array, output_datatype: int = TensorProto.FLOAT, periodic: int = 1) -> Array:
    return _window(size, periodic, output_datatype, (0.5, -0.5))


@kernel("HammingWindow", since=17)
def hamming_window(size: Array, output_datatype: int = TensorProto.FLOAT, periodic: int = 1) -> Array:
    return _window(size, periodic, output_datatype, (25 / 46, -21 / 46))


@kernel("BlackmanWindow", since=17)
def blackman_window(size: Array, output_datatype: int = TensorProto.FLOAT, periodic: int = 1) -> Array:
    return _window(size, periodic, output_datatype, (0.42, -0.5, 0.08))


@kernel("MelWeightMatrix", since=17)
def mel_weight_matrix(num_mel_bins: Array, dft_length: Array, sample_rate: Array, lower_edge_hertz: Array,
                      upper_edge_hertz: Array, output_datatype: int = TensorProto.FLOAT) -> Array:
    """Triangular filters, evenly spaced on mel(f) = 2595 log10(1 + f / 700), peaking at 1."""
    n_mel = int(np.asarray(num_mel_bins).reshape(-1)[0])
    n_dft = int(np.asarray(dft_length).reshape(-1)[0])
    rate = int(np.asarray(sample_rate).reshape(-1)[0])
    n_bins = n_dft // 2 + 1
    lo = 2595 * np.log1p(np.asarray(lower_edge_hertz) / 700) / np.log(10)
    hi = 2595 * np.log1p(np.asarray(upper_edge_hertz) / 700) / np.log(10)
    mels = np.arange(n_mel + 2) * ((hi - lo) / (n_mel + 2)) + lo
    hertz = 700 * np.expm1(mels / 2595 * np.log(10))
    edges = (((n_dft + 1) * hertz) // rate).astype(np.int64)  # the bins of each triangle's corners
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    j = np.arange(n_bins)[:, None]
    rise_span, fall_span = center - left, right - center
    rising = np.where(rise_span == 0, (j == center).astype(np.float64),
                      np.where((j >= left) & (j <= center), (j - left) / np.where(rise_span, rise_span, 1), 0.0))
    falling = (j >= center) & (j < right)
    out = np.where(falling, (right - j) / np.where(fall_span, fall_span, 1), rising)
    return out.astype(tensor_dtype_to_np_dtype(output_datatype))
