"""sfv: SF-V one-step video generation from Stable Video Diffusion (latent adversarial fine-tuning).

Public entry points:
    SVDTeacher   - the Stable Video Diffusion wrapper (load, precondition, condition, sample, decode)
    SFVGenerator - the one-step generator initialised from the teacher UNet
    SFVPipeline  - drop-in replacement for diffusers' StableVideoDiffusionPipeline (1 step, no CFG)
    load_pipeline(folder) - the family's pipeline over a local folder (SVD or Wan; a teacher or an `sfv export`)
"""

from sfv.errors import InputError, ModelLoadError, SFVError
from sfv.version import __version__

__all__ = ["__version__", "SFVError", "InputError", "ModelLoadError", "SVDTeacher", "SFVGenerator", "SFVPipeline", "load_pipeline"]


def __getattr__(name):
    # Heavy imports (torch, diffusers) only when a model class is asked for, so `sfv --help` is quick.
    if name == "SVDTeacher":
        from sfv.teachers.svd import SVDTeacher

        return SVDTeacher
    if name == "SFVGenerator":
        from sfv.generator import SFVGenerator

        return SFVGenerator
    if name == "SFVPipeline":
        from sfv.pipeline import SFVPipeline

        return SFVPipeline
    if name == "load_pipeline":
        from sfv.teachers import load_pipeline

        return load_pipeline
    raise AttributeError(f"module 'sfv' has no attribute {name!r}")
