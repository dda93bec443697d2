"""Diffusion stages: the embedding prior, the two-stage image decoder and the single-stage baseline.

Each is a raw network wrapped into a denoiser D(x, sigma, cond) -> x0_hat by its parameterisation (EDM
preconditioning, or DDPM epsilon prediction with its adapter), trained with the denoising loss and
classifier-free condition dropout (`DiffusionTask`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from vcdm.config import DecoderStage, DiffusionConfig, RunConfig, from_dict, to_dict
from vcdm.data import ImageData
from vcdm.diffusion import DDPMSchedule, EDMPrecond, EpsPrecond, ResidualDenoiser, ddpm_loss, edm_loss
from vcdm.errors import VcdmError
from vcdm.guidance import drop_condition
from vcdm.networks import PriorConfig, PriorTransformer, UNet, UNetConfig
from vcdm.runs import RunDir
from vcdm.stages.embedder import embedding_dim, load_embeddings
from vcdm.stages.registry import Prepared, StageKind, register


def wrap_denoiser(net: nn.Module, diffusion: DiffusionConfig, precond: str = "edm") -> nn.Module:
    """Raw network -> denoiser D(x, sigma, cond), by the configured parameterisation."""
    if diffusion.parameterization == "eps":
        return EpsPrecond(net, DDPMSchedule(diffusion.beta_schedule, diffusion.num_timesteps))
    return EDMPrecond(net, sigma_data=diffusion.sigma_data, kind=precond)


def make_cond(batch: dict[str, Tensor], use_emb: bool, use_label: bool) -> dict[str, Tensor] | None:
    cond = {}
    if use_emb:
        cond["emb"] = batch["emb"]
    if use_label:
        cond["label"] = batch["label"]
    return cond or None


@dataclass
class DiffusionTask:
    """Denoising loss of an image or embedding model, with classifier-free condition dropout."""

    key: str  # "image" (decoder) or "emb" (prior)
    diffusion: DiffusionConfig
    use_emb: bool = False
    use_label: bool = False
    cond_drop_prob: float = 0.0
    weighting: str = "edm"
    # text conditioning (vcdm.stages.text): the caption table, looked up by batch["caption"]; None = no text
    text: dict[str, Tensor] | None = None
    text_keys: tuple[str, ...] = ()  # the table's keys the network reads (the prior all, a decoder text_emb)
    text_drop_prob: float = 0.0  # with y: drop the caption alone (text_emb zeroed) with this probability

    def loss(self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        x0 = batch[self.key]
        cond = make_cond(batch, self.use_emb, self.use_label)
        if self.text is not None:
            from vcdm.stages.text import lookup

            cond = (cond or {}) | {k: v for k, v in lookup(self.text, batch["caption"]).items()
                                   if k in self.text_keys}  # fmt: skip
        cond = drop_condition(cond, self.cond_drop_prob, len(x0), generator)
        if self.text is not None and self.text_drop_prob > 0:
            drop = torch.rand(len(x0), generator=generator, device=generator.device) < self.text_drop_prob
            cond["text_emb"] = torch.where(drop.to(x0.device)[:, None], 0.0, cond["text_emb"])
        return denoising_loss(model, x0, cond, generator, self.diffusion, self.weighting)


def denoising_loss(
    model: nn.Module,
    x0: Tensor,
    cond: dict[str, Tensor] | None,
    generator: torch.Generator,
    diffusion: DiffusionConfig,
    weighting: str = "edm",
) -> Tensor:
    """Per-sample denoising loss (B,) of a denoiser by its parameterisation: DDPM's epsilon loss, or EDM's."""
    if diffusion.parameterization == "eps":
        inner = model.module if hasattr(model, "module") else model
        return ddpm_loss(inner, x0, cond, generator)
    d = diffusion
    return edm_loss(model, x0, cond, generator, sigma_data=d.sigma_data, p_mean=d.p_mean, p_std=d.p_std,
                    weighting=weighting)  # fmt: skip


def square_size(data: ImageData) -> int:
    """The side of the data's images; a VcdmError when they are not square (the U-Net needs square images)."""
    _, _, h, w = data.images.shape
    if h != w:
        raise VcdmError(
            f"{data.source}: images are {h}x{w}; the U-Net needs square images (set data.image_size)"
        )
    return h


def semantic_tensors(section: str, st: Any, data: ImageData, run: RunDir) -> dict[str, Tensor]:
    """The training tensors of an image stage's semantic condition: the run's normalised embeddings ("emb") when
    it uses y, the labels ("label") when it uses them (a VcdmError naming `section`.condition without labels).

    Args:
        section: the stage's place in the config ("decoder", "upsampler", "palette", ...), for the error.
        st: its config, with `uses_embedding`, `uses_label` and `condition` (vcdm.config._Conditioned).
    """
    tensors: dict[str, Tensor] = {}
    if st.uses_embedding:
        tensors["emb"] = load_embeddings(run).normalized()[: len(data)]
    if st.uses_label:
        if data.labels is None:
            raise VcdmError(
                f"{section}.condition {st.condition!r} needs class labels, but {data.source} has none"
            )
        tensors["label"] = data.labels
    return tensors


def build_denoiser(meta: dict[str, Any]) -> nn.Module:
    """The denoiser an image or prior export describes ("net", "diffusion", optional "precond"; "residual": a
    residual upsampler, which denoises x - cond["base"])."""
    net_cls, cfg_cls = (PriorTransformer, PriorConfig) if meta["kind"] == "prior" else (UNet, UNetConfig)
    net = net_cls(from_dict(cfg_cls, meta["net"]))
    denoiser = wrap_denoiser(net, from_dict(DiffusionConfig, meta["diffusion"]), meta.get("precond", "edm"))
    return ResidualDenoiser(denoiser) if meta.get("residual") else denoiser


# ---- the prior ----


def _text_fields(cfg: RunConfig, run: RunDir) -> dict[str, int]:
    """The prior's text_* fields from the run's CLIP (left as configured until it is trained)."""
    from vcdm.stages.text import clip_text_shape

    shape = clip_text_shape(run)
    if not cfg.prior.uses_text or shape is None:
        return {}
    return {"text_length": shape["length"], "text_width": shape["width"], "text_dim": shape["dim"]}


def _resolve_prior(cfg: RunConfig, data: ImageData, run: RunDir) -> RunConfig:
    st = cfg.prior
    net = replace(st.net, emb_dim=embedding_dim(cfg, run) or st.net.emb_dim,
                  num_classes=data.num_classes if st.uses_label else 0, **_text_fields(cfg, run))  # fmt: skip
    return replace(cfg, prior=replace(st, net=net))


def _prepare_prior(cfg: RunConfig, data: ImageData, run: RunDir) -> Prepared:
    st = cfg.prior
    es = load_embeddings(run)
    if es.num_images != len(data):
        raise VcdmError(f"{run.embeddings} embeds {es.num_images} images but the dataset has {len(data)}; "
                        "re-run `vcdm embed`")  # fmt: skip
    if st.uses_label and data.num_classes == 0:
        raise VcdmError(f"prior.class_conditional needs class labels, but {data.source} has none")
    meta = {"net": to_dict(st.net), "diffusion": to_dict(st.diffusion), "precond": st.precond}
    tensors = {"emb": es.normalized()}
    copies = len(es.emb) // len(data)
    if st.uses_label:
        tensors["label"] = data.labels.repeat(copies)
    task = DiffusionTask("emb", st.diffusion, use_label=st.uses_label, cond_drop_prob=st.cond_drop_prob,
                         weighting="uniform" if st.precond == "x0" else "edm")  # fmt: skip
    if st.uses_text:  # p(y | caption): y and the caption in the CLIP's one space
        from vcdm.stages.text import TEXT_KEYS, caption_table, check_clip_embeddings

        check_clip_embeddings(cfg, run, "prior.condition 'text'")
        table, index, keep = caption_table(run, data, "prior.condition 'text'")
        keep = keep.repeat(copies)
        tensors = {"emb": tensors["emb"][keep], "caption": index.repeat(copies)[keep]}
        task = replace(task, text=table, text_keys=TEXT_KEYS)
        meta["condition"] = "text"
    return Prepared(meta, tensors, task)


register(StageKind(
    name="prior", summary="diffusion model over the run's embeddings, p(y [| label])", train_path="prior.train",
    prepare=_prepare_prior, build=build_denoiser, init_stream=0xB, role="prior", resolve=_resolve_prior,
))  # fmt: skip


# ---- image decoders: the two-stage decoder and the single-stage baseline ----


def _resolve_image(section: str):
    def resolve(cfg: RunConfig, data: ImageData, run: RunDir) -> RunConfig:
        st: DecoderStage = getattr(cfg, section)
        c, h = data.images.shape[1], square_size(data)
        if st.image_size is not None and st.image_size > h:
            raise VcdmError(f"{section}.image_size must be at most the data's size {h}, got {st.image_size}")
        emb_dim = (embedding_dim(cfg, run) or st.net.emb_dim) if st.uses_embedding else 0
        text_dim = 0
        if st.uses_text:  # the run's CLIP's pooled text embedding (as configured until the CLIP is trained)
            from vcdm.stages.text import clip_text_shape

            shape = clip_text_shape(run)
            text_dim = shape["dim"] if shape is not None else st.net.text_dim
        size = st.image_size or h
        if st.space == "latent":  # the U-Net works on the autoencoder's latents (vcdm.latent)
            ae = cfg.autoencoder.net
            if size % ae.factor:
                raise VcdmError(f"{section}.image_size must be a multiple of autoencoder.net.factor ({ae.factor}) "
                                f"in latent space, got {size}")  # fmt: skip
            size, c = size // ae.factor, ae.latent_channels
        net = replace(st.net, image_size=size, in_channels=c, emb_dim=emb_dim,
                      num_classes=data.num_classes if st.uses_label else 0, text_dim=text_dim)  # fmt: skip
        net.check_sizes(f"{section}.net")
        return replace(cfg, **{section: replace(st, net=net)})

    return resolve


def _prepare_image(section: str):
    def prepare(cfg: RunConfig, data: ImageData, run: RunDir) -> Prepared:
        st: DecoderStage = getattr(cfg, section)
        latent: dict[str, Any] = {}
        if st.space == "latent":
            from vcdm.stages.autoencoder import encode_for_stage

            images, latent = encode_for_stage(cfg, data, run, section)
            tensors: dict[str, Tensor] = {"image": images}
        else:
            tensors = {"image": data.images_at(st.net.image_size)}  # decoder.image_size
        tensors |= semantic_tensors(section, st, data, run)
        meta = {"net": to_dict(st.net), "diffusion": to_dict(st.diffusion), "condition": st.condition}
        meta |= {"space": "latent", "latent": latent} if latent else {}
        task = DiffusionTask("image", st.diffusion, use_emb=st.uses_embedding, use_label=st.uses_label,
                             cond_drop_prob=st.cond_drop_prob if st.condition != "none" else 0.0)  # fmt: skip
        if st.uses_text:  # unCLIP's decoder (with y) or GLIDE (the caption alone)
            from vcdm.stages.text import caption_table, check_clip_embeddings

            what = f"{section}.condition {st.condition!r}"
            if st.uses_embedding:
                check_clip_embeddings(cfg, run, what)
            table, index, keep = caption_table(run, data, what)
            tensors = {k: v[keep] for k, v in tensors.items()} | {"caption": index[keep]}
            task = replace(task, text=table, text_keys=("text_emb",),
                           text_drop_prob=st.text_drop_prob if st.uses_embedding else 0.0)  # fmt: skip
        return Prepared(meta, tensors, task)

    return prepare


register(StageKind(
    name="decoder", summary="U-Net p(x | y [, label]) conditioned on the embeddings (the two-stage decoder)",
    train_path="decoder.train", prepare=_prepare_image("decoder"), build=build_denoiser, init_stream=0xC,
    role="image", resolve=_resolve_image("decoder"),
))  # fmt: skip
register(StageKind(
    name="baseline", summary="the same U-Net without the embeddings (the single-stage baseline)",
    train_path="baseline.train", prepare=_prepare_image("baseline"), build=build_denoiser, init_stream=0xC,
    role="image", resolve=_resolve_image("baseline"),
))  # fmt: skip
