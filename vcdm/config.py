"""Typed run configuration: one frozen dataclass per stage, composed into RunConfig, plus presets.

Every field has a default and a comment. `from_dict` builds a config from JSON (unknown fields and bad
values give a VcdmError naming the field), `apply_overrides` takes `a.b.c=value` strings (the CLI's --set),
and `to_dict` gives the JSON form saved as `config.json` in every run directory.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from vcdm.data.augment import AugmentConfig
from vcdm.data.dataset import DataConfig
from vcdm.data.masks import MaskConfig
from vcdm.embedders.learned import EncoderConfig
from vcdm.errors import VcdmError
from vcdm.latent import SPACES, AutoencoderStage
from vcdm.networks.classifier import ClassifierConfig
from vcdm.networks.prior import PriorConfig
from vcdm.networks.unet import UNetConfig
from vcdm.samplers import SAMPLERS
from vcdm.text.config import ClipStage
from vcdm.training.loop import TrainConfig

PARAMETERIZATIONS = ("edm", "eps")
EMBEDDER_KINDS = ("learned", "clip", "clip-trained", "precomputed")
CONDITIONS = ("embedding", "embedding+label", "label", "none")
# the decoder and the baseline also take a caption (vcdm.stages.text): unCLIP's decoder, and GLIDE ("text")
DECODER_CONDITIONS = CONDITIONS + ("embedding+text", "text")
PRIOR_CONDITIONS = ("none", "label", "text")
AUG_NOISE = ("log-uniform", "uniform", "none")
PALETTE_TASKS = ("inpaint", "uncrop", "colorize")
SAMPLER_NAMES = tuple(SAMPLERS)  # the samplers registry is the one list of names


def _check(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise VcdmError(f"{name} must be {expected}, got {got!r}")


def _int_or_null(value: Any, low: int) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= low)


def _check_positive_or_null(name: str, value: Any) -> None:
    _check(_int_or_null(value, 1), name, "null or a positive integer", value)


def _check_size(name: str, value: Any) -> None:
    _check(_int_or_null(value, 8), name, "null (the data's size) or an integer >= 8", value)


@dataclass(frozen=True)
class DiffusionConfig:
    parameterization: str = (
        "edm"  # "edm": EDM preconditioning and loss; "eps": classic DDPM epsilon-prediction
    )
    sigma_data: float = 0.5  # data std (0.5 for images in [-1, 1], 1 for standardised embeddings)
    p_mean: float = -1.2  # training noise levels: ln(sigma) ~ N(p_mean, p_std^2) (edm)
    p_std: float = 1.2
    sigma_min: float = 0.002  # sampling grid range (edm; eps uses its schedule's range)
    sigma_max: float = 80.0
    rho: float = 7.0  # Karras grid warping
    beta_schedule: str = "linear"  # eps only: "linear" | "cosine"
    num_timesteps: int = 1000  # eps only: T

    def __post_init__(self):
        _check(self.parameterization in PARAMETERIZATIONS, "diffusion.parameterization",
               f"one of {PARAMETERIZATIONS}", self.parameterization)  # fmt: skip
        _check(self.sigma_data > 0, "diffusion.sigma_data", "positive", self.sigma_data)
        _check(self.p_std > 0, "diffusion.p_std", "positive", self.p_std)
        _check(0 < self.sigma_min < self.sigma_max, "diffusion.sigma_min",
               "positive and below diffusion.sigma_max", self.sigma_min)  # fmt: skip
        _check(self.beta_schedule in ("linear", "cosine"), "diffusion.beta_schedule", "'linear' or 'cosine'",
               self.beta_schedule)  # fmt: skip


@dataclass(frozen=True)
class EmbedderStage:
    kind: str = (
        "learned"  # "learned" (trained here, contrastive), "clip" (local HF CLIP dir), "precomputed" (.npy),
        # "clip-trained" (the image tower of a CLIP trained by `vcdm train clip`)
    )
    # clip: local model directory; precomputed: .npy aligned with the dataset; clip-trained: a clip export
    # (None: RUN/clip)
    path: str | None = None
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # learned embedder's network
    train: TrainConfig = field(default_factory=lambda: TrainConfig(total_nimg=40_000, lr=2e-3, warmup_nimg=2_000,
                                                                   batch_size=256, ema_halflife_nimg=5_000))  # fmt: skip
    aug_copies: int = 0  # extra augmented copies of every image embedded for the prior's training set
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # augmentations used for those copies
    image_size: int | None = None  # size the images are embedded at (antialiased resize); None = the data's

    def __post_init__(self):
        _check(self.kind in EMBEDDER_KINDS, "embedder.kind", f"one of {EMBEDDER_KINDS}", self.kind)
        _check_size("embedder.image_size", self.image_size)
        _check(self.kind in ("learned", "clip-trained") or self.path is not None, "embedder.path",
               f"a path when embedder.kind is {self.kind!r}", self.path)  # fmt: skip
        _check(self.aug_copies >= 0, "embedder.aug_copies", "an integer >= 0", self.aug_copies)


@dataclass(frozen=True)
class PriorStage:
    net: PriorConfig = field(default_factory=PriorConfig)  # emb_dim and num_classes are set from the data
    diffusion: DiffusionConfig = field(
        default_factory=lambda: DiffusionConfig(
            sigma_data=1.0, p_mean=-0.4, p_std=1.2, sigma_min=0.002, sigma_max=80.0
        )  # fmt: skip
    )
    train: TrainConfig = field(default_factory=lambda: TrainConfig(total_nimg=400_000, batch_size=512, lr=1e-3,
                                                                   warmup_nimg=20_000, ema_halflife_nimg=50_000,
                                                                   precision="fp32"))  # fmt: skip
    class_conditional: bool = False  # model p(y | label); needs a labelled dataset (= condition "label")
    cond_drop_prob: float = 0.1  # classifier-free dropout of the label or caption (conditional priors only)
    precond: str = "x0"  # "x0": the network predicts the clean embedding (VCDM); "edm": EDM's mixed skip
    # "none", "label" (as class_conditional), or "text": p(y | caption) with the run's CLIP (DALL-E 2's prior;
    # needs embedder.kind clip-trained)
    condition: str = "none"

    def __post_init__(self):
        _check(0 <= self.cond_drop_prob < 1, "prior.cond_drop_prob", "in [0, 1)", self.cond_drop_prob)
        _check(self.precond in ("x0", "edm"), "prior.precond", "'x0' or 'edm'", self.precond)
        _check(self.condition in PRIOR_CONDITIONS, "prior.condition", f"one of {PRIOR_CONDITIONS}",
               self.condition)  # fmt: skip
        _check(not (self.class_conditional and self.condition == "text"), "prior.class_conditional",
               "false with prior.condition 'text'", self.class_conditional)  # fmt: skip

    @property
    def uses_label(self) -> bool:
        return self.class_conditional or self.condition == "label"

    @property
    def uses_text(self) -> bool:
        return self.condition == "text"


class _Conditioned:
    """What an image stage is conditioned on, from its `condition` ("embedding", "label", "embedding+label")."""

    condition: str

    @property
    def uses_embedding(self) -> bool:
        return "embedding" in self.condition

    @property
    def uses_label(self) -> bool:
        return "label" in self.condition

    @property
    def uses_text(self) -> bool:
        return "text" in self.condition


@dataclass(frozen=True)
class DecoderStage(_Conditioned):
    net: UNetConfig = field(
        default_factory=UNetConfig
    )  # image_size, channels, emb_dim, num_classes set from data
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # "embedding" (two-stage), "embedding+label", "label", "none" (single-stage); with the run's CLIP,
    # "embedding+text" (unCLIP's decoder: y and the caption's text embedding) or "text" (GLIDE: no prior)
    condition: str = "embedding"
    cond_drop_prob: float = 0.1  # classifier-free dropout of the whole condition
    # "embedding+text": the caption alone is dropped (its text embedding zeroed, "no caption") with this
    # probability, y kept (DALL-E 2 drops it 50% of the time); so the decoder also decodes y alone (edits)
    text_drop_prob: float = 0.5
    # size the stage trains and samples at (the data resized, antialiased); None = the data's size. Below the
    # data's size it is the base of a cascade: an upsampler brings its samples to the data's size
    image_size: int | None = None
    # "pixel", or "latent": trained on the run's autoencoder's scaled latents, decoded by the pipeline
    # (vcdm.latent; set diffusion.sigma_data=1, the latents' std)
    space: str = "pixel"

    def __post_init__(self):
        _check(self.condition in DECODER_CONDITIONS, "decoder.condition", f"one of {DECODER_CONDITIONS}",
               self.condition)  # fmt: skip
        _check(0 <= self.cond_drop_prob < 1, "decoder.cond_drop_prob", "in [0, 1)", self.cond_drop_prob)
        _check(0 <= self.text_drop_prob < 1, "decoder.text_drop_prob", "in [0, 1)", self.text_drop_prob)
        _check_size("decoder.image_size", self.image_size)
        _check(self.space in SPACES, "decoder.space", f"one of {SPACES}", self.space)


@dataclass(frozen=True)
class ConditioningAugment:
    """Conditioning augmentation of an upsampler's low-res input (Ho et al. 2021, Cascaded Diffusion Models).

    Training: the low-res image x_lr (optionally blurred) is upsampled to the target size and noised,
    x_lr_aug = up(x_lr) + sigma_aug * n, n ~ N(0, I), with one sigma_aug per sample drawn from `noise`; the
    network is told sigma_aug. Sampling: the base stage's output is noised the same way at one level
    (`sample_sigma`, or SampleConfig.upsampler_aug_sigma), so the upsampler sees its own training distribution
    rather than the base stage's artefacts.
    """

    # sigma_aug: "log-uniform" on [sigma_min, sigma_max], "uniform" on [0, sigma_max], or "none" (no noise
    # augmentation: the network then has no level input and samples at level 0)
    noise: str = "log-uniform"
    sigma_min: float = 0.005  # log-uniform's lower end (images in [-1, 1]: 0.005 ~ 0.6 grey levels of 255)
    sigma_max: float = 0.5  # the largest level trained on
    zero_prob: float = 0.1  # share of training samples that get no noise (sigma_aug = 0, a clean input)
    sample_sigma: float = 0.05  # default level at sampling, in [0, sigma_max] (ignored when noise is none)
    blur_prob: float = 0.0  # share of low-res inputs blurred first (CDM's blur augmentation); 0 = off
    blur_sigma: tuple[float, float] = (0.4, 0.6)  # Gaussian blur std in low-res pixels, uniform in [lo, hi]

    def __post_init__(self):
        name = "upsampler.augment"
        _check(self.noise in AUG_NOISE, f"{name}.noise", f"one of {AUG_NOISE}", self.noise)
        _check(0 < self.sigma_min < self.sigma_max, f"{name}.sigma_min", f"positive and below {name}.sigma_max",
               self.sigma_min)  # fmt: skip
        _check(0 <= self.zero_prob <= 1, f"{name}.zero_prob", "in [0, 1]", self.zero_prob)
        _check(0 <= self.blur_prob <= 1, f"{name}.blur_prob", "in [0, 1]", self.blur_prob)
        lo_hi = self.blur_sigma
        _check(isinstance(lo_hi, tuple | list) and len(lo_hi) == 2 and 0 < lo_hi[0] <= lo_hi[1],
               f"{name}.blur_sigma", "two numbers 0 < lo <= hi", lo_hi)  # fmt: skip
        object.__setattr__(self, "blur_sigma", (float(lo_hi[0]), float(lo_hi[1])))
        _check(0 <= self.sample_sigma <= self.sigma_max, f"{name}.sample_sigma",
               f"in [0, {name}.sigma_max = {self.sigma_max}] (the trained range)", self.sample_sigma)  # fmt: skip

    @property
    def noised(self) -> bool:
        """Whether the low-res input is noised (and the network reads the level)."""
        return self.noise != "none"


@dataclass(frozen=True)
class UpsamplerStage(_Conditioned):
    """An SR3 super-resolution stage p(x | x_lr [, y, label]) at the data's size, conditioned on the image
    of the stage below (decoder.image_size) by concatenation, with conditioning augmentation."""

    # image_size, channels, extra_in_channels (the low-res image's), emb_dim, num_classes and aug_embedding are
    # set from the data and `augment`
    net: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # size of its low-res input, dividing the data's size. None: decoder.image_size when that is below the data's
    # size, else half the data's size (worked out when the upsampler is trained; its export records it)
    low_res: int | None = None
    condition: str = "none"  # besides the low-res image: "none", "embedding", "label", "embedding+label"
    cond_drop_prob: float = 0.1  # classifier-free dropout of y / label (never of the low-res image)
    augment: ConditioningAugment = field(default_factory=ConditioningAugment)
    # "pixel", or "latent" (LDM-SR): the target is the run's autoencoder's scaled latent of the high-res image, the
    # low-res image (noised in pixel space) is brought to the latent grid (as is, or pixel-unshuffled where the grid
    # is smaller: vcdm.stages.upsampler.lowres_mode) and concatenated; the pipeline decodes
    # (vcdm.latent; set upsampler.diffusion.sigma_data=1, the latents' std)
    space: str = "pixel"
    # diffuse the residual x - up(x_lr) instead of x (SRDiff, Li et al. 2022): the denoiser starts from the bicubic
    # image and learns only the detail, whose std is far below the image's (about 0.09 for 32 -> 64 emoji: set
    # diffusion.sigma_data to it and p_mean / sigma_max to match; the export records the measured std). Pixels only
    residual: bool = False
    # train on random train_crop x train_crop crops of the high-res image (and the matching crops of its low-res
    # one), as DALL-E 2 trains its upsamplers on quarter-area crops: a crop of half the side costs a quarter of the
    # compute, so 4x the images in the same time; the convolutional network samples at full size. None: whole
    # images. Must divide by the scale (size / low_res) and by the U-Net's 2 ** (levels - 1). Pixels only
    train_crop: int | None = None

    def __post_init__(self):
        _check(self.condition in CONDITIONS, "upsampler.condition", f"one of {CONDITIONS}", self.condition)
        _check_positive_or_null("upsampler.train_crop", self.train_crop)
        _check(self.train_crop is None or self.space == "pixel", "upsampler.train_crop",
               "null with upsampler.space 'latent' (crops are taken in pixels)", self.train_crop)  # fmt: skip
        _check(isinstance(self.residual, bool), "upsampler.residual", "true or false", self.residual)
        _check(not (self.residual and self.space == "latent"), "upsampler.residual",
               "false with upsampler.space 'latent' (the residual is taken in pixels)", self.residual)  # fmt: skip
        _check(not (self.residual and self.diffusion.parameterization == "eps"), "upsampler.residual",
               "false with upsampler.diffusion.parameterization 'eps' (it wraps the EDM denoiser)",
               self.residual)  # fmt: skip
        _check(0 <= self.cond_drop_prob < 1, "upsampler.cond_drop_prob", "in [0, 1)", self.cond_drop_prob)
        _check(self.space in SPACES, "upsampler.space", f"one of {SPACES}", self.space)
        _check_positive_or_null("upsampler.low_res", self.low_res)


@dataclass(frozen=True)
class PaletteStage(_Conditioned):
    """A Palette image-to-image model p(x | c [, y, label]) (Saharia et al. 2022): the U-Net reads the condition
    image c concatenated to the noisy x, through the upsampler's concatenation path (net.extra_in_channels).
    inpaint / uncrop: c = the image with the holes zeroed, plus the mask as a channel (+1 to fill, -1 known);
    colorize: c = the image's luma (RGB data). Condition dropout replaces c (and y / label) by a null image, so
    the model also samples unconditionally and takes classifier-free guidance on c."""

    # image_size, channels, extra_in_channels, extra_in_nullable, emb_dim and num_classes are set from the data
    net: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: str = "inpaint"  # "inpaint" (free-form strokes and boxes), "uncrop" (a border band), "colorize"
    masks: MaskConfig = field(default_factory=MaskConfig)  # how the training masks are drawn
    condition: str = "none"  # besides the image: "none", "embedding", "label", "embedding+label"
    cond_drop_prob: float = 0.1  # classifier-free dropout of the whole condition (image, y and label)
    # "pixel", or "latent" (LDM's inpainting): the target and the condition image are the run's autoencoder's
    # scaled latents, the mask max-pooled to the latent grid; sampling decodes (vcdm.latent; set
    # palette.diffusion.sigma_data=1, the latents' std)
    space: str = "pixel"

    def __post_init__(self):
        _check(self.task in PALETTE_TASKS, "palette.task", f"one of {PALETTE_TASKS}", self.task)
        _check(self.condition in CONDITIONS, "palette.condition", f"one of {CONDITIONS}", self.condition)
        _check(0 <= self.cond_drop_prob < 1, "palette.cond_drop_prob", "in [0, 1)", self.cond_drop_prob)
        _check(self.space in SPACES, "palette.space", f"one of {SPACES}", self.space)


@dataclass(frozen=True)
class SampleConfig:
    # decoder sampler, one of vcdm.samplers.SAMPLERS. DPM-Solver++(2M) at 20 steps (20 network calls) came within
    # 2% of a 255-call reference FID on both demo models (bench/nfe_study.py); heun 18 steps costs 35 calls
    sampler: str = "dpmpp_2m"
    num_steps: int = 20  # decoder steps (heun uses 2 network calls per step but the last; the others 1)
    prior_sampler: str = "heun"
    prior_num_steps: int = 18
    guidance: float = 1.0  # decoder classifier-free guidance weight (1 = plain conditional)
    prior_guidance: float = 1.0  # prior classifier-free guidance weight (class- or text-conditional priors)
    # text prior: draw this many embeddings per sample and keep the one closest to the caption (cosine in
    # CLIP space; DALL-E 2 draws 2); 1 = the plain sample
    prior_candidates: int = 1
    eta: float = 1.0  # ddim's eta (0 = deterministic)
    s_churn: float = 0.0  # heun's churn
    batch_size: int = 256  # images per forward pass
    precision: str = "fp32"  # "fp32" | "bf16" (autocast of the networks; ~1.5x faster sampling on a bf16 CPU)
    upsampler_sampler: str = "heun"  # the upsampler of a cascade (when the run has one)
    upsampler_num_steps: int = 18
    upsampler_guidance: float = 1.0  # classifier-free weight on y / label (never on the low-res image)
    upsampler_aug_sigma: float | None = None  # noise level added to the base images; None = the upsampler's
    # upsampler.augment.sample_sigma

    def __post_init__(self):
        _check(self.precision in ("fp32", "bf16"), "sample.precision", "'fp32' or 'bf16'", self.precision)
        for name in ("sampler", "prior_sampler", "upsampler_sampler"):
            v = getattr(self, name)
            _check(v in SAMPLER_NAMES, f"sample.{name}", f"one of {SAMPLER_NAMES}", v)
        _check(self.num_steps >= 1, "sample.num_steps", "an integer >= 1", self.num_steps)
        _check(self.prior_num_steps >= 1, "sample.prior_num_steps", "an integer >= 1", self.prior_num_steps)
        _check(self.upsampler_num_steps >= 1, "sample.upsampler_num_steps", "an integer >= 1",
               self.upsampler_num_steps)  # fmt: skip
        _check(self.upsampler_aug_sigma is None or self.upsampler_aug_sigma >= 0, "sample.upsampler_aug_sigma",
               "null or a number >= 0", self.upsampler_aug_sigma)  # fmt: skip
        _check(self.batch_size >= 1, "sample.batch_size", "an integer >= 1", self.batch_size)
        _check(self.prior_candidates >= 1, "sample.prior_candidates", "an integer >= 1",
               self.prior_candidates)  # fmt: skip


@dataclass(frozen=True)
class EvalConfig:
    classifier: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(channels=(16, 32, 64)))
    # the evaluation classifier's training (trained once per dataset and config, cached in the user cache dir)
    classifier_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        total_nimg=40_000, batch_size=64, lr=2e-3, warmup_nimg=2_000, ema_halflife_nimg=5_000, precision="fp32"))  # fmt: skip
    num_samples: int = (
        1000  # generated images per model for FID / precision / recall (compare at equal counts)
    )
    reference_split: str = "test"  # embedded MNIST: the split whose images are the FID reference
    heldout_split: str = (
        "valid"  # embedded MNIST: real held-out images scored like samples (the metric's floor)
    )
    k: int = 3  # k of the k-NN manifolds for precision / recall (Kynkaanniemi et al. 2019)

    def __post_init__(self):
        _check(self.num_samples >= 2, "eval.num_samples", "an integer >= 2", self.num_samples)
        _check(self.k >= 1, "eval.k", "an integer >= 1", self.k)


DEMO_STAGES = ("clip", "embedder", "prior", "decoder", "baseline", "upsampler")


@dataclass(frozen=True)
class DemoConfig:
    """What `vcdm demo` trains and samples (in this order)."""

    stages: tuple[str, ...] = ("embedder", "prior", "decoder", "baseline")
    # text-conditioned runs: the captions the grids show, a row of 8 seeds each (seen and unseen captions)
    prompts: tuple[str, ...] = ()

    def __post_init__(self):
        bad = [s for s in self.stages if s not in DEMO_STAGES]
        _check(not bad and "decoder" in self.stages, "demo.stages",
               f"stages among {DEMO_STAGES}, including 'decoder'", self.stages)  # fmt: skip
        _check(all(isinstance(t, str) and t.strip() for t in self.prompts), "demo.prompts",
               "a list of non-empty captions", self.prompts)  # fmt: skip


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    embedder: EmbedderStage = field(default_factory=EmbedderStage)
    prior: PriorStage = field(default_factory=PriorStage)
    decoder: DecoderStage = field(default_factory=DecoderStage)  # the two-stage decoder p(x | y[, a])
    baseline: DecoderStage = field(default_factory=lambda: DecoderStage(condition="none"))  # single-stage
    upsampler: UpsamplerStage = field(default_factory=UpsamplerStage)  # optional SR stage of a cascade
    clip: ClipStage = field(default_factory=ClipStage)  # a CLIP trained on (image, caption) pairs (vcdm.text)
    autoencoder: AutoencoderStage = field(default_factory=AutoencoderStage)  # latent diffusion's first stage
    palette: PaletteStage = field(default_factory=PaletteStage)  # optional image-to-image model
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)


# ---- dict <-> dataclass ----


def to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _convert(tp: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise VcdmError(f"{name} must be a mapping of fields, got {value!r}")
        return from_dict(tp, value, prefix=name)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise VcdmError(f"{name} must not be null")
        for a in args:
            if a is not type(None):
                return _convert(a, value, name)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise VcdmError(f"{name} must be a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0]
        return tuple(_convert(item, v, f"{name}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise VcdmError(f"{name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise VcdmError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise VcdmError(f"{name} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise VcdmError(f"{name} must be a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], *, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (possibly partial) dict; missing fields take their defaults."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise VcdmError(
            f"unknown config field '{where}{unknown[0]}'; allowed fields: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for k, v in data.items():
        name = f"{prefix}.{k}" if prefix else k
        if is_dataclass(hints[k]) and isinstance(v, dict):
            base = getattr(cls(), k) if _has_defaults(cls) else None
            kwargs[k] = from_dict(hints[k], {**(to_dict(base) if base is not None else {}), **v}, prefix=name)
        else:
            kwargs[k] = _convert(hints[k], v, name)
    try:
        return cls(**kwargs)
    except VcdmError as e:
        msg = str(e)
        if prefix and not msg.startswith(prefix):
            # nested configs name their own fields; prepend where they sit in the run config
            head = msg.split(" ", 1)[0]
            if "." in head:
                leaf = head.split(".", 1)[1]
                msg = f"{prefix}.{leaf} {msg.split(' ', 1)[1]}" if " " in msg else msg
        raise VcdmError(msg) from None


def _has_defaults(cls: type) -> bool:
    return all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in fields(cls) if f.init)  # fmt: skip


def parse_override(text: str) -> tuple[list[str], Any]:
    """'decoder.train.lr=1e-3' -> (['decoder', 'train', 'lr'], 0.001); values are JSON, else a string."""
    if "=" not in text:
        raise VcdmError(f"override {text!r} must look like field.path=value (e.g. decoder.train.lr=1e-3)")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """Return a copy of `cfg` with `a.b.c=value` overrides applied and re-validated."""
    d = to_dict(cfg)
    for text in overrides:
        path, value = parse_override(text)
        node, cls = d, type(cfg)
        for i, part in enumerate(path):
            names = {f.name for f in fields(cls)}
            if part not in names:
                where = ".".join(path[: i + 1])
                raise VcdmError(f"unknown config field '{where}'; allowed fields: {', '.join(sorted(names))}")
            if i == len(path) - 1:
                node[part] = value
            else:
                cls = typing.get_type_hints(cls)[part]
                if not is_dataclass(cls):
                    raise VcdmError(f"config field '{'.'.join(path[: i + 1])}' has no sub-fields")
                node = node[part]
    return from_dict(type(cfg), d)


def load_config(path: str | Path, cls: type = RunConfig) -> Any:
    """Read a JSON config file (a partial one is completed with defaults)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise VcdmError(f"{path}: config file not found") from None
    except json.JSONDecodeError as e:
        raise VcdmError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise VcdmError(f"{path}: a config must be a JSON object")
    try:
        return from_dict(cls, data)
    except VcdmError as e:
        raise VcdmError(f"{path}: {e}") from None


# ---- presets ----


def _demo() -> RunConfig:
    """The embedded-MNIST demo, sized for ~12 minutes on 2 CPU cores (measured from a fresh clone: 12.1 min; README).

    Small nets see more images per minute, and on a CPU that decides quality; the two decoders share the
    same U-Net and the same image budget so that the comparison is fair.
    """
    unet = UNetConfig(base_channels=16, channel_mults=(1, 2, 4), num_res_blocks=1, attn_resolutions=())
    # batch 64 rather than 128: on a short budget more optimiser steps per image learn faster (measured:
    # loss 0.38 vs 0.77 after 10k images). fp32: bf16 autocast trains this small U-Net 3x slower on this CPU.
    dec_train = TrainConfig(batch_size=64, total_nimg=64_000, lr=2e-3, warmup_nimg=3_000, ema_halflife_nimg=10_000,
                            ema_rampup=0.1, precision="fp32", checkpoint_every_nimg=8_000)  # fmt: skip
    # 90k images (~35 s): 10-NN digit accuracy 0.93 against 0.80 at 30k, and the decoder's FID follows it (README)
    emb_train = TrainConfig(total_nimg=90_000, batch_size=256, lr=2e-3, warmup_nimg=2_000, ema_halflife_nimg=5_000,
                            precision="fp32")  # fmt: skip
    prior_train = TrainConfig(total_nimg=150_000, batch_size=512, lr=1e-3, warmup_nimg=10_000,
                              ema_halflife_nimg=20_000, ema_rampup=0.1, precision="fp32",
                              checkpoint_every_nimg=50_000)  # fmt: skip
    return RunConfig(
        # the embedder temperatures of the measured demo run (README); the EncoderConfig defaults (0.2, floor
        # 0.1) reached a higher embedding k-NN accuracy at this budget in the helper's tuning but are not yet
        # measured end to end
        embedder=EmbedderStage(
            encoder=EncoderConfig(temperature_init=0.5, min_temperature=0.3), train=emb_train
        ),
        prior=PriorStage(net=PriorConfig(width=128, depth=3, heads=4), train=prior_train),
        decoder=DecoderStage(net=unet, train=dec_train),
        baseline=DecoderStage(net=unet, train=dec_train, condition="none"),
        # the same U-Net; the 48k images the README's inpainting figures were measured with (bench/inpainting.py)
        palette=PaletteStage(net=unet, train=replace(dec_train, total_nimg=48_000)),
        # classifier-free guidance on y (the decoder drops y in training): two-stage FID 34.0 at w = 1 and 20.5 at
        # 1.5 with 48k decoder images (README); the single-stage baseline has nothing to guide on and samples with
        # the same sampler and steps
        sample=SampleConfig(guidance=1.5),
    )


def _tiny() -> RunConfig:
    """Minuscule nets and budgets for tests and smoke runs (seconds, not quality)."""
    train = TrainConfig(batch_size=32, total_nimg=256, warmup_nimg=64, checkpoint_every_nimg=128,
                        ema_halflife_nimg=200, log_every_nimg=128)  # fmt: skip
    unet = UNetConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=())
    return RunConfig(
        data=DataConfig(limit=512),
        embedder=EmbedderStage(encoder=EncoderConfig(channels=(8, 16), feature_dim=32, dim=8), train=train),
        prior=PriorStage(net=PriorConfig(width=32, depth=1, heads=2), train=replace(train, precision="fp32")),
        decoder=DecoderStage(net=unet, train=train),
        baseline=DecoderStage(net=unet, train=train, condition="none"),
        upsampler=UpsamplerStage(net=unet, train=train),
        palette=PaletteStage(net=unet, train=train),
        sample=SampleConfig(num_steps=4, prior_num_steps=4, batch_size=64, upsampler_num_steps=4),
        eval=EvalConfig(
            classifier=ClassifierConfig(channels=(8, 16), feature_dim=16),
            classifier_train=replace(train, precision="fp32"),
            num_samples=32,
        ),  # fmt: skip
    )


def _emoji() -> RunConfig:
    """The RGB emoji cascade demo (`vcdm demo --preset emoji`): a CLIP trained on the emoji names, whose image
    embeddings are y; the two-stage base at 32x32 (prior over y, decoder p(x | y) sampled with guidance 3) and an
    SR3 upsampler 32 -> 64, on both vendors' training split; sized for about 30 minutes on an idle 2-core CPU
    (runs here: 26.1 and 29.0 min; CLIP 844-951 images/s, the 32x32 U-Net 110-122, the 64x64 upsampler 77-86; README)."""
    mnist = _demo()
    unet = UNetConfig(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,))
    dec_train = TrainConfig(batch_size=64, total_nimg=140_000, lr=2e-3, warmup_nimg=3_000, ema_halflife_nimg=10_000,
                            ema_rampup=0.1, precision="fp32", checkpoint_every_nimg=10_000)  # fmt: skip
    up_net = UNetConfig(base_channels=16, channel_mults=(1, 2, 2, 2), num_res_blocks=1)
    up_train = TrainConfig(batch_size=32, total_nimg=24_000, lr=2e-3, warmup_nimg=2_000, ema_halflife_nimg=5_000,
                           ema_rampup=0.1, precision="fp32", checkpoint_every_nimg=4_000)  # fmt: skip
    clip_train = TrainConfig(total_nimg=100_000, batch_size=256, lr=1e-3, warmup_nimg=10_000,
                             ema_halflife_nimg=10_000, precision="fp32", checkpoint_every_nimg=50_000)  # fmt: skip
    return replace(
        mnist,
        data=DataConfig(source="emoji", image_size=64, channels=3),
        clip=ClipStage(train=clip_train),
        # y = the CLIP's image embeddings (DALL-E 2's y). embedder.kind=learned trains the contrastive encoder
        # below instead: the README's emoji benchmark compares the two
        embedder=replace(
            mnist.embedder,
            kind="clip-trained",
            image_size=32,
            aug_copies=4,
            train=replace(mnist.embedder.train, total_nimg=30_000),
        ),
        decoder=DecoderStage(net=unet, train=dec_train, image_size=32),
        baseline=DecoderStage(net=unet, train=dec_train, image_size=32, condition="none"),
        # the upsampler diffuses the detail over bicubic (residual std 0.092 on these images): README's
        # upsampler table compares it with diffusing the image
        upsampler=UpsamplerStage(
            net=up_net,
            train=up_train,
            residual=True,
            diffusion=DiffusionConfig(sigma_data=0.1, p_mean=-2.8, sigma_max=20.0),
        ),
        palette=PaletteStage(net=unet, train=dec_train),  # at the data's size (data.image_size=32 to match)
        sample=SampleConfig(
            sampler="dpmpp_2m",
            num_steps=20,
            guidance=3.0,
            precision="bf16",
            upsampler_sampler="dpmpp_2m_sde",
            upsampler_num_steps=20,
            batch_size=128,
        ),  # fmt: skip
        demo=DemoConfig(stages=("clip", "prior", "decoder", "upsampler")),
    )


def _emoji_text() -> RunConfig:
    """Text to image on 32x32 emoji, the DALL-E 2 way (`make demo-emoji-text`): a CLIP trained on the emoji
    names (scratch text tower), y = its image embeddings, the text prior p(y | caption), the decoder
    p(x | y, caption) ("embedding+text"), and the GLIDE arm p(x | caption) as the baseline with the same U-Net
    and budget. Without the GLIDE arm `make demo-emoji-text` ran in 34.9 minutes on 2 cores (CLIP 531 img/s, the
    32x32 U-Net 97 img/s; README)."""
    emoji = _emoji()
    unet = emoji.decoder.net
    dec_train = replace(emoji.decoder.train, total_nimg=160_000, checkpoint_every_nimg=16_000)
    return replace(
        emoji,
        data=DataConfig(source="emoji", image_size=32, channels=3),
        embedder=EmbedderStage(kind="clip-trained"),
        prior=replace(emoji.prior, condition="text", train=replace(emoji.prior.train, total_nimg=200_000)),
        decoder=DecoderStage(net=unet, train=dec_train, condition="embedding+text"),
        baseline=DecoderStage(net=unet, train=dec_train, condition="text"),  # GLIDE: no prior
        # the sampler its README grid was drawn with
        sample=replace(
            emoji.sample, sampler="heun", num_steps=18, prior_candidates=2, guidance=3.0, prior_guidance=1.0
        ),  # fmt: skip
        # the grid's captions: six seen in training, then six of the emoji test split's names, never trained on
        demo=DemoConfig(
            stages=("clip", "prior", "decoder"),
            prompts=(
                "beating heart",
                "pensive face",
                "police officer",
                "slot machine",
                "panama flag",
                "hourglass with flowing sand",
                "two hearts",
                "face holding back tears",
                "penguin",
                "train",
                "taiwan flag",
                "pilot",
            ),
        ),  # fmt: skip
    )


PRESETS = {"mnist": _demo, "tiny": _tiny, "emoji": _emoji, "emoji-text": _emoji_text}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise VcdmError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
