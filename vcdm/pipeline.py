"""The two-stage ("visual chain-of-thought") pipeline: y ~ prior(. | a), then x ~ decoder(. | y, a).

The single-stage baselines are the same code with a decoder whose condition is "none" or "label".
Each sample depends only on its seed: its starting noise and the fresh noise of stochastic samplers come
from generators seeded by (seed, stage), whatever the batch it is drawn in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from vcdm.training.loop import mix_seed

_NOISE, _CHURN = 1, 2
_PRIOR, _DECODER = 11, 12


def sampling_sigmas(diffusion: DiffusionConfig, num_steps: int) -> Tensor:
    """The sampling grid for a stage: Karras for EDM models, the respaced DDPM grid for epsilon models."""
    if diffusion.parameterization == "eps":
        return DDPMSchedule(diffusion.beta_schedule, diffusion.num_timesteps).sigmas_for_sampling(num_steps)
    return karras_sigmas(num_steps, diffusion.sigma_min, diffusion.sigma_max, diffusion.rho)


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
    wrapper: Callable[[Any], Any] | None = None,
) -> Tensor:
    """Sample one stage for a batch of seeds: (len(seeds), *shape) float32.

    guidance: classifier-free weight (1 = the conditional model as trained; applied only when cond is given).
    stream: separates the random streams of different stages that share a seed.
    wrapper: denoiser -> denoiser applied after classifier-free guidance (classifier / CLIP guidance,
        thresholding: vcdm.guidance).
    """
    if sampler not in SAMPLERS:
        raise VcdmError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    gens = [torch.Generator().manual_seed(mix_seed(s, stream, _NOISE)) for s in seeds]
    noise = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)
    churn = [torch.Generator().manual_seed(mix_seed(s, stream, _CHURN)) for s in seeds]
    d = classifier_free(denoiser, guidance) if cond is not None and guidance != 1.0 else denoiser
    d = wrapper(d) if wrapper is not None else d
    sigmas = sampling_sigmas(diffusion, num_steps)
    return SAMPLERS[sampler](d, noise, sigmas, cond, generator=churn, **(options or {}))


def _sampler_options(sampler: str, cfg: SampleConfig) -> dict[str, Any]:
    if sampler == "ddim":
        return {"eta": cfg.eta}
    if sampler == "heun":
        return {"s_churn": cfg.s_churn}
    return {}


@dataclass
class PipelineOutput:
    images: Tensor  # float32 [-1, 1] (N, C, H, W)
    embeddings: (
        Tensor | None
    )  # un-normalised embeddings y the decoder was given (N, D); None for single-stage
    seeds: list[int]
    labels: Tensor | None


class Pipeline:
    """Two-stage or single-stage generation from trained stages.

    Args:
        decoder: image denoiser; decoder_meta: its export meta ("net", "diffusion", "condition").
        prior, prior_meta, stats: the embedding prior and the embedding statistics (two-stage only).
    """

    def __init__(
        self,
        decoder: nn.Module,
        decoder_meta: dict[str, Any],
        prior: nn.Module | None = None,
        prior_meta: dict[str, Any] | None = None,
        stats: EmbeddingStats | None = None,
        device: torch.device | str = "cpu",
    ):
        self.decoder, self.decoder_meta = decoder.to(device), decoder_meta
        self.prior, self.prior_meta, self.stats = prior, prior_meta, stats
        if prior is not None:
            self.prior = prior.to(device)
        self.device = device
        self.decoder_wrapper: Callable[[Any], Any] | None = None  # applied after CFG (vcdm.guidance wrappers)
        self.condition = decoder_meta.get("condition", "none")
        self.decoder_diffusion = from_dict(DiffusionConfig, decoder_meta["diffusion"])
        net = decoder_meta["net"]
        self.image_shape = (net["in_channels"], net["image_size"], net["image_size"])
        self.num_classes = net["num_classes"]
        if self.uses_embedding and (prior is None or stats is None):
            raise VcdmError(
                "a decoder conditioned on embeddings needs the prior and the embedding statistics"
            )

    @property
    def uses_embedding(self) -> bool:
        return "embedding" in self.condition

    @classmethod
    def from_run(
        cls, run_dir: str | Path, decoder: str = "decoder", device: torch.device | str = "cpu"
    ) -> Pipeline:
        """Load the exported stages of a run directory (decoder: "decoder" or "baseline")."""
        from vcdm.stages import load_embeddings, load_model

        run_dir = Path(run_dir)
        dec, dec_meta = load_model(run_dir / decoder, "decoder")
        prior = prior_meta = stats = None
        if "embedding" in dec_meta.get("condition", "none"):
            prior, prior_meta = load_model(run_dir / "prior", "prior")
            stats = load_embeddings(run_dir).stats
        return cls(dec, dec_meta, prior, prior_meta, stats, device=device)

    def _labels(self, labels: Tensor | int | None, n: int) -> Tensor | None:
        if labels is None:
            return None
        t = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        t = t.expand(n) if t.numel() == 1 else t
        if len(t) != n:
            raise VcdmError(f"got {len(t)} labels for {n} seeds")
        if self.num_classes == 0 and (self.prior_meta is None or self.prior_meta["net"]["num_classes"] == 0):
            raise VcdmError("labels were given but neither the decoder nor the prior is class-conditional")
        return t.to(self.device)

    @torch.no_grad()
    def sample_embeddings(self, seeds: Sequence[int], labels: Tensor | None, cfg: SampleConfig) -> Tensor:
        """Draw normalised embeddings y from the prior: (len(seeds), D)."""
        prior_diff = from_dict(DiffusionConfig, self.prior_meta["diffusion"])
        use_label = labels is not None and self.prior_meta["net"]["num_classes"] > 0
        cond = {"label": labels} if use_label else None
        return sample_stage(self.prior, prior_diff, (self.prior_meta["net"]["emb_dim"],), seeds, cond,
                            sampler=cfg.prior_sampler, num_steps=cfg.prior_num_steps, guidance=cfg.prior_guidance,
                            stream=_PRIOR, options=_sampler_options(cfg.prior_sampler, cfg), device=self.device)  # fmt: skip

    @torch.no_grad()
    def sample_images(
        self, seeds: Sequence[int], emb: Tensor | None, labels: Tensor | None, cfg: SampleConfig
    ) -> Tensor:
        """Draw images from the decoder given normalised embeddings (and labels): (len(seeds), C, H, W)."""
        cond: dict[str, Tensor] = {}
        if self.uses_embedding:
            cond["emb"] = emb
        if "label" in self.condition and labels is not None:
            cond["label"] = labels
        elif "label" in self.condition:
            cond["null"] = torch.ones(len(seeds), dtype=torch.bool, device=self.device)
        return sample_stage(self.decoder, self.decoder_diffusion, self.image_shape, seeds, cond or None,
                            sampler=cfg.sampler, num_steps=cfg.num_steps, guidance=cfg.guidance, stream=_DECODER,
                            options=_sampler_options(cfg.sampler, cfg), device=self.device,
                            wrapper=self.decoder_wrapper)  # fmt: skip

    def __call__(
        self,
        seeds: Sequence[int],
        cfg: SampleConfig | None = None,
        labels: Tensor | int | None = None,
        *,
        progress: bool = False,
    ) -> PipelineOutput:
        """Generate one image per seed (two-stage when the decoder takes embeddings)."""
        cfg = cfg or SampleConfig()
        seeds = [int(s) for s in seeds]
        labels_t = self._labels(labels, len(seeds))
        images, embs = [], []
        chunks = range(0, len(seeds), cfg.batch_size)
        device_type = torch.device(self.device).type
        autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
        for i in tqdm(chunks, desc="sampling", disable=not progress):
            s = seeds[i : i + cfg.batch_size]
            lab = labels_t[i : i + cfg.batch_size] if labels_t is not None else None
            emb = self.sample_embeddings(s, lab, cfg) if self.uses_embedding else None
            with autocast:  # the decoder only: the prior is cheap and its output feeds everything downstream
                images.append(self.sample_images(s, emb, lab, cfg).float().clamp(-1, 1).cpu())
            if emb is not None:
                embs.append(self.stats.denormalize(emb.float().cpu()))
        return PipelineOutput(torch.cat(images), torch.cat(embs) if embs else None, seeds,
                              labels_t.cpu() if labels_t is not None else None)  # fmt: skip
