"""Images stored as a viewer shows them: upright, 8-bit RGB, JPEG bytes kept when already right.

Runs in the converter's worker processes, so it imports only Pillow and NumPy.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

EXIF_ORIENTATION = 0x0112
JPEG_QUALITY = 95
_JPEG_FORMATS = {
    "JPEG",
    "MPO",
}  # MPO: the JPEG that many phones write, first frame readable as JPEG


class ImageError(Exception):
    """The bytes are not an image Pillow can fully decode (its message says why)."""


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for a TF Example.

    Args:
        encoded: JPEG or PNG bytes of the upright 8-bit RGB image.
        format: "jpeg" or "png".
        width: width of the upright image.
        height: height of the upright image.
        changes: what was done to the original (empty: the original bytes, unchanged).
        orientation: the EXIF orientation that was applied (1: the file was stored upright).
    """

    encoded: bytes
    format: str
    width: int
    height: int
    changes: tuple[str, ...]
    orientation: int = 1


def decode_image(data: bytes) -> Image.Image:
    """Decode `data` fully, refusing images over Pillow's pixel limit (decompression bombs).

    Raises:
        ImageError: not a readable image, or too many pixels (then it is one skip).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        # Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that: both are one skip.
        raise ImageError(f"{err} Such an image is skipped; downscale it to train on it.") from err
    except UnidentifiedImageError:  # Pillow's message names its in-memory buffer, not the file
        raise ImageError("not an image format Pillow reads") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(str(err) or type(err).__name__) from err
    return image


def prepare_image(data: bytes) -> PreparedImage:
    """Decode `data` fully, apply EXIF orientation, convert to 8-bit RGB, re-encode if needed.

    JPEGs that are RGB and upright are passed through byte for byte; other JPEGs are re-encoded as
    JPEG (quality 95); every other format becomes a lossless PNG.

    Raises:
        ImageError: the data is not a readable image (truncated, corrupt, unknown format).
    """
    image = decode_image(data)
    source_format = image.format or ""
    try:
        orientation = int(image.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(str(err) or type(err).__name__) from err

    changes: list[str] = []
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
        changes.append(f"exif_orientation_{orientation}")
    if image.mode != "RGB":
        changes.append(f"mode_{image.mode}")
        image = to_rgb8(image)

    width, height = image.size
    if source_format in _JPEG_FORMATS and not changes:
        return PreparedImage(data, "jpeg", width, height, (), orientation)
    out = io.BytesIO()
    if source_format in _JPEG_FORMATS:
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
        fmt = "jpeg"
    else:
        image.save(out, format="PNG", compress_level=3)
        fmt = "png"
        changes.append(f"format_{source_format.lower() or 'unknown'}")
    return PreparedImage(out.getvalue(), fmt, width, height, tuple(changes), orientation)


def to_rgb8(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited onto white."""
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        return Image.fromarray(_to_uint8(np.asarray(image), mode), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _to_uint8(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16-bit, 32-bit integer or float grey levels to 0..255."""
    values = pixels.astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if mode.startswith("I;16"):
        top = 65535.0
    elif mode == "F":
        top = 1.0 if peak <= 1.0 else 255.0
    else:  # "I": 32-bit container, usually holding 16-bit data
        top = 65535.0 if peak > 255 else 255.0
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
