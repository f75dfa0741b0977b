"""Masks for inpainting and canvases for outpainting: plain pixel work (PIL and numpy), no model.

A mask is white (or opaque, for a painted layer with transparency) where the image is redrawn. It must
be the start image's size: painted over another picture it would redraw the wrong place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engines.base import MAX_INPUT_PIXELS, MAX_SOURCE_SIDE, MAX_UPSCALED_SIDE, ImageParams, InputError

ORIENTATION = 0x0112  # the EXIF tag saying how a stored image is turned


def upright(im):
    """A loaded image turned as its EXIF orientation says (a phone's photo is stored sideways; the browser
    shows it upright); an image with no turn is returned as it is (no copy)."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(im) if im.getexif().get(ORIENTATION, 1) != 1 else im


def check_pixels(size: tuple[int, int], named: str) -> None:
    """Refuse an image claiming more than MAX_INPUT_PIXELS, from its header, before it is decoded."""
    width, height = size
    if width * height > MAX_INPUT_PIXELS:
        raise InputError(
            f"{named} is {width:,}×{height:,} pixels ({width * height / 1e6:.0f} megapixels); "
            f"images up to {MAX_INPUT_PIXELS // 1_000_000} megapixels are read."
        )


def read_image(path: str, what: str):
    """Any image PIL reads, loaded and turned upright as its EXIF orientation says (a phone's photo is stored
    sideways; the browser shows it upright, and a mask is painted over it so); a file that is not an image is an
    InputError naming ``what`` it was for."""
    from PIL import Image, UnidentifiedImageError

    name = Path(path).name
    try:
        with Image.open(path) as im:
            check_pixels(im.size, f"The {what} {name}")
            im.load()
            turned = upright(im)
            return turned if turned is not im else im.copy()  # a copy outlives the closed file
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise InputError(f"The {what} {name} is not an image that can be read (PNG, JPEG, WebP…).") from e
    except OSError as e:
        raise InputError(f"The {what} {name} could not be read as an image: {e}") from e


def open_mask(path: str, size: tuple[int, int]):
    """The mask as L (255: redraw), from its alpha when it has one (a painted layer), else its brightness."""
    image = read_image(path, "mask")
    if image.size != size:
        raise InputError(
            f"The mask is {image.size[0]}×{image.size[1]} but the start image is {size[0]}×{size[1]}: "
            "paint the mask over the start image itself."
        )
    alpha = None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = image.convert("RGBA").getchannel("A")
    if alpha is not None and alpha.getextrema()[0] < 255:
        mask = alpha
    else:  # no transparency at all (an opaque black-and-white image saved with an alpha channel): its brightness
        mask = image.convert("L")
    return mask.point(lambda v: 255 if v >= 128 else 0)


def check_coverage(mask) -> None:
    low, high = mask.getextrema()
    if high == 0:
        raise InputError("The mask is empty (all black): paint the part of the image to redraw.")
    if low == 255:
        raise InputError(
            "The mask covers the whole image (all white): that redraws everything; use Image to image or "
            "text to image instead, or paint only the part to change."
        )


def extend_canvas(image, mask, params: ImageParams):
    """Outpainting: the image with a strip added on each chosen side, filled by stretching its edge pixels
    (a starting point the model repaints), and the mask grown to cover the strips plus ``mask_blur`` pixels
    of the old edge, so the seam is redrawn too."""
    import numpy as np
    from PIL import Image

    px = params.outpaint_pixels
    left, right = px * ("left" in params.outpaint), px * ("right" in params.outpaint)
    top, bottom = px * ("up" in params.outpaint), px * ("down" in params.outpaint)
    pixels = np.pad(np.asarray(image.convert("RGB")), ((top, bottom), (left, right), (0, 0)), mode="edge")
    old = np.asarray(mask) if mask is not None else np.zeros((image.height, image.width), np.uint8)
    grown = np.pad(old, ((top, bottom), (left, right)), constant_values=255)
    seam = params.mask_blur
    height, width = grown.shape
    if left:
        grown[:, : left + seam] = 255
    if right:
        grown[:, width - right - seam :] = 255
    if top:
        grown[: top + seam] = 255
    if bottom:
        grown[height - bottom - seam :] = 255
    return Image.fromarray(pixels), Image.fromarray(grown)


def blur(mask, radius: int):
    from PIL import ImageFilter

    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius else mask


@dataclass(frozen=True)
class InpaintJob:
    """What the inpaint pipeline gets: the canvas, the softened mask, the size it draws at, and the padding
    of an "only masked" crop (None: the whole canvas at width×height)."""

    image: object  # PIL RGB
    mask: object  # PIL L, blurred
    width: int
    height: int
    padding: int | None


def prepare(params: ImageParams) -> InpaintJob:
    """The start image and mask, checked, outpainted and blurred, at the size the run needs."""
    from PIL import Image

    image = read_image(params.init_image, "start image").convert("RGB")
    mask = open_mask(params.mask_image, image.size) if params.mask_image else None
    if mask is not None and not params.outpaint:
        check_coverage(mask)
    if params.inpaint_only_masked:
        if max(image.size) > MAX_SOURCE_SIDE:
            raise InputError(f"The start image is {image.width}×{image.height}; inpainting takes at most {MAX_SOURCE_SIDE} px a side.")
    elif image.size != (params.width, params.height):
        image = image.resize((params.width, params.height), Image.Resampling.LANCZOS)
        if mask is not None:
            mask = mask.resize(image.size, Image.Resampling.NEAREST)
    if params.outpaint:
        image, mask = extend_canvas(image, mask, params)
        if params.inpaint_only_masked and max(image.size) > MAX_SOURCE_SIDE:
            raise InputError(f"Outpainting makes {image.width}×{image.height}, past {MAX_SOURCE_SIDE} px a side.")
    if params.inpaint_only_masked:
        if max(image.size) * params.upscale > MAX_UPSCALED_SIDE:
            raise InputError(
                f"Upscaling {image.width}×{image.height} by {params.upscale:g} passes {MAX_UPSCALED_SIDE} px: choose a smaller factor."
            )
        return InpaintJob(image, blur(mask, params.mask_blur), params.width, params.height, params.inpaint_padding)
    return InpaintJob(image, blur(mask, params.mask_blur), image.width, image.height, None)


def overlay(original, result, mask):
    """Keep the original's pixels where the mask is black: a VAE round trip would change them slightly."""
    from PIL import Image

    return Image.composite(result.convert("RGB"), original, mask)
