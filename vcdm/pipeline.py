"""The pipeline: a chain of diffusion components, each sampled given what the ones before it drew.

Two-stage ("visual chain of thought"): prior -> decoder, y ~ p(y | a), then x ~ p(x | y, a). Single-stage:
the decoder alone (a baseline whose condition is "none" or "label"). A cascade adds an upsampler (SR3 with
conditioning augmentation, vcdm.stages.upsampler) on top: prior -> decoder at low res -> upsampler at the data's
size, x_hr ~ p(x_hr | x_lr [, y, a]). Each component declares which earlier outputs it is conditioned on.

Each sample depends only on its seed: a component's starting noise, the fresh noise of stochastic samplers and
the noise of the upsampler's conditioning augmentation come from vcdm.seeding with the component's own stream,
whatever the batch it is drawn in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from vcdm.config import DiffusionConfig, SampleConfig, from_dict
from vcdm.diffusion import DDPMSchedule, karras_sigmas
from vcdm.embedders import EmbeddingStats
from vcdm.errors import VcdmError
from vcdm.guidance import classifier_free
from vcdm.samplers import SAMPLERS
from vcdm.seeding import AUG, COMPONENT_STREAMS, FRESH, START, generators, mix_seed, seeded_randn

CANDIDATES = 0xCA  # the seeds of a text prior's extra candidates: mix_seed(seed, CANDIDATES, j), j >= 1
TEXT_KEYS = ("text_tokens", "text_mask", "text_emb")  # a prompt's conditioning (vcdm.stages.text)

Wrapper = Callable[[Any], Any]  # denoiser -> denoiser (vcdm.guidance)
# cond(outputs so far, labels or None, the batch's seeds, sample config, device) -> the condition dict or None
Conditioner = Callable[
    [dict[str, Tensor], "Tensor | None", Sequence[int], SampleConfig, Any], "dict[str, Tensor] | None"
]


def sampling_sigmas(diffusion: DiffusionConfig, num_steps: int) -> Tensor:
    """The sampling grid for a stage: Karras for EDM models, the respaced DDPM grid for epsilon models."""
    if diffusion.parameterization == "eps":
        return DDPMSchedule(diffusion.beta_schedule, diffusion.num_timesteps).sigmas_for_sampling(num_steps)
    return karras_sigmas(num_steps, diffusion.sigma_min, diffusion.sigma_max, diffusion.rho)


def sampler_options(sampler: str, cfg: SampleConfig) -> dict[str, Any]:
    """The SampleConfig options a sampler takes (ddim's eta, heun's churn)."""
    return {"ddim": {"eta": cfg.eta}, "heun": {"s_churn": cfg.s_churn}}.get(sampler, {})


def sample_stage(
    denoiser: nn.Module,
    diffusion: DiffusionConfig,
    shape: tuple[int, ...],
    seeds: Sequence[int],
    cond: dict[str, Tensor] | None,
    *,
    sampler: str,
    num_steps: int,
    guidance: float = 1.0,
    stream: int = 0,
    options: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    wrapper: Wrapper | None = None,
) -> Tensor:
    """Sample one denoiser for a batch of seeds: (len(seeds), *shape) float32.

    guidance: classifier-free weight (1 = the conditional model as trained; applied only when cond is given).
    stream: separates the random streams of different components that share a seed.
    wrapper: denoiser -> denoiser applied after classifier-free guidance (classifier / CLIP guidance,
        thresholding: vcdm.guidance).
    """
    if sampler not in SAMPLERS:
        raise VcdmError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    noise = seeded_randn(seeds, shape, stream, START, device=device)
    fresh = generators(seeds, stream, FRESH)
    d = classifier_free(denoiser, guidance) if cond is not None and guidance != 1.0 else denoiser
    d = wrapper(d) if wrapper is not None else d
    sigmas = sampling_sigmas(diffusion, num_steps)
    return SAMPLERS[sampler](d, noise, sigmas, cond, generator=fresh, **(options or {}))


@dataclass
class Component:
    """One diffusion model of a pipeline.

    Attributes:
        name: its role and random stream ("prior", "decoder", ...: vcdm.seeding.COMPONENT_STREAMS).
        denoiser: D(x, sigma, cond) -> x0_hat.
        meta: its export meta ("net", "diffusion", ...).
        shape: the shape of one sample.
        condition: builds its condition from the outputs of the components before it and the labels.
        wrapper: guidance applied after classifier-free guidance (vcdm.guidance), or None.
        autocast: sample under SampleConfig.precision's autocast (False keeps it fp32, as for the prior,
            whose output feeds everything downstream).
        settings: SampleConfig -> (sampler, steps, classifier-free weight).
        space: for a stage sampled in an autoencoder's latent space, its vcdm.latent.LatentSpace: `shape` is
            then the latent's and the pipeline decodes the samples (`out_shape`) before later components
            see them; None for pixels.
    """

    name: str
    denoiser: nn.Module
    meta: dict[str, Any]
    shape: tuple[int, ...]
    condition: Conditioner
    settings: Callable[[SampleConfig], tuple[str, int, float]]
    wrapper: Wrapper | None = None
    autocast: bool = True
    space: Any = None
    diffusion: DiffusionConfig = field(init=False)

    def __post_init__(self) -> None:
        self.diffusion = from_dict(DiffusionConfig, self.meta["diffusion"])

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The shape of one output: the decoded image's in latent space, else `shape`."""
        return tuple(self.meta["latent"]["image_shape"]) if self.space is not None else self.shape

    def sample(
        self, seeds: Sequence[int], cond: dict[str, Tensor] | None, cfg: SampleConfig, device
    ) -> Tensor:
        sampler, steps, guidance = self.settings(cfg)
        return sample_stage(self.denoiser, self.diffusion, self.shape, seeds, cond, sampler=sampler,
                            num_steps=steps, guidance=guidance, stream=COMPONENT_STREAMS[self.name],
                            options=sampler_options(sampler, cfg), device=device, wrapper=self.wrapper)  # fmt: skip


def _prior_settings(cfg: SampleConfig) -> tuple[str, int, float]:
    return cfg.prior_sampler, cfg.prior_num_steps, cfg.prior_guidance


def _decoder_settings(cfg: SampleConfig) -> tuple[str, int, float]:
    return cfg.sampler, cfg.num_steps, cfg.guidance


def _text_cond(outputs: dict[str, Tensor], keys: Sequence[str], who: str) -> dict[str, Tensor]:
    if "text_emb" not in outputs:
        raise VcdmError(f"this {who} is conditioned on text: give prompts (Pipeline.sample(..., prompts=[...]), "
                        "vcdm sample --prompt TEXT)")  # fmt: skip
    return {k: outputs[k] for k in keys}


@dataclass
class TextPriorComponent(Component):
    """A text-conditioned prior p(y | caption) that can draw `SampleConfig.prior_candidates` embeddings per
    sample and keep the one whose raw y is closest (cosine) to the caption's CLIP text embedding (DALL-E 2,
    Sec. 2.2, draws 2). Candidate 0 is the plain sample of the seed; candidate j >= 1 is the sample of seed
    mix_seed(seed, CANDIDATES, j), so the result still depends only on (prompt, seed)."""

    stats: EmbeddingStats | None = None

    def sample(
        self, seeds: Sequence[int], cond: dict[str, Tensor] | None, cfg: SampleConfig, device
    ) -> Tensor:
        k = cfg.prior_candidates
        if k == 1:
            return super().sample(seeds, cond, cfg, device)
        if self.stats is None:
            raise VcdmError("sample.prior_candidates > 1 needs the embedding statistics")
        all_seeds = [s if j == 0 else mix_seed(s, CANDIDATES, j) for s in seeds for j in range(k)]
        rep = {key: v.repeat_interleave(k, dim=0) for key, v in (cond or {}).items()}
        y = super().sample(all_seeds, rep, cfg, device).reshape(len(seeds), k, -1)  # (B, k, D)
        raw = torch.nn.functional.normalize(self.stats.denormalize(y.float()), dim=-1)
        score = (raw * cond["text_emb"].float()[:, None]).sum(-1)  # (B, k): cosine in CLIP space
        return y[torch.arange(len(seeds), device=y.device), score.argmax(1)]


def prior_component(
    prior: nn.Module,
    meta: dict[str, Any],
    wrapper: Wrapper | None = None,
    stats: EmbeddingStats | None = None,
) -> Component:
    """The embedding prior p(y [| label]): conditioned on the labels when it is class-conditional; on the
    prompts' text conditioning (the pipeline's outputs TEXT_KEYS) when it is text-conditional (a
    `TextPriorComponent`; stats: for its candidates' cosine in CLIP space)."""
    labelled = meta["net"]["num_classes"] > 0
    if meta["net"].get("text_width", 0) > 0:

        def text_condition(outputs, labels, seeds, cfg, device):
            return _text_cond(outputs, TEXT_KEYS, "prior")

        return TextPriorComponent("prior", prior, meta, (meta["net"]["emb_dim"],), text_condition,
                                  _prior_settings, wrapper, autocast=False, stats=stats)  # fmt: skip

    def condition(outputs, labels, seeds, cfg, device):
        return {"label": labels} if labelled and labels is not None else None

    return Component("prior", prior, meta, (meta["net"]["emb_dim"],), condition, _prior_settings, wrapper,
                     autocast=False)  # fmt: skip


def _upsampler_settings(cfg: SampleConfig) -> tuple[str, int, float]:
    return cfg.upsampler_sampler, cfg.upsampler_num_steps, cfg.upsampler_guidance


def _semantic_cond(condition_kind: str, outputs: dict[str, Tensor], labels: Tensor | None, n: int, device):
    """y from the prior's output and a from the labels, as an image component's condition_kind asks (the null
    condition when a label-conditioned component is sampled without labels)."""
    cond: dict[str, Tensor] = {}
    if "embedding" in condition_kind:
        cond["emb"] = outputs["prior"]
    if "label" in condition_kind and labels is not None:
        cond["label"] = labels
    elif "label" in condition_kind:
        cond["null"] = torch.ones(n, dtype=torch.bool, device=device)
    if "text" in condition_kind:
        cond |= _text_cond(outputs, ("text_emb",), "decoder")
    return cond


def decoder_component(
    decoder: nn.Module, meta: dict[str, Any], wrapper: Wrapper | None = None, space: Any = None
) -> Component:
    """An image decoder p(x | y, a), p(x | a) or p(x): y from the prior's output, a from the labels (the null
    condition when a label decoder is sampled without labels). space: the LatentSpace of a latent decoder."""
    condition_kind = meta.get("condition", "none")
    net = meta["net"]

    def condition(outputs, labels, seeds, cfg, device):
        return _semantic_cond(condition_kind, outputs, labels, len(seeds), device) or None

    shape = (net["in_channels"], net["image_size"], net["image_size"])
    return Component("decoder", decoder, meta, shape, condition, _decoder_settings, wrapper, space=space)


def upsampler_component(
    upsampler: nn.Module, meta: dict[str, Any], wrapper: Wrapper | None = None, space: Any = None
) -> Component:
    """The upsampler p(x_hr | x_lr [, y, a]) of a cascade, on the "decoder" output (x_lr at meta["low_res"]).

    Its condition: x_lr clamped to [-1, 1], upsampled as in training (vcdm.stages.upsampler.upsample_lowres) and
    noised at one level, lowres = up(x_lr) + sigma_aug * n with n from (seed, its stream, AUG);
    sigma_aug = SampleConfig.upsampler_aug_sigma, or the export's augment.sample_sigma when that is None. y and a
    as for the decoder (guidance weights them; the low-res image is never dropped). space: the LatentSpace of a
    latent upsampler (x_lr is then brought to the latent grid as in training, and the pipeline decodes its
    samples). A residual export (meta["residual"]) also gets cond["base"] = up(x_lr), un-noised, which its
    denoiser adds its residual to (vcdm.diffusion.ResidualDenoiser).
    """
    from vcdm.stages.upsampler import UPSAMPLE_MODE, lowres_channels, lowres_condition

    condition_kind, net, low = meta.get("condition", "none"), meta["net"], int(meta["low_res"])
    mode = meta.get("upsample", UPSAMPLE_MODE)
    extra = net["extra_in_channels"]  # the condition's channels
    size = net["image_size"]  # the (latent) grid's side
    channels = extra // lowres_channels(1, low, size, mode)  # x_lr's
    level, residual = bool(net.get("aug_embedding", False)), bool(meta.get("residual", False))
    default_sigma = float(meta["augment"]["sample_sigma"]) if level else 0.0
    stream = COMPONENT_STREAMS["upsampler"]

    def condition(outputs, labels, seeds, cfg, device):
        x_lr = outputs.get("decoder")
        if x_lr is None:
            raise VcdmError(
                "the upsampler needs the low-res images of the stage below (a decoder, or given images)"
            )
        if tuple(x_lr.shape[1:]) != (channels, low, low):
            raise VcdmError(f"the upsampler takes images ({channels}, {low}, {low}) (upsampler.low_res), got "
                            f"{tuple(x_lr.shape[1:])}")  # fmt: skip
        sigma = default_sigma if cfg.upsampler_aug_sigma is None else float(cfg.upsampler_aug_sigma)
        if sigma < 0:
            raise VcdmError(f"sample.upsampler_aug_sigma must be >= 0, got {sigma}")
        if sigma > 0 and not level:
            raise VcdmError(f"sample.upsampler_aug_sigma must be 0 for an upsampler trained without noise "
                            f"augmentation (upsampler.augment.noise 'none'), got {sigma}")  # fmt: skip
        n = len(seeds)
        noise = (seeded_randn(seeds, (extra, size, size), stream, AUG, device=device) if sigma > 0
                 else torch.zeros(n, extra, size, size, device=device))  # fmt: skip
        sigmas = torch.full((n,), sigma, device=device)
        cond = lowres_condition(x_lr.clamp(-1, 1), size, sigmas, noise, level, mode, residual)
        return cond | _semantic_cond(condition_kind, outputs, labels, n, device)

    def settings(cfg: SampleConfig) -> tuple[str, int, float]:
        if condition_kind == "none" and cfg.upsampler_guidance != 1.0:  # the low-res image is never dropped
            raise VcdmError(f"sample.upsampler_guidance must be 1: this upsampler has no y or label to guide "
                            f"(upsampler.condition 'none'), got {cfg.upsampler_guidance}")  # fmt: skip
        return _upsampler_settings(cfg)

    shape = (net["in_channels"], size, size)
    return Component("upsampler", upsampler, meta, shape, condition, settings, wrapper, space=space)


@dataclass
class PipelineOutput:
    images: Tensor  # float32 [-1, 1] (N, C, H, W): the last image component's (the upsampler's in a cascade)
    embeddings: (
        Tensor | None
    )  # un-normalised embeddings y the decoder was given (N, D); None for single-stage
    seeds: list[int]
    labels: Tensor | None
    low_res: Tensor | None = None  # a cascade's base images (the decoder's samples) in [-1, 1]; else None


def lowres_shape(upsampler: Component) -> tuple[int, int, int]:
    """The shape of the low-res images an upsampler component takes: (C, low_res, low_res)."""
    low = int(upsampler.meta["low_res"])
    return upsampler.out_shape[0], low, low


def _space(run: Any, meta: dict[str, Any]) -> Any:
    """The LatentSpace a stage's export was trained in (its "space" is "latent": a one-line VcdmError when the
    run's autoencoder is missing or was retrained since), else None."""
    if meta.get("space") != "latent":
        return None
    from vcdm.stages.autoencoder import latent_space_for

    return latent_space_for(run.path, meta)


def _uses_text(meta: dict[str, Any]) -> bool:
    """Whether a component's export is conditioned on a caption (a text prior, or a decoder's condition)."""
    return meta["net"].get("text_width", 0) > 0 or "text" in meta.get("condition", "none")


class Pipeline:
    """Generation from a chain of trained components (prior -> decoder, or a decoder alone).

    Args:
        components: in sampling order; each may use the outputs of those before it.
        stats: the embedding statistics (two-stage): the prior samples normalised y, outputs are raw y.
        device: where the networks run.
        embedder: the run's image embedder (inversion and embedding edits need E(x)); optional.
        text: a vcdm.stages.text.TextEncoder (prompts -> conditioning) for text-conditioned components.
    """

    def __init__(
        self,
        components: Sequence[Component],
        stats: EmbeddingStats | None = None,
        device: torch.device | str = "cpu",
        embedder: Any = None,
        text: Any = None,
    ):
        self.components = {c.name: c for c in components}
        for c in components:
            c.denoiser = c.denoiser.to(device)
            c.space = c.space.to(device) if c.space is not None else None
        self.stats, self.device, self.embedder, self.text = stats, device, embedder, text
        uses_y = [c.name for c in components if "embedding" in c.meta.get("condition", "none")]
        if uses_y and ("prior" not in self.components or stats is None):
            raise VcdmError(
                f"a {uses_y[0]} conditioned on embeddings needs the prior and the embedding statistics"
            )

    # ---- what the pipeline holds ----

    @property
    def decoder(self) -> nn.Module:
        return self.components["decoder"].denoiser

    @property
    def decoder_meta(self) -> dict[str, Any]:
        return self.components["decoder"].meta

    @property
    def decoder_diffusion(self) -> DiffusionConfig:
        return self.components["decoder"].diffusion

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of the decoder's images (the base images of a cascade; decoded from latent space)."""
        return self.components["decoder"].out_shape

    @property
    def latent_space(self) -> Any:
        """The decoder's vcdm.latent.LatentSpace when it samples in an autoencoder's latent space, else None."""
        return self.components["decoder"].space

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape the decoder samples (and DDIM inverts) in: the latent's, or image_shape for pixels."""
        return self.components["decoder"].shape

    @property
    def upsampler(self) -> Component | None:
        """The cascade's upsampler component, or None."""
        return self.components.get("upsampler")

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The shape of one output image: the upsampler's when there is one, else the decoder's."""
        return (self.upsampler or self.components["decoder"]).out_shape

    @property
    def condition(self) -> str:
        return self.decoder_meta.get("condition", "none") if "decoder" in self.components else "none"

    @property
    def uses_embedding(self) -> bool:
        return "embedding" in self.condition

    @property
    def num_classes(self) -> int:
        return self.decoder_meta["net"]["num_classes"] if "decoder" in self.components else 0

    @property
    def prior_meta(self) -> dict[str, Any] | None:
        prior = self.components.get("prior")
        return prior.meta if prior is not None else None

    @property
    def class_conditional(self) -> bool:
        """Whether any component takes a label."""
        return any(c.meta["net"].get("num_classes", 0) > 0 for c in self.components.values())

    @property
    def text_conditional(self) -> bool:
        """Whether any component takes a caption (sample with prompts)."""
        return any(_uses_text(c.meta) for c in self.components.values())

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        decoder: str | None = "decoder",
        device: torch.device | str = "cpu",
        *,
        guidance: dict[str, Wrapper] | None = None,
        embedder: bool = False,
        upsampler: bool | None = None,
    ) -> Pipeline:
        """Load the exported components of a run directory.

        Args:
            decoder: the image stage to sample: "decoder" (two-stage: the prior is loaded too), "baseline",
                or None for the prior alone (sample(..., until="prior")) or, with upsampler=True, the
                upsampler alone (`upsample` given images).
            guidance: per component name ("prior", "decoder", "upsampler"), a denoiser -> denoiser wrapper
                applied after classifier-free guidance (e.g. {"decoder": vcdm.guidance.static_threshold}).
            embedder: also load the run's image embedder (for inversion and embedding edits, and for an
                embedding-conditioned upsampler given images).
            upsampler: None: add RUN/upsampler on top of the image stage when it has an export and the stage
                samples below the data's size (a cascade); True: add it (it must exist and fit); False: leave
                it out (the base images alone).
        """
        from vcdm.runs import RunDir
        from vcdm.stages import load_embedder, load_embeddings, load_model

        run, guidance = RunDir(run_dir), guidance or {}
        unknown = set(guidance) - {"prior", "decoder", "upsampler"}
        if unknown:
            raise VcdmError(f"guidance for unknown components {sorted(unknown)}; expected 'prior', 'decoder' or "
                            "'upsampler'")  # fmt: skip
        components: list[Component] = []
        if decoder is not None:
            dec, dec_meta = load_model(run.stage(decoder), "image")
            dec_space = _space(run, dec_meta)  # decoded by the autoencoder it was trained on
            components.append(decoder_component(dec, dec_meta, guidance.get("decoder"), dec_space))
        if upsampler or (
            upsampler is None and decoder is not None and run.stage_meta("upsampler") is not None
        ):
            if run.stage_meta("upsampler") is None:
                raise VcdmError(f"{run.stage('upsampler')}: no upsampler export; train one with "
                                f"`vcdm train upsampler {run.path}`")  # fmt: skip
            up, up_meta = load_model(run.stage("upsampler"), "upsampler")
            top = upsampler_component(up, up_meta, guidance.get("upsampler"), _space(run, up_meta))
            base = components[0].out_shape if components else None
            if base is None or base == lowres_shape(top):
                components.append(top)
            elif upsampler or base != top.out_shape:  # a stage already at the upsampler's size needs none
                raise VcdmError(f"{run.stage('upsampler')} upsamples {up_meta['low_res']}x{up_meta['low_res']} "
                                f"images (upsampler.low_res) but {decoder} samples {base[1]}x{base[2]} "
                                f"({decoder}.image_size); sample without the upsampler (--no-upsampler)")  # fmt: skip
        stats = None
        uses_y = any("embedding" in c.meta.get("condition", "none") for c in components)
        if uses_y or not components:  # no image stage: the prior alone
            prior, prior_meta = load_model(run.stage("prior"), "prior")
            stats = load_embeddings(run).stats
            components.insert(0, prior_component(prior, prior_meta, guidance.get("prior"), stats))
        emb = None
        if embedder:
            emb = load_embedder(run.path, run.load_config())
            if emb is not None and hasattr(emb, "encoder"):  # the learned embedder: follow the pipeline
                emb.encoder.to(device)
        text = None
        if any(_uses_text(c.meta) for c in components):  # prompts are encoded by the run's CLIP
            from vcdm.stages.text import TextEncoder

            text = TextEncoder.from_run(run.path, device)
        return cls(components, stats, device=device, embedder=emb, text=text)

    # ---- sampling ----

    def _labels(self, labels: Tensor | int | Sequence[int] | None, n: int) -> Tensor | None:
        if labels is None:
            return None
        t = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        t = t.expand(n) if t.numel() == 1 else t
        if len(t) != n:
            raise VcdmError(f"got {len(t)} labels for {n} seeds")
        if not self.class_conditional:
            raise VcdmError("labels were given but no component of the pipeline is class-conditional")
        return t.to(self.device)

    def encode_prompts(self, prompts: str | Sequence[str] | None, n: int) -> dict[str, Tensor]:
        """The text conditioning (TEXT_KEYS) of one prompt per sample (a single prompt serves all n), each
        distinct prompt encoded once; {} when prompts is None. Prompts are checked (empty, too long: a one-line
        VcdmError); giving them to a pipeline without text conditioning is an error too."""
        if prompts is None:
            return {}
        prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
        if len(prompts) != n:
            raise VcdmError(f"got {len(prompts)} prompts for {n} seeds")
        if self.text is None or not self.text_conditional:
            raise VcdmError("prompts were given but no component of the pipeline is conditioned on text")
        distinct = list(dict.fromkeys(prompts))
        index = torch.tensor([distinct.index(p) for p in prompts], dtype=torch.long)
        return {k: v[index.to(v.device)] for k, v in self.text.encode(distinct).items()}

    @torch.no_grad()
    def run(
        self,
        seeds: Sequence[int],
        cfg: SampleConfig,
        labels: Tensor | None = None,
        *,
        given: dict[str, Tensor] | None = None,
        until: str | None = None,
        start: str | None = None,
    ) -> dict[str, Tensor]:
        """Sample one batch through the chain: {component name: its output on the device}.

        given: outputs to use instead of sampling those components (e.g. {"prior": y} decodes given
            normalised embeddings: the oracle arm, or edits; {"decoder": x_lr} upsamples given images).
        until: stop after this component. start: sample from this component on (the ones before it must be
            given where a later one needs their output).
        Components before `until` that are given are not sampled; labels are a (B,) int64 tensor or None.
        """
        outputs = {name: x.to(self.device) for name, x in (given or {}).items()}
        autocast = torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16,
                                  enabled=cfg.precision == "bf16")  # fmt: skip
        started = start is None
        for name, comp in self.components.items():
            started = started or name == start
            if started and name not in outputs:
                cond = comp.condition(outputs, labels, seeds, cfg, self.device)
                with autocast if comp.autocast else contextlib.nullcontext():
                    outputs[name] = comp.sample(seeds, cond, cfg, self.device)
                if comp.space is not None:  # latent diffusion: later components and callers see images
                    outputs[name] = comp.space.decode(outputs[name])
            if name == until:
                break
        return outputs

    def sample_embeddings(self, seeds: Sequence[int], labels: Tensor | None, cfg: SampleConfig) -> Tensor:
        """Draw normalised embeddings y from the prior for one batch: (len(seeds), D) on the device."""
        return self.run(seeds, cfg, labels, until="prior")["prior"]

    def sample(
        self,
        seeds: Sequence[int],
        cfg: SampleConfig | None = None,
        labels: Tensor | int | Sequence[int] | None = None,
        *,
        given: dict[str, Tensor] | None = None,
        until: str | None = None,
        start: str | None = None,
        progress: bool = False,
        prompts: str | Sequence[str] | None = None,
    ) -> dict[str, Tensor]:
        """`run` over all seeds in batches of cfg.batch_size: {component name: float32 output on the CPU}.

        given: as for `run`, one row per seed (e.g. {"prior": normalised embeddings}).
        prompts: for text-conditioned components, one per seed or one for all (`encode_prompts`); a sample
            depends only on (its prompt, its seed).
        """
        cfg = cfg or SampleConfig()
        seeds = [int(s) for s in seeds]
        text = self.encode_prompts(prompts, len(seeds))
        given = {**text, **(given or {})} if text else given
        labels_t = self._labels(labels, len(seeds))
        parts: dict[str, list[Tensor]] = {}
        for i in tqdm(range(0, len(seeds), cfg.batch_size), desc="sampling", disable=not progress):
            rows = slice(i, i + cfg.batch_size)
            lab = labels_t[rows] if labels_t is not None else None
            given_rows = {k: v[rows] for k, v in (given or {}).items()}
            for name, x in self.run(
                seeds[rows], cfg, lab, given=given_rows, until=until, start=start
            ).items():
                if name not in text:  # a prompt's conditioning is an input, not an output
                    parts.setdefault(name, []).append(x.float().cpu())
        return {name: torch.cat(xs) for name, xs in parts.items()}

    def __call__(
        self,
        seeds: Sequence[int],
        cfg: SampleConfig | None = None,
        labels: Tensor | int | Sequence[int] | None = None,
        *,
        given: dict[str, Tensor] | None = None,
        progress: bool = False,
        prompts: str | Sequence[str] | None = None,
    ) -> PipelineOutput:
        """Generate one image per seed (two-stage when the decoder takes y, then upsampled in a cascade): images
        in [-1, 1], raw y, and a cascade's base images. prompts: as for `sample`."""
        seeds = [int(s) for s in seeds]
        out = self.sample(seeds, cfg, labels, given=given, progress=progress, prompts=prompts)
        labels_t = self._labels(labels, len(seeds))
        emb = self.stats.denormalize(out["prior"]) if "prior" in out else None
        cascade = "upsampler" in out
        images = out["upsampler"] if cascade else out["decoder"]
        return PipelineOutput(images.clamp(-1, 1), emb, seeds, labels_t.cpu() if labels_t is not None else None,
                              low_res=out["decoder"].clamp(-1, 1) if cascade else None)  # fmt: skip

    def upsample(
        self,
        images: Tensor,
        seeds: Sequence[int],
        cfg: SampleConfig | None = None,
        labels: Tensor | int | Sequence[int] | None = None,
        *,
        embeddings: Tensor | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Upsample given images with the pipeline's upsampler, exactly as a cascade upsamples its base samples.

        Args:
            images: (N, C, low_res, low_res) in [-1, 1] (vcdm.cli.common.read_images conforms files to it).
            seeds: one per image: its starting, fresh and augmentation noise (as in sampling).
            cfg: sampler, steps, guidance and augmentation level (SampleConfig.upsampler_*).
            labels: for a label-conditioned upsampler (None: its null condition).
            embeddings: raw y (N, D) for an embedding-conditioned upsampler; None embeds the images with the
                pipeline's embedder (from_run(..., embedder=True)).
        Returns:
            (N, C, H, W) float32 in [-1, 1] on the CPU.
        """
        top = self.upsampler
        if top is None:
            raise VcdmError("this pipeline has no upsampler (Pipeline.from_run(RUN, upsampler=True))")
        shape = lowres_shape(top)
        if images.ndim != 4 or tuple(images.shape[1:]) != shape:
            raise VcdmError(f"images: expected (N, {', '.join(map(str, shape))}) (upsampler.low_res), got "
                            f"{tuple(images.shape)}")  # fmt: skip
        if len(seeds) != len(images):
            raise VcdmError(f"got {len(seeds)} seeds for {len(images)} images")
        given = {"decoder": images.float()}
        if "embedding" in top.meta.get("condition", "none"):
            if embeddings is None and self.embedder is None:
                raise VcdmError("an embedding-conditioned upsampler needs embeddings: pass embeddings=, or load the "
                                "pipeline with its embedder (Pipeline.from_run(..., embedder=True))")  # fmt: skip
            raw = embeddings if embeddings is not None else self.embed_images(images)
            given["prior"] = self.stats.normalize(raw.float())
        out = self.sample(seeds, cfg, labels, given=given, start="upsampler", progress=progress)
        return out["upsampler"].clamp(-1, 1)

    @torch.no_grad()
    def embed_images(self, images: Tensor) -> Tensor:
        """Raw embeddings y (B, D) of images (B, C, H, W) in [-1, 1] with the pipeline's embedder, the images
        resized (bicubic, antialiased) to the learned embedder's input size when they are not at it (a cascade's
        base images, or an embedder trained at another size)."""
        if self.embedder is None:
            raise VcdmError("this pipeline has no image embedder (precomputed embeddings, or not loaded): load it "
                            "with Pipeline.from_run(..., embedder=True) (vcdm.editing.load_pipeline does) from a "
                            "run with a learned or CLIP embedder")  # fmt: skip
        encoder = getattr(self.embedder, "encoder", None)
        x = images.to(self.device, torch.float32)
        if encoder is not None and x.shape[-1] != encoder.cfg.image_size:  # the learned embedder's size
            size = (encoder.cfg.image_size,) * 2
            x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True).clamp(-1, 1)
        return torch.cat([self.embedder.encode_images(x[i : i + 256]).float() for i in range(0, len(x), 256)])
