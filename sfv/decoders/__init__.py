"""The decoding slot: latents [B, F, C, h, w] -> frames [B, 3, F, H, W] in [-1, 1], float32.

A decoder is a callable `decoder(latents, decode_chunk_size) -> frames` with a `name` and its network as `module`,
built by name from DECODERS:

    vae    the teacher's temporal VAE decoder, as the stock pipeline runs it (vae.py; the default)
    tiny   a fast temporal decoder trained by `sfv distill-decoder` on the VAE's latents (tiny.py); it is read
           from a decoder folder (config.json + diffusion_pytorch_model.safetensors) and checked against the VAE

The teacher (set_decoder), the pipeline (SFVPipeline.from_pretrained(..., decoder=)), the export (sfv.json) and
the bench select it by that name; a new decoder is one file here plus one entry in DECODERS. On the command line
(`sfv sample`, `serve`, `bench`) a decoder is named one way, `--decoder vae | tiny | PATH` (`resolve_decoder`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

Decoder = Callable[[torch.Tensor, "int | None"], torch.Tensor]


def _vae(vae, folder=None) -> Decoder | None:
    from sfv.decoders.vae import VAEDecoder

    if folder is not None:
        from sfv.errors import InputError

        raise InputError("the vae decoder is the model's own VAE; it takes no decoder folder")
    return VAEDecoder(vae) if vae is not None else None


def _tiny(vae, folder=None) -> Decoder:
    from sfv.decoders.tiny import TinyDecoder, TinyTemporalDecoder
    from sfv.errors import InputError

    if folder is None:
        raise InputError("the tiny decoder needs its folder (a `sfv distill-decoder` output, or an export's fast_decoder/)")
    net = TinyTemporalDecoder.from_pretrained(folder)
    if vae is None:  # the folder alone, checked before any model loads
        return TinyDecoder(net)
    net.check_fits(vae, f"'{folder}'")
    return TinyDecoder(net.to(vae.device))


DECODERS: dict[str, Callable[..., Decoder]] = {"vae": _vae, "tiny": _tiny}  # name -> builder(vae, folder)


def build_decoder(name: str, vae, folder: str | os.PathLike | None = None) -> Decoder:
    """The decoder `name` on `vae`, its weights read from `folder` where it has its own. The one place a decoder folder
    is checked: a missing, corrupt or unfitting one is one ModelLoadError. vae=None checks the folder alone (before
    the model loads) and builds nothing on a VAE."""
    from sfv.errors import InputError

    if name not in DECODERS:
        raise InputError(f"decoder must be one of {', '.join(DECODERS)}, not {name!r}")
    return DECODERS[name](vae, folder)


def resolve_decoder(choice: str, model: str | os.PathLike | None = None) -> tuple[str, Path | None]:
    """`--decoder vae | tiny | PATH` -> (name, folder): `vae` the model's own VAE decoder; `tiny` the fast decoder the
    model ships (an export's fast_decoder/, sfv.json "decoders"); PATH a fast decoder folder (a `sfv distill-decoder`
    output such as models/toy-decoder-v2), built as `tiny`."""
    from sfv.errors import InputError
    from sfv.model_dir import shipped_decoders

    if choice == "vae":
        return "vae", None
    shipped = shipped_decoders(model) if model is not None else {}
    if choice in shipped:
        return choice, shipped[choice]
    if choice not in DECODERS and (Path(choice).is_dir() or os.sep in choice or choice.startswith(".")):
        return "tiny", Path(choice)  # a folder: build_decoder checks it
    where = f"'{model}' carries no {choice!r} decoder (it ships {', '.join(['vae', *shipped])})" if model is not None \
        else f"no {choice!r} decoder here"
    fix = "pass a fast decoder folder (e.g. --decoder models/toy-decoder-v2) or export one with the model " \
        "(`sfv export ... --decoder DIR`)" if choice in DECODERS else "--decoder takes vae, tiny or a fast decoder folder"
    raise InputError(f"{where}; {fix}")
