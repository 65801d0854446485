"""ImageDecoder beyond onnx's nine node cases (tests/kernels/test_kernels_misc.py runs those): the
image's own mode converted to the asked pixel format, a header that promises more pixels than
max_memory refused before decoding, bad streams and a missing Pillow as errors naming the node."""

from __future__ import annotations

import io
import struct
import sys
import zlib

import numpy as np
import pytest
from onnx import TensorProto, helper

import hal

PIL_Image = pytest.importorskip("PIL.Image")


def _model(pixel_format: str = "RGB") -> bytes:
    node = helper.make_node("ImageDecoder", ["stream"], ["pixels"], name="decode", pixel_format=pixel_format)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("stream", TensorProto.UINT8, [None])],
                          [helper.make_tensor_value_info("pixels", TensorProto.UINT8, [None, None, None])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString()


def _encode(img, fmt: str = "PNG") -> np.ndarray:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def _decode(stream: np.ndarray, pixel_format: str = "RGB", **kw) -> np.ndarray:
    return hal.InferenceSession(_model(pixel_format), **kw).run(None, {"stream": stream})[0]


def _gradient(mode: str):
    """A 5x7 image whose every pixel differs, so a flipped axis or channel shows."""
    rgb = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3) * 2
    return PIL_Image.fromarray(rgb, "RGB").convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "LA", "I;16"])
@pytest.mark.parametrize("pixel_format", ["RGB", "BGR", "Grayscale"])
def test_any_image_mode_becomes_the_asked_pixel_format(mode, pixel_format):
    img = _gradient(mode)
    got = _decode(_encode(img), pixel_format)
    want = np.asarray(img.convert("L" if pixel_format == "Grayscale" else "RGB"))
    if pixel_format == "Grayscale":
        want = want[:, :, None]
    elif pixel_format == "BGR":
        want = want[:, :, ::-1]
    assert got.dtype == np.uint8 and got.shape == (5, 7, 1 if pixel_format == "Grayscale" else 3)
    np.testing.assert_array_equal(got, want)
    assert got.flags.writeable and got.flags.c_contiguous


def _png_header(width: int, height: int) -> np.ndarray:
    """A PNG whose one data chunk holds 4 bytes: a header for the size check to read, no pixels behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return np.frombuffer(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"\x78\x9c\x03\x00")
                         + chunk(b"IEND", b""), dtype=np.uint8)


def test_a_header_promising_more_than_max_memory_is_refused_before_decoding():
    with pytest.raises(hal.ResourceError,
                       match=r"node 'decode'.*the decoded PNG \(4000x3000, mode RGB;.* would need 80.1 MiB"):
        _decode(_png_header(4000, 3000), max_memory=1 << 20)


def test_pillows_own_decompression_bomb_bound_is_a_resource_error():
    with pytest.raises(hal.ResourceError, match=r"node 'decode'.*decompression bomb"):
        _decode(_png_header(100_000, 100_000))


@pytest.mark.parametrize(("stream", "match"), [
    (np.frombuffer(b"not an image at all", dtype=np.uint8), r"not an image Pillow can read"),
    (np.zeros(0, dtype=np.uint8), r"\(0 bytes, starting empty\) is not an image"),
])
def test_a_stream_that_is_not_an_image_is_a_run_error_naming_the_node(stream, match):
    with pytest.raises(hal.RunError, match=rf"node 'decode'.*{match}"):
        _decode(stream)


def test_a_truncated_image_is_a_run_error():
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = _encode(PIL_Image.fromarray(noise), "JPEG")  # ~10 KB of scans behind a header of ~600 bytes
    with pytest.raises(hal.RunError, match=r"node 'decode'.*JPEG stream is corrupt"):
        _decode(whole[: len(whole) // 2])


def test_an_unknown_pixel_format_is_a_run_error():
    with pytest.raises(hal.RunError, match=r"pixel_format='CMYK': ImageDecoder takes RGB, BGR, Grayscale"):
        _decode(_encode(_gradient("RGB")), "CMYK")


def test_without_pillow_the_error_says_how_to_install_it(monkeypatch):
    stream = _encode(_gradient("RGB"))
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(hal.UnsupportedOpError,
                       match=r"node 'decode'.*Pillow, which is not installed.*hal-sdk\[image\]"):
        _decode(stream)
