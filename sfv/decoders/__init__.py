"""The decoding slot: latents [B, F, C, h, w] -> frames [B, 3, F, H, W] in [-1, 1], float32.

A decoder is a callable `decoder(latents, decode_chunk_size) -> frames` built from the teacher's VAE by name.
The teacher, the pipeline (SFVPipeline.decoder), the export (sfv.json) and the bench select it by that name;
a new decoder (e.g. a fast temporal decoder) is one file here plus one entry in DECODERS.
"""

from __future__ import annotations

from typing import Callable

import torch

Decoder = Callable[[torch.Tensor, "int | None"], torch.Tensor]


def _vae(vae) -> Decoder:
    from sfv.decoders.vae import VAEDecoder

    return VAEDecoder(vae)


DECODERS: dict[str, Callable[..., Decoder]] = {"vae": _vae}  # name -> builder(vae)


def build_decoder(name: str, vae) -> Decoder:
    from sfv.errors import InputError

    if name not in DECODERS:
        raise InputError(f"decoder must be one of {', '.join(DECODERS)}, not {name!r}")
    return DECODERS[name](vae)
