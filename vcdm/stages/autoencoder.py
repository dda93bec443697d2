"""The autoencoder stage: the KL-regularised first stage of latent diffusion (Rombach et al. 2022, LDM), trained
with the shared loop; `vcdm train autoencoder RUN`.

Loss per image x, with x_rec = D(z), z ~ q(z | x) (the reparameterised posterior sample):

    rec   = mean over pixels of |x - x_rec| (or (x - x_rec)^2)
    kl    = KL(q(z | x) || N(0, I)) / (C H W)                      closed form, vcdm.networks.autoencoder
    perc  = mean of (phi(x) - phi(x_rec))^2, phi = the evaluation classifier's penultimate features
    adv   = -mean over patches of Disc(x_rec)                      (after disc_start_nimg images)
    loss  = rec + kl_weight kl + perceptual_weight perc + lambda disc_weight adv  +  hinge(Disc)

LDM divides pixel *sums* by the batch; the pixel mean used here is that loss divided by C H W, so kl_weight
keeps LDM's meaning (1e-6). lambda is LDM's adaptive weight (Esser et al. 2021, VQGAN Eq. 7),
||grad_L rec|| / (||grad_L adv|| + 1e-4) clamped to [0, 1e4], L the decoder's last convolution. The
discriminator's hinge loss sees x_rec detached, and the generator's adversarial term sees the discriminator's
weights detached, so one optimiser step trains both players, each only on its own objective.

Perceptual term. LPIPS in its published form downloads AlexNet / VGG weights at run time, which cannot work
offline. The only trained feature network a run has is vcdm's evaluation classifier (trained once per dataset
and cached), and rFID is measured on its features: training against them would flatter the metric reported.
So the perceptual term is off by default (`autoencoder.perceptual_weight = 0`); set it > 0 to use those
features, knowing rFID is then no longer an independent check.

The export is the EMA model (autoencoder + discriminator) and model.json, whose "scale_factor" is
s = 1 / std(mu(x)) measured once on the training set right after training (`vcdm.latent.measure_scale`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vcdm.config import RunConfig, from_dict, to_dict
from vcdm.data import ImageData
from vcdm.errors import VcdmError
from vcdm.latent import SCALE_KEY, AutoencoderStage, LatentSpace, latent_side, measure_scale
from vcdm.networks.autoencoder import (
    AutoencoderConfig,
    KLAutoencoder,
    PatchDiscriminator,
    hinge_d_loss,
    kl_divergence,
    sample_posterior,
)
from vcdm.runs import RunDir
from vcdm.stages.registry import Prepared, StageKind, load_model, register
from vcdm.training import distributed as dist

ADAPTIVE_MAX = 1e4  # LDM's clamp of the adaptive discriminator weight


class AutoencoderModel(nn.Module):
    """What the autoencoder stage trains and exports: the autoencoder, the discriminator (None when
    disc_weight is 0) and `seen`, the images trained on so far (a buffer, so it is checkpointed and resumes)."""

    def __init__(self, cfg: AutoencoderConfig, disc_channels: int = 32, disc_layers: int = 2,
                 discriminator: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.autoencoder = KLAutoencoder(cfg)
        self.discriminator = (
            PatchDiscriminator(cfg.in_channels, disc_channels, disc_layers) if discriminator else None
        )
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))


def build_autoencoder(meta: dict[str, Any]) -> AutoencoderModel:
    """The model an autoencoder export's meta describes ("net", "loss")."""
    loss = meta["loss"]
    return AutoencoderModel(from_dict(AutoencoderConfig, meta["net"]), loss["disc_channels"], loss["disc_layers"],
                            discriminator=loss["disc_weight"] > 0)  # fmt: skip


def adaptive_weight(rec: Tensor, adv: Tensor, last: Tensor) -> Tensor:
    """VQGAN's lambda = ||grad_last rec|| / (||grad_last adv|| + 1e-4), clamped to [0, 1e4], detached."""
    g_rec = torch.autograd.grad(rec, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, last, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0, ADAPTIVE_MAX).detach()


@dataclass
class AutoencoderTask:
    """The autoencoder's loss (module docstring); batch["image"] in [-1, 1]."""

    stage: AutoencoderStage
    features: nn.Module | None = None  # phi of the perceptual term (frozen), or None

    def loss(self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        inner: AutoencoderModel = model.module if hasattr(model, "module") else model
        st, x = self.stage, batch["image"]
        ae, disc = inner.autoencoder, inner.discriminator
        mu, logvar = ae.encode(x)
        x_rec = ae.decode(sample_posterior(mu, logvar, generator))
        diff = (x - x_rec).float()
        rec = (diff.abs() if st.reconstruction == "l1" else diff.pow(2)).flatten(1).mean(1)  # (B,)
        loss = rec + st.kl_weight * kl_divergence(mu, logvar) / x[0].numel()
        if self.features is not None and st.perceptual_weight > 0:
            loss = loss + st.perceptual_weight * (self.features(x) - self.features(x_rec)).pow(2).mean(1)
        on = disc is not None and int(inner.seen) >= st.disc_start_nimg
        with torch.no_grad():
            inner.seen += len(x) * dist.world_size()
        if not on:
            return loss
        # the generator's term through a discriminator whose weights are detached: no gradient reaches them
        frozen = {k: v.detach() for k, v in disc.named_parameters()}
        adv = -torch.func.functional_call(disc, frozen, (x_rec,)).float().flatten(1).mean(1)  # (B,)
        if torch.is_grad_enabled():
            lam = adaptive_weight(rec.mean(), adv.mean(), ae.decoder.conv_out.weight)
        else:
            lam = torch.ones(())
        d_loss = hinge_d_loss(disc(x), disc(x_rec.detach()))
        return loss + st.disc_weight * lam * adv + d_loss


def _resolve_autoencoder(cfg: RunConfig, data: ImageData, run: RunDir) -> RunConfig:
    """Image size and channels from the data; nothing is checked here (the autoencoder is optional)."""
    _, c, h, _ = data.images.shape
    st = cfg.autoencoder
    if h % st.net.factor:
        return cfg  # prepare names the field
    return replace(cfg, autoencoder=replace(st, net=replace(st.net, image_size=h, in_channels=c)))


def _prepare_autoencoder(cfg: RunConfig, data: ImageData, run: RunDir) -> Prepared:
    st = cfg.autoencoder
    _, c, h, w = data.images.shape
    if h % st.net.factor or w % st.net.factor:
        raise VcdmError(f"autoencoder.net.factor must divide the data's size {h}x{w} (data.image_size), got "
                        f"{st.net.factor}")  # fmt: skip
    features = None
    if st.perceptual_weight > 0:
        from vcdm.eval.scoring import get_classifier

        extractor, _ = get_classifier(data, cfg.eval)
        features = extractor.model.features
    loss = {k: v for k, v in to_dict(st).items() if k not in ("net", "train")}
    return Prepared(
        {"net": to_dict(st.net), "loss": loss}, {"image": data.images}, AutoencoderTask(st, features)
    )


def _finish_autoencoder(model: nn.Module, cfg: RunConfig, data: ImageData, run: RunDir) -> dict[str, Any]:
    """The scale factor, measured once on (the first autoencoder.scale_images of) the training set."""
    n = min(len(data), cfg.autoencoder.scale_images)
    return {SCALE_KEY: measure_scale(model.autoencoder, data.images[:n])}


def load_latent_space(
    run_dir: str | Path, device: torch.device | str = "cpu"
) -> tuple[LatentSpace, dict[str, Any]]:
    """The run's trained autoencoder as a LatentSpace (encode / decode with its saved scale factor), and its meta."""
    stage = RunDir(run_dir).stage("autoencoder")
    if RunDir(run_dir).stage_meta("autoencoder") is None:
        raise VcdmError(f"{stage}: no autoencoder export; train one with `vcdm train autoencoder {run_dir}`")
    model, meta = load_model(stage, "autoencoder")
    if SCALE_KEY not in meta:
        raise VcdmError(f"{stage}: the export has no {SCALE_KEY!r}; train it again with --force")
    return LatentSpace(model.autoencoder, float(meta[SCALE_KEY])).to(device), meta


def encode_for_stage(
    cfg: RunConfig, data: ImageData, run: RunDir, section: str
) -> tuple[Tensor, dict[str, Any]]:
    """A latent diffusion stage's training set: the scaled latents s * mu(x) of the run's images at the stage's
    pixel size (`section`.image_size where it has one, else the data's), and the "latent" meta its export
    records."""
    st, want = getattr(cfg, section), cfg.autoencoder.net
    space, meta = load_latent_space(run.path)
    got = space.cfg
    if (got.factor, got.latent_channels) != (want.factor, want.latent_channels):
        raise VcdmError(f"{run.stage('autoencoder')} holds an autoencoder with f = {got.factor} and "
                        f"{got.latent_channels} latent channels, but autoencoder.net asks for f = {want.factor} "
                        f"and {want.latent_channels}; train it again with --force")  # fmt: skip
    size = getattr(st, "image_size", None) or data.images.shape[-1]  # the upsampler and Palette: the data's
    z = space.encode(data.images_at(size))  # (N, latent_channels, size / f, size / f)
    latent = {"image_shape": [data.images.shape[1], size, size], "factor": got.factor,
              SCALE_KEY: space.scale_factor, "autoencoder_nimg": meta.get("nimg")}  # fmt: skip
    return z, latent


def latent_targets(
    cfg: RunConfig, data: ImageData, run: RunDir, section: str
) -> tuple[LatentSpace, Tensor, dict[str, Any]]:
    """An upsampler's or Palette model's latent training set (`section`.space 'latent'): the LatentSpace it trains
    in (its condition is made with it), the scaled latents of the run's images (its targets) and the "latent"
    meta its export records; one-line VcdmErrors when f does not divide the data's size or there is no fitting
    autoencoder."""
    latent_side(data.images.shape[-1], cfg.autoencoder.net.factor, section)
    z, latent = encode_for_stage(cfg, data, run, section)
    return latent_space_for(run.path, {"kind": section, "latent": latent}), z, latent


def latent_space_for(
    run_dir: str | Path, meta: dict[str, Any], device: torch.device | str = "cpu"
) -> LatentSpace:
    """The LatentSpace a latent stage's export (meta with "latent") was trained in: the run's autoencoder, checked
    to be the one it was trained on."""
    space, ae_meta = load_latent_space(run_dir, device)
    latent = meta["latent"]
    if ae_meta.get("nimg") != latent["autoencoder_nimg"] or ae_meta[SCALE_KEY] != latent[SCALE_KEY]:
        raise VcdmError(f"{RunDir(run_dir).stage('autoencoder')} is not the autoencoder this {meta['kind']} was "
                        f"trained on (it was retrained since); train the {meta['kind']} again with --force")  # fmt: skip
    return space


register(StageKind(
    name="autoencoder", summary="KL-regularised autoencoder (latent diffusion's first stage): reconstruction + KL "
    "[+ patch discriminator]", train_path="autoencoder.train", prepare=_prepare_autoencoder,
    build=build_autoencoder, init_stream=0xAE, role="autoencoder", resolve=_resolve_autoencoder,
    finish=_finish_autoencoder,
))  # fmt: skip
