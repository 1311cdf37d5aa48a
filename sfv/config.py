"""Recipes: YAML validated into typed dataclasses, one section per component, plus `dotted.key=value` overrides.

An unknown key or a value of the wrong type is an InputError that names the key and lists the valid ones.
Training length and every cadence are counted in videos seen (EDM2-style), so a recipe means the same
thing on 1 GPU or 64; the per-step batch is split into accumulation rounds automatically.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from sfv.errors import InputError
from sfv.sections import load_sections, plain


@dataclass
class LoraConfig:
    """G as a LoRA over the teacher's network (sfv/lora.py): the teacher's frozen weights are G's base and D's backbone
    (one copy), only the adapters train. B starts at zero, so G starts as the teacher."""

    rank: int = 16  # r
    alpha: float | None = None  # scale alpha / r (None: alpha = r, scale 1)
    # a preset of the teacher's family (SVD: attn, attn_ff, linear; Wan: attn, attn_ffn) or a regular expression that
    # module names must match in full (e.g. 'blocks\.\d+\.attn1\.(to_q|to_v)')
    targets: str = "attn"
    dropout: float = 0.0


@dataclass
class ModelConfig:
    teacher: str = ""  # diffusers SVD folder (or hub id) that G is initialised from and D's backbone comes from
    t_g: int = 4  # T_g: G trains at the top T_g − 1 of T_g Karras levels
    gradient_checkpointing: bool = False  # activation checkpointing in G's UNet (memory for compute)
    lora: LoraConfig | None = None  # None: G is a full copy of the teacher's network (SF-V); else a LoRA over it


@dataclass
class DataConfig:
    videos: str | None = None  # folder of videos (mp4/webm/gif/frame folders, recursive)
    cache: str | None = None  # or a latent cache written by `sfv cache` (then `videos` is not read)
    metadata: str | None = None  # optional .jsonl/.csv (file, fps, motion_bucket_id, caption); default: metadata.* in `videos`
    frames: int = 14
    height: int = 448
    width: int = 768
    fps: int = 7  # clips are resampled to this frame rate; also the fps conditioning
    num_workers: int = 0
    eval_videos: str | None = None  # held-out videos for D's held-out pairs (train.d_eval_every); None: the first clips of `videos`


@dataclass
class SVDConfig:
    """The `svd:` section: labels only SVD's conditioning reads (another family's teacher ignores them, and a value other
    than the default here is an error for it: sfv.train.check_options)."""

    motion_bucket_id: int = 127  # the motion label of videos whose metadata has none
    noise_aug_strength: float = 0.02  # noise added to frame 0's conditioning latent (SVD's augmentation)


# keys that moved into a family's own section: a recipe that still sets them is told where they went
MOVED = {"data.motion_bucket_id": "svd.motion_bucket_id", "data.noise_aug_strength": "svd.noise_aug_strength"}


@dataclass
class GeneratorConfig:
    optimizer: str = "adamw"
    lr: float = 1e-5
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    huber_weight: float = 0.1  # λ of the pseudo-Huber reconstruction term (0: adversarial only, an ablation)
    adv_weight: float = 1.0  # weight of the adversarial term (SF-V: 1; 0: reconstruction only, an ablation)
    huber_c: float | None = None  # None: 0.00054·√d of the video latent
    ema: float = 0.95  # EMA decay per G step (the paper's 0.95)
    # Gated reconstruction: the real clip is reconstructed only from G's levels σ_t ≤ rec_max_sigma, where x_t still
    # pins its future down (None: every level, SF-V). At σ_max the input says nothing about which future x0 is, and
    # regressing onto one real draw pulls G toward the average of the futures.
    rec_max_sigma: float | None = None
    # What G reconstructs at σ_max: `real` (SF-V: x0 of the training clip, from x0 + σ_max·ε) or `teacher` (the teacher's
    # deterministic N-step sample from the same noise and conditioning, read from the latent cache's teacher pairs,
    # `sfv cache --teacher-pairs`; G's input is then that noise at the sampler's initial scale, as at inference).
    # A function of the noise, so nothing is averaged (DMD's regression term, arXiv 2311.18828; CausVid's ODE pairs).
    rec_target: str = "real"


@dataclass
class DiscriminatorConfig:
    heads: str = "both"  # spatial | temporal | both (the paper's ablation)
    head_channels: int = 128
    blocks: list[int] | None = None  # encoder blocks with heads (None: all)
    optimizer: str = "adamw"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    p_mean: float = -1.0  # σ′ ~ discretised log-normal(P_mean, P_std) over T_d Karras levels
    p_std: float = 1.0
    t_d: int = 1000
    r1: str = "approx"  # approx | exact | none  (not "off": YAML reads that as false)
    r1_gamma: float = 0.1
    r1_interval: int = 4  # lazy regularisation: every N-th D step, weighted ×N
    r1_eps: float = 0.01  # perturbation size of the approximated R1
    steps_per_g: int = 1  # D steps per G step
    # The adversarial objective: `hinge` (SF-V, eqs. 9–10) or `relativistic` (R3GAN, arXiv 2501.05441: pairs of a real
    # and a fake of the same conditioning and σ′, L_D = softplus(D(fake) − D(real)), L_G = softplus(D(real) − D(fake)))
    loss: str = "hinge"
    # R2: the R1 penalty on the fake input (same `r1` form and interval). None: r1_gamma with the relativistic loss (R3GAN
    # always pairs it with R1: without R2 both diverge) and 0 with hinge (SF-V); 0 turns it off explicitly
    r2_gamma: float | None = None
    # σ_t of the fakes D sees: `levels` (SF-V: G's training levels, as in the G phase) or `max` (σ_max only, the
    # one-step generation D must judge at inference; the other levels' fakes are lightly denoised real clips)
    fake_sigma: str = "levels"
    warmup_videos: int = 0  # D-only training before G starts (videos)
    # e(c) of the projection heads also embeds the family's scalar conditions (SVD: fps − 1, motion bucket, noise
    # augmentation; `Condition.labels()`), so D can tell a clip that moves at the wrong speed for its bucket. Off: SF-V
    labels: bool = False


@dataclass
class DMDConfig:
    """Distribution matching (DMD / DMD2, arXiv 2311.18828, 2405.14867): G's one-step samples x̂0 are noised to
    x_σ = x̂0 + σ·ε and pulled along f_real(x_σ) − f_fake(x_σ), with f_real the frozen teacher (with CFG) and f_fake a
    trainable copy of the teacher's network that keeps learning to denoise G's own samples:

        ∇_x̂0 L_DMD = (f_fake(x_σ) − f_real(x_σ)) / mean|x̂0 − f_real(x_σ)|        (DMD2's normalisation)
        L_fake = λ(σ)·‖f_fake(x̂0 + σ·ε) − x̂0‖²,  λ = 1/c_out(σ)²  (the teacher's own training weight)
    """

    weight: float = 0.0  # weight of the DMD term in G's loss; 0 = off (SF-V)
    fake_lr: float = 1e-5  # the fake-score network's learning rate (AdamW, generator.betas)
    fake_steps_per_g: int = 5  # fake-score updates per G step (DMD2's two time-scale rule: 5)
    guidance: float = 3.0  # the real score's CFG scale (SVD: the top of its per-frame ramp from 1); 1 = no CFG
    # σ of the DMD noise and of the fake score's training: DMD2's rule, uniform over the middle 96 % of the teacher's
    # discriminator.t_d Karras levels (sfv.noise.UniformLevelSampler)


@dataclass
class TrainConfig:
    run_dir: str = "runs/sfv"
    seed: int = 0
    batch_size: int = 32  # videos per optimiser step over all processes
    batch_per_device: int = 4  # micro-batch; accumulation rounds = batch_size / (batch_per_device × processes)
    total_videos: int = 1_600_000  # training length in videos (G steps × batch_size)
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16
    max_nonfinite: int = 10  # stop after this many non-finite steps in a row
    log_every: int = 3_200  # videos
    sample_every: int = 32_000
    sample_count: int = 2  # fixed conditioning images (first frames of the first clips) for sample videos
    checkpoint_every: int = 32_000
    d_eval_every: int = 0  # videos between judgements of D on fixed held-out real/fake pairs (sfv/heldout.py; 0 = off)
    d_eval_count: int = 16  # held-out pairs
    keep_checkpoints: int = 3
    export: bool = True  # write the drop-in pipeline folder at the end
    # Learning-rate decay of every optimiser (G, D and DMD's fake score): `none` (SF-V: constant) or `cosine`, full
    # until v0 = lr_decay_from·total_videos, then lr·½(1 + cos(π·(v − v0)/(total_videos − v0))) at v videos read, 0 at the
    # end. A function of the videos read, so a resumed run follows the same curve (keep total_videos when resuming)
    lr_decay: str = "none"
    lr_decay_from: float = 0.0


@dataclass
class ParallelConfig:
    mode: str = "ddp"  # ddp (replicated G) | fsdp (FSDP2-sharded G, EMA and optimiser state; sfv/distributed.py)
    cpu_offload: bool = False  # fsdp: keep sharded parameters, gradients and optimiser state in CPU memory


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    svd: SVDConfig = field(default_factory=SVDConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    dmd: DMDConfig = field(default_factory=DMDConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def to_dict(self) -> dict:
        return plain(dataclasses.asdict(self))


# ----------------------------------------------------------------------------------------------------


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> Recipe:
    """Read a YAML recipe (or start from defaults if path is None) and apply `section.key=value` overrides."""
    recipe = load_sections(Recipe, path, overrides, MOVED)
    for key, value, choices in (("discriminator.r1", recipe.discriminator.r1, ("approx", "exact", "none")),
                                ("discriminator.heads", recipe.discriminator.heads, ("spatial", "temporal", "both")),
                                ("discriminator.fake_sigma", recipe.discriminator.fake_sigma, ("levels", "max")),
                                ("discriminator.loss", recipe.discriminator.loss, ("hinge", "relativistic")),
                                ("generator.rec_target", recipe.generator.rec_target, ("real", "teacher")),
                                ("train.precision", recipe.train.precision, ("auto", "fp32", "bf16")),
                                ("train.lr_decay", recipe.train.lr_decay, ("none", "cosine")),
                                ("parallel.mode", recipe.parallel.mode, ("ddp", "fsdp"))):
        if value not in choices:
            raise InputError(f"recipe key '{key}' must be one of {', '.join(choices)}, not {value!r}")
    if recipe.discriminator.r2_gamma is None:
        recipe.discriminator.r2_gamma = recipe.discriminator.r1_gamma if recipe.discriminator.loss == "relativistic" else 0.0
    _check_ranges(recipe)
    return recipe


def check_header_inputs(path: str | Path | None, recipe) -> None:
    """An input folder (model.teacher, data.videos, data.eval_videos) that is missing but that one of the recipe's
    header commands creates: one InputError naming that command, before any model loads."""
    if path is None or not Path(path).is_file():
        return
    header = [line.lstrip("#").split("  #")[0].strip() for line in Path(path).read_text().splitlines() if line.startswith("#")]
    header = [line for line in header if line and not line.startswith(("sfv distill", "accelerate launch", "torchrun"))]
    for key in ("model.teacher", "data.videos", "data.eval_videos"):
        section, name = key.split(".")
        value = str(getattr(getattr(recipe, section, None), name, "") or "")
        if not value or Path(value).exists() or (name == "videos" and getattr(recipe.data, "cache", None)):
            continue
        token = re.compile(rf"(^|[\s'\"=]){re.escape(value)}/?($|[\s'\"])")
        made_by = next((line for line in header if token.search(line)), None)
        if made_by:
            raise InputError(f"{key} '{value}' does not exist: make it first with `{made_by}` (from the header of "
                             f"{path}), or set {key}=... to your own")


def _check_ranges(r: Recipe) -> None:
    """Values whose type is right but which would fail deep inside training (division by zero, empty loops)."""
    rules = [  # (key, value, minimum, inclusive)
        *[(f"data.{k}", getattr(r.data, k), 1, True) for k in ("frames", "height", "width", "fps")],
        ("data.num_workers", r.data.num_workers, 0, True), ("model.t_g", r.model.t_g, 2, True),
        *[(f"train.{k}", getattr(r.train, k), 1, True) for k in ("batch_size", "batch_per_device", "total_videos", "max_nonfinite")],
        *[(f"train.{k}", getattr(r.train, k), 0, True) for k in ("log_every", "sample_every", "sample_count", "checkpoint_every", "keep_checkpoints",
                                                                 "d_eval_every")],
        ("train.d_eval_count", r.train.d_eval_count, 1, True),
        *[(f"discriminator.{k}", getattr(r.discriminator, k), 1, True) for k in ("r1_interval", "steps_per_g", "head_channels")],
        ("discriminator.t_d", r.discriminator.t_d, 2, True), ("discriminator.warmup_videos", r.discriminator.warmup_videos, 0, True),
        ("discriminator.r1_gamma", r.discriminator.r1_gamma, 0, True),
        *[(k, v, 0, False) for k, v in (("discriminator.p_std", r.discriminator.p_std), ("discriminator.r1_eps", r.discriminator.r1_eps),
                                        ("generator.lr", r.generator.lr), ("discriminator.lr", r.discriminator.lr))],
        ("generator.ema", r.generator.ema, 0, True), ("generator.huber_weight", r.generator.huber_weight, 0, True),
        ("generator.adv_weight", r.generator.adv_weight, 0, True), ("discriminator.r2_gamma", r.discriminator.r2_gamma, 0, True),
        
        ("dmd.weight", r.dmd.weight, 0, True), ("dmd.fake_steps_per_g", r.dmd.fake_steps_per_g, 1, True),
        ("dmd.guidance", r.dmd.guidance, 1, True), ("dmd.fake_lr", r.dmd.fake_lr, 0, False),
    ]
    for key, value, low, inclusive in rules:
        if value < low or (value == low and not inclusive):
            raise InputError(f"recipe key '{key}' must be {'at least' if inclusive else 'greater than'} {low}, got {value}")
    if r.generator.adv_weight == 0 and r.generator.huber_weight == 0 and r.dmd.weight == 0:
        raise InputError("generator.adv_weight, generator.huber_weight and dmd.weight are all 0: G would get no gradient; "
                         "set one above 0")
    if not 0 <= r.train.lr_decay_from < 1:
        raise InputError(f"train.lr_decay_from is the fraction of train.total_videos where the decay starts: at least 0 and "
                         f"below 1, got {r.train.lr_decay_from}")
    if r.generator.rec_max_sigma is not None and r.generator.rec_max_sigma <= 0:
        raise InputError(f"generator.rec_max_sigma must be a noise level σ > 0 (one of G's levels), got {r.generator.rec_max_sigma}")
    lora = r.model.lora
    if lora is not None:
        if lora.rank <= 0:
            raise InputError(f"model.lora.rank must be a positive integer (the adapters' rank r, e.g. 16), got {lora.rank}")
        if lora.alpha is not None and lora.alpha <= 0:
            raise InputError(f"model.lora.alpha must be positive (the scale is alpha / rank), got {lora.alpha}; "
                             "leave it out for alpha = rank")
        if not 0 <= lora.dropout < 1:
            raise InputError(f"model.lora.dropout must be in [0, 1), got {lora.dropout}")
        try:
            re.compile(lora.targets)
        except re.error as e:
            raise InputError(f"model.lora.targets {lora.targets!r} is neither a preset nor a valid regular expression ({e})") from None
        if lora.targets == "":
            raise InputError("model.lora.targets is empty: name a preset (attn) or a regular expression of module names")
        if r.dmd.weight:
            raise InputError("dmd.weight > 0 needs the teacher's own score, which a LoRA student shares its network with; "
                             "set dmd.weight=0 or model.lora=null")
    if r.generator.ema >= 1:
        raise InputError(f"recipe key 'generator.ema' must be below 1 (a decay per G step), got {r.generator.ema}")


def add_train_arguments(p) -> None:
    """The training command's arguments (shared by `python -m sfv.train` and `sfv distill`; no heavy imports)."""
    p.add_argument("--recipe", required=True, help="YAML recipe (recipes/*.yaml)")
    p.add_argument("--resume", default=None, help="'latest' (newest checkpoint in the run dir) or a checkpoint folder")
    p.add_argument("--overwrite", action="store_true", help="start again in a run folder that holds a run: its checkpoints "
                   "and logs are deleted first (without it, or --resume, such a folder is refused)")
    p.add_argument("--cpu", action="store_true", help="train on CPU even if a GPU is visible")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.total_videos=64 data.videos=/data")
