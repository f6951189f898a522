"""Thumbnail rendering with Pillow: the standard sizes, crop and scale, animated WebP.

Everything here is blocking and CPU-bound: the media service calls :func:`render`
through ``trio.to_thread.run_sync`` behind a capacity limiter.

Sizes follow Synapse's and conduwuit's defaults: a request is rounded up to the
smallest of 32x32, 96x96, 320x240, 640x480 and 800x600 that holds it (bigger
requests get 800x600), so few variants are ever stored. ``crop`` fills the box
and cuts the overflow; ``scale`` fits the image inside the box keeping its
aspect ratio. Images are never enlarged: a small image gives a thumbnail of
at most its own size (cropped to the box's aspect ratio for ``crop``).

Decompression bombs are refused before any pixel is decoded: an image whose
header claims more than :data:`MAX_PIXELS` pixels is :class:`TooManyPixels`.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Literal

import attrs
from PIL import Image, ImageOps, ImageSequence

Method = Literal["crop", "scale"]

# Synapse's default max_image_pixels: 32 megapixels (e.g. 6500x4900).
MAX_PIXELS = 32_000_000
# Pillow refuses images past twice this with DecompressionBombError and warns past it;
# the warning is made an error too, so nothing above MAX_PIXELS is ever decoded.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

# An animated thumbnail decodes every frame: bound the frames and their total pixels.
MAX_FRAMES = 500
MAX_ANIMATED_PIXELS = MAX_PIXELS

# Only these decoders are ever used on uploaded bytes (no EPS/PDF via Ghostscript, no
# rarely used parsers).
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "AVIF")

JPEG_QUALITY = 80
WEBP_QUALITY = 80


@attrs.frozen
class ThumbSize:
    width: int
    height: int
    method: Method

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}"


TIERS = ((32, 32), (96, 96), (320, 240), (640, 480), (800, 600))
# The methods of the standard sizes, as Synapse and conduwuit configure them; a
# request's own method is used at the chosen size.
STANDARD_SIZES = (
    ThumbSize(32, 32, "crop"),
    ThumbSize(96, 96, "crop"),
    ThumbSize(320, 240, "scale"),
    ThumbSize(640, 480, "scale"),
    ThumbSize(800, 600, "scale"),
)


def standard_size(width: int, height: int, method: Method) -> ThumbSize:
    """The smallest standard box holding ``width`` x ``height`` (else the biggest)."""
    for tier_w, tier_h in TIERS:
        if width <= tier_w and height <= tier_h:
            return ThumbSize(tier_w, tier_h, method)
    tier_w, tier_h = TIERS[-1]
    return ThumbSize(tier_w, tier_h, method)


class NotAnImage(Exception):
    """The content cannot be decoded as an image we thumbnail."""


class TooManyPixels(Exception):
    """The image is larger than we agree to decode."""


@attrs.frozen
class Thumbnail:
    data: bytes
    content_type: str
    width: int
    height: int
    animated: bool = False


def output_size(source: tuple[int, int], size: ThumbSize) -> tuple[int, int]:
    """The thumbnail's dimensions for an image of ``source`` dimensions (never larger)."""
    src_w, src_h = source
    if size.method == "crop":
        if src_w >= size.width and src_h >= size.height:
            return size.width, size.height
        shrink = min(src_w / size.width, src_h / size.height)
        return max(1, int(size.width * shrink)), max(1, int(size.height * shrink))
    ratio = min(size.width / src_w, size.height / src_h, 1.0)
    return max(1, round(src_w * ratio)), max(1, round(src_h * ratio))


def probe(path: Path) -> tuple[int, int] | None:
    """An image's dimensions from its header, or ``None`` when it is not one."""
    try:
        with Image.open(path, formats=FORMATS) as im:
            return im.size
    except Exception:
        return None


def render(path: Path, size: ThumbSize, animated: bool) -> Thumbnail:
    """Make the thumbnail of the image at ``path``. Blocking; run it in a thread."""
    try:
        with Image.open(path, formats=FORMATS) as im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise TooManyPixels(f"{width}x{height}")
            if animated and _can_animate(im):
                return _animated(im, size)
            return _static(im, size)
    except TooManyPixels:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooManyPixels(str(exc)) from None
    except Exception as exc:  # Pillow raises many types for undecodable input
        raise NotAnImage(f"{type(exc).__name__}: {exc}") from None


def _can_animate(im: Image.Image) -> bool:
    if not getattr(im, "is_animated", False):
        return False
    frames = int(getattr(im, "n_frames", 1))
    width, height = im.size
    return frames <= MAX_FRAMES and frames * width * height <= MAX_ANIMATED_PIXELS


def _resize(im: Image.Image, size: ThumbSize) -> Image.Image:
    target = output_size(im.size, size)
    if size.method == "crop":
        return ImageOps.fit(im, target, Image.Resampling.LANCZOS)
    if target == im.size:
        return im.copy()
    return im.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )


def _static(im: Image.Image, size: ThumbSize) -> Thumbnail:
    source_format = im.format
    if source_format == "JPEG":
        # Let libjpeg decode at a reduced scale that is still >= the box: big photos
        # then cost a fraction of their full decode. (Rotation may swap the sides.)
        bound = max(size.width, size.height)
        im.draft("RGB", (bound, bound))
    oriented = ImageOps.exif_transpose(im)
    alpha = _has_alpha(oriented)
    pixels = oriented.convert("RGBA" if alpha else "RGB")
    thumb = _resize(pixels, size)
    out = io.BytesIO()
    if source_format == "JPEG" and not alpha:
        thumb.save(out, "JPEG", quality=JPEG_QUALITY)
        content_type = "image/jpeg"
    else:
        thumb.save(out, "PNG")
        content_type = "image/png"
    return Thumbnail(out.getvalue(), content_type, thumb.width, thumb.height)


def _animated(im: Image.Image, size: ThumbSize) -> Thumbnail:
    frames: list[Image.Image] = []
    durations: list[int] = []
    default_duration = int(im.info.get("duration") or 100)
    for frame in ImageSequence.Iterator(im):
        frames.append(_resize(frame.convert("RGBA"), size))
        durations.append(int(frame.info.get("duration") or default_duration))
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], duration=durations,
                   loop=int(im.info.get("loop", 0)), quality=WEBP_QUALITY)
    return Thumbnail(out.getvalue(), "image/webp", frames[0].width, frames[0].height,
                     animated=True)
