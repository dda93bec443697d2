"""The pipeline: a chain of diffusion components, each sampled given what the ones before it drew.

Two-stage ("visual chain of thought"): prior -> decoder, y ~ p(y | a), then x ~ p(x | y, a). Single-stage:
the decoder alone (a baseline whose condition is "none" or "label"). Later components (an upsampler) chain the
same way: each declares which earlier outputs it is conditioned on.

Each sample depends only on its seed: a component's starting noise and the fresh noise of stochastic
samplers come from vcdm.seeding with the component's own stream, whatever the batch it is drawn in.
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
from vcdm.seeding import COMPONENT_STREAMS, FRESH, START, generators, seeded_randn

Wrapper = Callable[[Any], Any]  # denoiser -> denoiser (vcdm.guidance)
# cond(outputs so far, labels or None, batch size, device) -> the component's condition dict or None
Conditioner = Callable[[dict[str, Tensor], "Tensor | None", int, Any], "dict[str, Tensor] | None"]


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
    """

    name: str
    denoiser: nn.Module
    meta: dict[str, Any]
    shape: tuple[int, ...]
    condition: Conditioner
    settings: Callable[[SampleConfig], tuple[str, int, float]]
    wrapper: Wrapper | None = None
    autocast: bool = True
    diffusion: DiffusionConfig = field(init=False)

    def __post_init__(self) -> None:
        self.diffusion = from_dict(DiffusionConfig, self.meta["diffusion"])

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


def prior_component(prior: nn.Module, meta: dict[str, Any], wrapper: Wrapper | None = None) -> Component:
    """The embedding prior p(y [| label]): conditioned on the labels when it is class-conditional."""
    labelled = meta["net"]["num_classes"] > 0

    def condition(outputs, labels, n, device):
        return {"label": labels} if labelled and labels is not None else None

    return Component("prior", prior, meta, (meta["net"]["emb_dim"],), condition, _prior_settings, wrapper,
                     autocast=False)  # fmt: skip


def decoder_component(decoder: nn.Module, meta: dict[str, Any], wrapper: Wrapper | None = None) -> Component:
    """An image decoder p(x | y, a), p(x | a) or p(x): y from the prior's output, a from the labels (the null
    condition when a label decoder is sampled without labels)."""
    condition_kind = meta.get("condition", "none")
    net = meta["net"]

    def condition(outputs, labels, n, device):
        cond: dict[str, Tensor] = {}
        if "embedding" in condition_kind:
            cond["emb"] = outputs["prior"]
        if "label" in condition_kind and labels is not None:
            cond["label"] = labels
        elif "label" in condition_kind:
            cond["null"] = torch.ones(n, dtype=torch.bool, device=device)
        return cond or None

    shape = (net["in_channels"], net["image_size"], net["image_size"])
    return Component("decoder", decoder, meta, shape, condition, _decoder_settings, wrapper)


@dataclass
class PipelineOutput:
    images: Tensor  # float32 [-1, 1] (N, C, H, W)
    embeddings: (
        Tensor | None
    )  # un-normalised embeddings y the decoder was given (N, D); None for single-stage
    seeds: list[int]
    labels: Tensor | None


class Pipeline:
    """Generation from a chain of trained components (prior -> decoder, or a decoder alone).

    Args:
        components: in sampling order; each may use the outputs of those before it.
        stats: the embedding statistics (two-stage): the prior samples normalised y, outputs are raw y.
        device: where the networks run.
        embedder: the run's image embedder (inversion and embedding edits need E(x)); optional.
    """

    def __init__(
        self,
        components: Sequence[Component],
        stats: EmbeddingStats | None = None,
        device: torch.device | str = "cpu",
        embedder: Any = None,
    ):
        self.components = {c.name: c for c in components}
        for c in components:
            c.denoiser = c.denoiser.to(device)
        self.stats, self.device, self.embedder = stats, device, embedder
        if self.uses_embedding and ("prior" not in self.components or stats is None):
            raise VcdmError(
                "a decoder conditioned on embeddings needs the prior and the embedding statistics"
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
        return self.components["decoder"].shape

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
        return (
            self.num_classes > 0 or (self.prior_meta or {"net": {"num_classes": 0}})["net"]["num_classes"] > 0
        )

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        decoder: str | None = "decoder",
        device: torch.device | str = "cpu",
        *,
        guidance: dict[str, Wrapper] | None = None,
        embedder: bool = False,
    ) -> Pipeline:
        """Load the exported components of a run directory.

        Args:
            decoder: the image stage to sample: "decoder" (two-stage: the prior is loaded too), "baseline",
                or None for the prior alone (sample(..., until="prior")).
            guidance: per component name, a denoiser -> denoiser wrapper applied after classifier-free
                guidance (e.g. {"decoder": vcdm.guidance.static_threshold}).
            embedder: also load the run's image embedder (for inversion and embedding edits).
        """
        from vcdm.runs import RunDir
        from vcdm.stages import load_embedder, load_embeddings, load_model

        run, guidance = RunDir(run_dir), guidance or {}
        unknown = set(guidance) - {"prior", "decoder"}
        if unknown:
            raise VcdmError(
                f"guidance for unknown components {sorted(unknown)}; expected 'prior' or 'decoder'"
            )
        components, stats, condition = [], None, "embedding"
        if decoder is not None:
            dec, dec_meta = load_model(run.stage(decoder), "image")
            components.append(decoder_component(dec, dec_meta, guidance.get("decoder")))
            condition = dec_meta.get("condition", "none")
        if "embedding" in condition:
            prior, prior_meta = load_model(run.stage("prior"), "prior")
            components.insert(0, prior_component(prior, prior_meta, guidance.get("prior")))
            stats = load_embeddings(run).stats
        emb = None
        if embedder:
            emb = load_embedder(run.path, run.load_config())
            if emb is not None and hasattr(emb, "encoder"):  # the learned embedder: follow the pipeline
                emb.encoder.to(device)
        return cls(components, stats, device=device, embedder=emb)

    # ---- sampling ----

    def _labels(self, labels: Tensor | int | Sequence[int] | None, n: int) -> Tensor | None:
        if labels is None:
            return None
        t = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        t = t.expand(n) if t.numel() == 1 else t
        if len(t) != n:
            raise VcdmError(f"got {len(t)} labels for {n} seeds")
        if not self.class_conditional:
            raise VcdmError("labels were given but neither the decoder nor the prior is class-conditional")
        return t.to(self.device)

    @torch.no_grad()
    def run(
        self,
        seeds: Sequence[int],
        cfg: SampleConfig,
        labels: Tensor | None = None,
        *,
        given: dict[str, Tensor] | None = None,
        until: str | None = None,
    ) -> dict[str, Tensor]:
        """Sample one batch through the chain: {component name: its output on the device}.

        given: outputs to use instead of sampling those components (e.g. {"prior": y} decodes given
            normalised embeddings: the oracle arm, or edits). until: stop after this component.
        Components before `until` that are given are not sampled; labels are a (B,) int64 tensor or None.
        """
        outputs: dict[str, Tensor] = {}
        autocast = torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16,
                                  enabled=cfg.precision == "bf16")  # fmt: skip
        for name, comp in self.components.items():
            if given is not None and name in given:
                outputs[name] = given[name].to(self.device)
            else:
                cond = comp.condition(outputs, labels, len(seeds), self.device)
                with autocast if comp.autocast else contextlib.nullcontext():
                    outputs[name] = comp.sample(seeds, cond, cfg, self.device)
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
        progress: bool = False,
    ) -> dict[str, Tensor]:
        """`run` over all seeds in batches of cfg.batch_size: {component name: float32 output on the CPU}.

        given: as for `run`, one row per seed (e.g. {"prior": normalised embeddings}).
        """
        cfg = cfg or SampleConfig()
        seeds = [int(s) for s in seeds]
        labels_t = self._labels(labels, len(seeds))
        parts: dict[str, list[Tensor]] = {}
        for i in tqdm(range(0, len(seeds), cfg.batch_size), desc="sampling", disable=not progress):
            rows = slice(i, i + cfg.batch_size)
            lab = labels_t[rows] if labels_t is not None else None
            given_rows = {k: v[rows] for k, v in (given or {}).items()}
            for name, x in self.run(seeds[rows], cfg, lab, given=given_rows, until=until).items():
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
    ) -> PipelineOutput:
        """Generate one image per seed (two-stage when the decoder takes y): images in [-1, 1], raw y."""
        seeds = [int(s) for s in seeds]
        out = self.sample(seeds, cfg, labels, given=given, progress=progress)
        labels_t = self._labels(labels, len(seeds))
        emb = self.stats.denormalize(out["prior"]) if "prior" in out else None
        return PipelineOutput(out["decoder"].clamp(-1, 1), emb, seeds,
                              labels_t.cpu() if labels_t is not None else None)  # fmt: skip
