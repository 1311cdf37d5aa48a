"""User images in, videos out: first frames read from files (`sfv sample --image`, an upload to `sfv serve`), the
input forms the pipelines accept, and the output types they return."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from sfv.errors import InputError, first_line


def load_image(path: str | os.PathLike, max_pixels: int | None = None, max_bytes: int | None = None,
               source: str = "--image") -> PIL.Image.Image:
    """A first frame as an RGB PIL image, or an InputError that says what is wrong and what to give instead (`source`:
    how the reader gives one, e.g. "--image" or "upload"). Limits: `max_bytes` of file, `max_pixels` read from the
    header before any pixel is decoded, so a huge image costs nothing."""
    path = Path(path)
    name = path.name
    fix = f"{'upload' if source == 'upload' else 'give ' + source} a PNG, JPEG or WebP"
    try:
        size = path.stat().st_size
    except OSError:
        raise InputError(f"The image '{name}' does not exist; {fix}") from None
    if max_bytes is not None and size > max_bytes:
        raise InputError(f"The file '{name}' is too large ({size / 2**20:.1f} MiB); {fix} of at most {max_bytes / 2**20:.0f} MiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)  # the pixel limit below is ours
            with PIL.Image.open(path) as im:
                width, height = im.size
                if max_pixels is not None and width * height > max_pixels:
                    raise InputError(f"The image '{name}' is too large: {width}×{height} is {width * height / 1e6:.2f} megapixels "
                                     f"and this server takes at most {max_pixels / 1e6:.2f} (sfv serve --max-pixels); downscale it")
                return im.convert("RGB")  # decodes (frame 0 of an animation); a truncated file fails here
    except InputError:
        raise  # ValueErrors too: not to be reworded below
    except PIL.Image.DecompressionBombError:
        raise InputError(f"The image '{name}' is too large: over {2 * PIL.Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; "
                         f"{fix}{f' of at most {max_pixels / 1e6:.2f} megapixels' if max_pixels else ''}") from None
    except PIL.UnidentifiedImageError:  # its message is the full path (an upload's: the server's): nothing for the reader
        raise InputError(f"The file '{name}' is not an image that can be read; {fix}") from None
    except (OSError, ValueError, SyntaxError) as e:  # a damaged image (truncated, bad chunks)
        raise InputError(f"The file '{name}' is not an image that can be read ({first_line(e)}); {fix}") from None


def fit_size(width: int, height: int, multiple: int) -> tuple[int, int]:
    """(width, height) rounded down to whole multiples of `multiple` (the VAE's scale factor), at least one each."""
    return max(multiple, width // multiple * multiple), max(multiple, height // multiple * multiple)


def check_frame_size(name: str, width: int, height: int, multiple: int) -> None:
    """A first frame whose size the video takes: both sides must be multiples of the VAE's scale factor."""
    if width < multiple or height < multiple or width % multiple or height % multiple:
        fit = "×".join(map(str, fit_size(width, height, multiple)))
        raise InputError(f"The image '{name}' has an unsupported size, {width}×{height}: the video has the first frame's size and "
                         f"this model needs both sides in multiples of {multiple} (its VAE's scale factor); "
                         f"crop or resize it to {fit}")



def check_output_type(output_type: str) -> None:
    if output_type not in ("np", "pt", "pil", "latent"):
        raise InputError(f"output_type must be 'np', 'pt', 'pil' or 'latent', not {output_type!r}")


def as_pipeline_image(image):
    """Normalise user images to what the stock pipeline accepts: PIL, list of PIL, or [B, 3, H, W] in [0, 1].

    numpy uint8 HWC / BHWC become PIL images (so they take exactly the PIL path); float numpy in [0, 1]
    and [3, H, W] tensors become [B, 3, H, W] tensors.
    """
    if isinstance(image, PIL.Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, (list, tuple)) and image and all(isinstance(i, PIL.Image.Image) for i in image):
        return [i.convert("RGB") if i.mode != "RGB" else i for i in image]
    if isinstance(image, np.ndarray):
        arr = image[None] if image.ndim == 3 else image
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise InputError(f"numpy images must be HWC or BHWC with 3 channels, got shape {image.shape}")
        if arr.dtype == np.uint8:
            pils = [PIL.Image.fromarray(a) for a in arr]
            return pils[0] if image.ndim == 3 else pils
        image = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(0, 3, 1, 2)
    if isinstance(image, torch.Tensor):
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4 or image.shape[1] != 3:
            raise InputError(f"tensor images must be [3, H, W] or [B, 3, H, W], got shape {tuple(image.shape)}")
        if image.min() < 0 or image.max() > 1:
            raise InputError("tensor/float images must have values in [0, 1]; rescale with (x + 1) / 2 if they are in [-1, 1]")
        return image
    raise InputError(f"unsupported image type {type(image).__name__}; pass a PIL image, a numpy array or a tensor")
