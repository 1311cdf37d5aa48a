"""User images in, videos out: the input forms the pipelines accept and the output types they return."""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

from sfv.errors import InputError


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
