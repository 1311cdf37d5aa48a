"""The decoding slot: latents [B, F, C, h, w] -> frames [B, 3, F, H, W] in [-1, 1], float32.

A decoder is a callable `decoder(latents, decode_chunk_size) -> frames` with a `name` and its network as `module`,
built by name from DECODERS:

    vae    the teacher's temporal VAE decoder, as the stock pipeline runs it (vae.py; the default)
    tiny   a fast temporal decoder trained by `sfv distill-decoder` on the VAE's latents (tiny.py); it is read
           from a decoder folder (config.json + diffusion_pytorch_model.safetensors) and checked against the VAE

The teacher (set_decoder), the pipeline (SFVPipeline.from_pretrained(..., decoder=)), the export (sfv.json) and
the bench select it by that name; a new decoder is one file here plus one entry in DECODERS.
"""

from __future__ import annotations

import os
from typing import Callable

import torch

Decoder = Callable[[torch.Tensor, "int | None"], torch.Tensor]


def _vae(vae, folder=None) -> Decoder:
    from sfv.decoders.vae import VAEDecoder

    if folder is not None:
        from sfv.errors import InputError

        raise InputError("the vae decoder is the model's own VAE; it takes no decoder folder")
    return VAEDecoder(vae)


def _tiny(vae, folder=None) -> Decoder:
    from sfv.decoders.tiny import TinyDecoder, TinyTemporalDecoder
    from sfv.errors import InputError

    if folder is None:
        raise InputError("the tiny decoder needs its folder (a `sfv distill-decoder` output, or an export's fast_decoder/)")
    net = TinyTemporalDecoder.from_pretrained(folder)
    net.check_fits(vae, f"'{folder}'")
    return TinyDecoder(net.to(vae.device))


DECODERS: dict[str, Callable[..., Decoder]] = {"vae": _vae, "tiny": _tiny}  # name -> builder(vae, folder)


def build_decoder(name: str, vae, folder: str | os.PathLike | None = None) -> Decoder:
    from sfv.errors import InputError

    if name not in DECODERS:
        raise InputError(f"decoder must be one of {', '.join(DECODERS)}, not {name!r}")
    return DECODERS[name](vae, folder)
