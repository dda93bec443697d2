"""Train, save and load each stage of a run directory.

Layout of a run directory (DESIGN.md section 7):
    config.json                  the resolved RunConfig
    embedder/                    the learned embedder (checkpoints/, model.safetensors + model.json)
    embeddings.safetensors       raw embeddings of the training set (+ augmented copies) and their statistics
    prior/  decoder/  baseline/  each a trained diffusion stage (checkpoints/, log.jsonl, export)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn

from vcdm.config import DecoderStage, DiffusionConfig, PriorStage, RunConfig, to_dict
from vcdm.data import ImageData
from vcdm.diffusion import DDPMSchedule, EDMPrecond, EpsPrecond, ddpm_loss, edm_loss
from vcdm.embedders import ContrastiveTask, ConvEncoder, EmbeddingStats, LearnedEmbedder, embed_images
from vcdm.embedders.learned import EncoderConfig
from vcdm.errors import VcdmError
from vcdm.fileio import atomic_write_bytes
from vcdm.guidance import drop_condition
from vcdm.networks import PriorConfig, PriorTransformer, UNet, UNetConfig
from vcdm.training import TrainResult, train
from vcdm.training import distributed as dist
from vcdm.training.checkpoint import load_export, load_state_dict_checked, save_export
from vcdm.training.loop import mix_seed

DIFFUSION_STAGES = ("prior", "decoder", "baseline")


# ---- building denoisers from their configs ----


def wrap_denoiser(net: nn.Module, diffusion: DiffusionConfig, precond: str = "edm") -> nn.Module:
    """Raw network -> denoiser D(x, sigma, cond), by the configured parameterisation."""
    if diffusion.parameterization == "eps":
        return EpsPrecond(net, DDPMSchedule(diffusion.beta_schedule, diffusion.num_timesteps))
    return EDMPrecond(net, sigma_data=diffusion.sigma_data, kind=precond)


def decoder_net_config(stage: DecoderStage, data: ImageData, emb_dim: int) -> UNetConfig:
    """The stage's UNetConfig with the data-dependent fields filled in."""
    _, c, h, w = data.images.shape
    if h != w:
        raise VcdmError(
            f"{data.source}: images are {h}x{w}; the U-Net needs square images (set data.image_size)"
        )
    if stage.uses_label and data.num_classes == 0:
        raise VcdmError(
            f"decoder.condition {stage.condition!r} needs class labels, but {data.source} has none"
        )
    return replace(stage.net, image_size=h, in_channels=c, emb_dim=emb_dim if stage.uses_embedding else 0,
                   num_classes=data.num_classes if stage.uses_label else 0)  # fmt: skip


def build_from_meta(meta: dict[str, Any]) -> nn.Module:
    """Rebuild an (untrained) model from an export's JSON meta."""
    from vcdm.config import from_dict

    kind = meta.get("kind")
    if kind == "embedder":
        return ConvEncoder(from_dict(EncoderConfig, meta["net"]))
    if kind in ("decoder", "prior"):
        net_cls, cfg_cls = (UNet, UNetConfig) if kind == "decoder" else (PriorTransformer, PriorConfig)
        net = net_cls(from_dict(cfg_cls, meta["net"]))
        return wrap_denoiser(net, from_dict(DiffusionConfig, meta["diffusion"]), meta.get("precond", "edm"))
    raise VcdmError(f"unknown exported model kind {kind!r}")


def load_model(stage_dir: str | Path, expect_kind: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load an export (EMA weights + JSON) from a stage directory: (model in eval mode, meta)."""
    stage_dir = Path(stage_dir)
    state, meta = load_export(stage_dir)
    if expect_kind is not None and meta.get("kind") != expect_kind:
        raise VcdmError(f"{stage_dir}: holds a {meta.get('kind')!r} model, expected a {expect_kind!r} model")
    model = build_from_meta(meta)
    load_state_dict_checked(model, state, stage_dir / "model.safetensors")
    return model.eval().requires_grad_(False), meta


def _export(out: Path, res: TrainResult, meta: dict[str, Any]) -> None:
    """Export the EMA weights once (rank 0), then let every process continue."""
    if dist.rank() == 0:
        save_export(out, res.ema, meta | {"nimg": res.nimg, "seconds": res.seconds})
    dist.barrier()


# ---- tasks (what the shared loop optimises) ----


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

    def loss(self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        x0 = batch[self.key]
        cond = drop_condition(
            make_cond(batch, self.use_emb, self.use_label), self.cond_drop_prob, len(x0), generator
        )
        if self.diffusion.parameterization == "eps":
            inner = model.module if hasattr(model, "module") else model
            return ddpm_loss(inner, x0, cond, generator)
        d = self.diffusion
        return edm_loss(model, x0, cond, generator, sigma_data=d.sigma_data, p_mean=d.p_mean, p_std=d.p_std,
                        weighting=self.weighting)  # fmt: skip


# ---- stages ----


def train_embedder(
    run_dir: str | Path, cfg: RunConfig, data: ImageData, *, progress: bool = True
) -> TrainResult:
    """Train the self-supervised (contrastive) embedder into run_dir/embedder and export its EMA weights."""
    out = Path(run_dir) / "embedder"
    _, c, h, _ = data.images.shape
    enc_cfg = replace(cfg.embedder.encoder, image_size=h, in_channels=c)
    meta = {"kind": "embedder", "net": to_dict(enc_cfg)}
    torch.manual_seed(mix_seed(cfg.embedder.train.seed, 0xE))
    model = ConvEncoder(enc_cfg)
    res = train(model, ContrastiveTask(enc_cfg.augment), {"image": data.images}, cfg.embedder.train, out,
                meta=meta, progress=progress, desc="embedder")  # fmt: skip
    _export(out, res, meta)
    return res


def load_embedder(run_dir: str | Path, cfg: RunConfig):
    """The run's embedder: the trained learned one, a local CLIP, or (precomputed) None."""
    kind = cfg.embedder.kind
    if kind == "learned":
        model, _ = load_model(Path(run_dir) / "embedder", "embedder")
        return LearnedEmbedder(model)
    if kind == "clip":
        from vcdm.embedders import ClipEmbedder

        return ClipEmbedder.from_pretrained(cfg.embedder.path)
    return None


@dataclass
class EmbeddingSet:
    emb: Tensor  # raw embeddings (N * (1 + copies), D): rows [0, N) embed the dataset in order
    stats: EmbeddingStats  # per-dimension standardisation, computed on all rows
    num_images: int

    @property
    def dim(self) -> int:
        return self.emb.shape[1]

    def normalized(self) -> Tensor:
        return self.stats.normalize(self.emb)


def compute_embeddings(
    run_dir: str | Path, cfg: RunConfig, data: ImageData, *, progress: bool = True
) -> EmbeddingSet:
    """Embed the training set (and `embedder.aug_copies` augmented copies) into run_dir/embeddings.safetensors."""
    st = cfg.embedder
    if st.kind == "precomputed":
        from vcdm.embedders import PrecomputedEmbedder

        if st.aug_copies:
            raise VcdmError("embedder.aug_copies must be 0 with precomputed embeddings (no images to embed)")
        emb = PrecomputedEmbedder.from_npy(st.path, num_images=len(data)).embeddings.float()
    else:
        embedder = load_embedder(run_dir, cfg)
        gen = torch.Generator().manual_seed(mix_seed(st.train.seed, 0xA6))
        emb = embed_images(embedder, data.images, copies=st.aug_copies, augment_cfg=st.augment, generator=gen,
                           progress=progress)  # fmt: skip
    stats = EmbeddingStats.from_embeddings(emb)
    tensors = {"emb": emb.contiguous()} | {f"stats.{k}": v.contiguous() for k, v in stats.to_dict().items()}
    meta = {"num_images": str(len(data)), "copies": str(st.aug_copies), "embedder": st.kind}
    atomic_write_bytes(Path(run_dir) / "embeddings.safetensors", save(tensors, metadata=meta))
    return EmbeddingSet(emb, stats, len(data))


def load_embeddings(run_dir: str | Path) -> EmbeddingSet:
    path = Path(run_dir) / "embeddings.safetensors"
    if not path.is_file():
        raise VcdmError(f"{path}: missing; run `vcdm embed {run_dir}` first")
    from safetensors import safe_open

    t = load_file(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    stats = EmbeddingStats.from_dict({k[6:]: v for k, v in t.items() if k.startswith("stats.")})
    return EmbeddingSet(t["emb"], stats, int(meta["num_images"]))


def train_prior(
    run_dir: str | Path, cfg: RunConfig, data: ImageData, *, progress: bool = True
) -> TrainResult:
    """Train the embedding prior p(y [| label]) on the normalised embeddings into run_dir/prior."""
    st: PriorStage = cfg.prior
    es = load_embeddings(run_dir)
    if es.num_images != len(data):
        raise VcdmError(f"{run_dir}/embeddings.safetensors embeds {es.num_images} images but the dataset has "
                        f"{len(data)}; re-run `vcdm embed`")  # fmt: skip
    if st.class_conditional and data.num_classes == 0:
        raise VcdmError(f"prior.class_conditional needs class labels, but {data.source} has none")
    net_cfg = replace(st.net, emb_dim=es.dim, num_classes=data.num_classes if st.class_conditional else 0)
    meta = {
        "kind": "prior",
        "net": to_dict(net_cfg),
        "diffusion": to_dict(st.diffusion),
        "precond": st.precond,
    }
    tensors = {"emb": es.normalized()}
    if st.class_conditional:
        tensors["label"] = data.labels.repeat(len(es.emb) // len(data))
    torch.manual_seed(mix_seed(st.train.seed, 0xB))
    model = wrap_denoiser(PriorTransformer(net_cfg), st.diffusion, st.precond)
    task = DiffusionTask("emb", st.diffusion, use_label=st.class_conditional, cond_drop_prob=st.cond_drop_prob,
                         weighting="uniform" if st.precond == "x0" else "edm")  # fmt: skip
    out = Path(run_dir) / "prior"
    res = train(model, task, tensors, st.train, out, meta=meta, progress=progress, desc="prior")
    _export(out, res, meta)
    return res


def train_decoder(
    run_dir: str | Path, cfg: RunConfig, data: ImageData, *, stage: str = "decoder", progress: bool = True
) -> TrainResult:
    """Train an image decoder (`stage` "decoder": the two-stage one; "baseline": the single-stage one)."""
    st: DecoderStage = getattr(cfg, stage)
    tensors: dict[str, Tensor] = {"image": data.images}
    emb_dim = 0
    if st.uses_embedding:
        es = load_embeddings(run_dir)
        tensors["emb"] = es.normalized()[: len(data)]
        emb_dim = es.dim
    if st.uses_label:
        if data.labels is None:
            raise VcdmError(
                f"{stage}.condition {st.condition!r} needs class labels, but {data.source} has none"
            )
        tensors["label"] = data.labels
    net_cfg = decoder_net_config(st, data, emb_dim)
    meta = {"kind": "decoder", "net": to_dict(net_cfg), "diffusion": to_dict(st.diffusion),
            "condition": st.condition}  # fmt: skip
    torch.manual_seed(mix_seed(st.train.seed, 0xC))
    model = wrap_denoiser(UNet(net_cfg), st.diffusion)
    task = DiffusionTask("image", st.diffusion, use_emb=st.uses_embedding, use_label=st.uses_label,
                         cond_drop_prob=st.cond_drop_prob if st.condition != "none" else 0.0)  # fmt: skip
    out = Path(run_dir) / stage
    res = train(model, task, tensors, st.train, out, meta=meta, progress=progress, desc=stage)
    _export(out, res, meta)
    return res
