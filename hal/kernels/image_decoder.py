"""ImageDecoder: an encoded image (JPEG, PNG, BMP, TIFF, WebP, PNM, JPEG 2000, ...) to pixels.

The codecs are Pillow's: decoding a dozen formats correctly is a library's job, not ours, and
Pillow ships every one of them in its wheels. It is an optional dependency (``pip install
'hal-sdk[image]'``; the dev extra has it), imported on the first call, since no other op needs it.

The image's size comes from its header, a few bytes of the run's data: a small PNG can unpack to
gigapixels. The header is read first and the decoded size checked against ``max_memory`` before
any pixel is decoded.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from hal import limits
from hal.errors import ResourceError, UnsupportedOpError
from hal.kernels.registry import KernelContext, kernel

#: ImageDecoder's pixel formats -> Pillow's mode to convert to, and the output's channels
PIXEL_FORMATS = {"RGB": ("RGB", 3), "BGR": ("RGB", 3), "Grayscale": ("L", 1)}
#: the most bytes a pixel takes in the mode Pillow decodes into (RGBA, CMYK, 32-bit I and F)
DECODED_PIXEL_BYTES = 4


def _pillow(node: str) -> Any:
    try:
        import PIL.Image
    except ImportError:
        raise UnsupportedOpError("ImageDecoder decodes images with Pillow, which is not installed",
                                 where=f"node {node!r}", nodes=[(node, "ImageDecoder", "Pillow not installed")],
                                 hint="pip install 'hal-sdk[image]' (or pillow)") from None
    return PIL.Image


@kernel("ImageDecoder", since=20, context=True)
def image_decoder(encoded_stream: np.ndarray, pixel_format: str = "RGB", *, _ctx: KernelContext) -> np.ndarray:
    """(H, W, 3) uint8 for RGB and BGR, (H, W, 1) for Grayscale, whatever the image's own mode
    (palette, alpha, 16-bit, CMYK are converted as Pillow converts them); an animation's first frame."""
    if pixel_format not in PIXEL_FORMATS:
        raise ValueError(f"pixel_format={pixel_format!r}: ImageDecoder takes {', '.join(PIXEL_FORMATS)}")
    image_module = _pillow(_ctx.node)
    data = np.ascontiguousarray(encoded_stream, dtype=np.uint8).tobytes()
    try:
        img = image_module.open(io.BytesIO(data))  # reads the header only
    except image_module.DecompressionBombError as e:  # Pillow's own bound, past twice MAX_IMAGE_PIXELS
        raise ResourceError(f"ImageDecoder refused the image before decoding it: {e}", where=f"node {_ctx.node!r}",
                            hint="raise PIL.Image.MAX_IMAGE_PIXELS if the image is meant to be this large"
                            ) from None
    except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
        raise ValueError(f"the encoded stream ({len(data):,} bytes, starting {data[:8].hex(' ') or 'empty'}) is "
                         f"not an image Pillow can read: {e}") from None
    mode, channels = PIXEL_FORMATS[pixel_format]
    width, height = img.size
    limits.check_alloc(f"the decoded {img.format or 'image'} ({width}x{height}, mode {img.mode}; up to "
                       f"{DECODED_PIXEL_BYTES} bytes a pixel as Pillow decodes it, {channels} as output)",
                       [height, width, DECODED_PIXEL_BYTES + channels], np.uint8, where=f"node {_ctx.node!r}")
    try:
        pixels = np.array(img if img.mode == mode else img.convert(mode), dtype=np.uint8)  # writable
    except (OSError, SyntaxError, ValueError) as e:  # a header that parses, then a truncated or corrupt body
        raise ValueError(f"the {img.format or 'image'} stream is corrupt ({len(data):,} bytes): {e}") from None
    if channels == 1:
        return pixels.reshape(height, width, 1)
    if pixel_format == "BGR":
        return np.ascontiguousarray(pixels[:, :, ::-1])
    return pixels


__all__ = ["DECODED_PIXEL_BYTES", "PIXEL_FORMATS", "image_decoder"]
