"""The bipartite latent (y, x_T) of a two-stage model: inversion, reconstruction, variations, interpolation.

docs/architecture.md, "Editing". y is an image's normalised embedding (the space the prior models) and x_T the
unit-scale noise that deterministic DDIM (eta = 0) decodes to the image under y. Decoding (y, x_T)
reconstructs the image; keeping y with a new x_T gives a variation (DALL-E 2, Ramesh et al. 2022,
Sec. 3.1); slerping both interpolates between two images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import Tensor

from vcdm.errors import VcdmError
from vcdm.fileio import atomic_write_bytes
from vcdm.guidance import classifier_free
from vcdm.pipeline import Pipeline, sampling_sigmas
from vcdm.samplers import ddim, ddim_invert
from vcdm.seeding import COMPONENT_STREAMS, START, seeded_randn


def load_pipeline(run_dir: str | Path, device: torch.device | str = "cpu") -> Pipeline:
    """The run's two-stage Pipeline with the run's embedder (inversion needs E(image))."""
    return Pipeline.from_run(run_dir, "decoder", device=device, embedder=True)


def check_two_stage(pipe: Pipeline) -> None:
    """Raise VcdmError unless the pipeline's decoder is conditioned on the embedding alone."""
    if pipe.condition != "embedding":
        raise VcdmError(
            f"editing with (y, x_T) needs a decoder conditioned on embeddings only (decoder.condition "
            f"'embedding'); this one is conditioned on {pipe.condition!r}"
        )


def check_images(pipe: Pipeline, images: Tensor, name: str = "images") -> Tensor:
    """Validate float images (B, C, H, W) of the pipeline's image shape; returns them on its device."""
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(pipe.image_shape):
        raise VcdmError(
            f"{name}: expected (B, {', '.join(map(str, pipe.image_shape))}), got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise VcdmError(f"{name}: expected float images in [-1, 1], got {images.dtype}")
    return images.to(pipe.device, torch.float32)


@torch.no_grad()
def embed(pipe: Pipeline, images: Tensor) -> Tensor:
    """Normalised embeddings y = normalize(E(x)) of images, with the run's embedder and statistics.

    Args:
        pipe: a two-stage pipeline loaded with its embedder (`load_pipeline`).
        images: float32 in [-1, 1] (B, C, H, W).
    Returns:
        float32 (B, D) on the pipeline's device.
    """
    return pipe.stats.normalize(pipe.embed_images(check_images(pipe, images)).to(pipe.device))


@torch.no_grad()
def invert(
    pipe: Pipeline, images: Tensor, *, num_steps: int, fixed_point_iters: int = 0
) -> tuple[Tensor, Tensor]:
    """The latent (y, x_T) of images: y = normalize(E(x)), x_T = DDIM inversion of x under y.

    Args:
        pipe: a two-stage pipeline with an embedder (`load_pipeline`).
        images: float32 in [-1, 1] (B, C, H, W).
        num_steps: steps of the decoder's sampling grid (`sampling_sigmas`); decode with the same number.
        fixed_point_iters: refinement iterations per step (Pan et al. 2023); each costs one network call.
    Returns:
        y_norm float32 (B, D) and x_T float32 (B, C, H, W), unit-scale noise; for a decoder in latent space
        x_T has the latent's shape (`pipe.latent_shape`): the images are encoded, then inverted.
    """
    check_two_stage(pipe)
    images = check_images(pipe, images)
    y = embed(pipe, images)
    sigmas = sampling_sigmas(pipe.decoder_diffusion, num_steps)
    x0 = pipe.latent_space.encode(images) if pipe.latent_space is not None else images
    x_T = ddim_invert(pipe.decoder, x0, sigmas, {"emb": y}, fixed_point_iters=fixed_point_iters)
    return y, x_T


@torch.no_grad()
def reconstruct(
    pipe: Pipeline, y_norm: Tensor, x_T: Tensor, *, num_steps: int, guidance: float = 1.0
) -> Tensor:
    """Decode latents (y, x_T) with deterministic DDIM (eta = 0) on the decoder's grid of num_steps steps.

    Args:
        y_norm: normalised embeddings float32 (B, D). x_T: unit-scale noise float32 (B, C, H, W).
        guidance: classifier-free weight of the decoder (1 = as trained; inversion assumes 1).
    Returns:
        images float32 in [-1, 1] (B, C, H, W), clamped (decoded by the autoencoder in latent space).
    """
    check_two_stage(pipe)
    if len(y_norm) != len(x_T):
        raise VcdmError(f"got {len(y_norm)} embeddings for {len(x_T)} noise tensors")
    sigmas = sampling_sigmas(pipe.decoder_diffusion, num_steps)
    denoiser = classifier_free(pipe.decoder, guidance)
    cond = {"emb": y_norm.to(pipe.device, torch.float32)}
    x0 = ddim(denoiser, x_T.to(pipe.device, torch.float32), sigmas, cond, eta=0.0)
    return pipe.latent_space.decode(x0) if pipe.latent_space is not None else x0.clamp(-1, 1)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio per image, for images in [-1, 1] (data range 2).

    PSNR = 10 log10(2^2 / MSE). Args: a, b float (B, ...). Returns: float32 (B,) in dB (inf where equal).
    """
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse)


@torch.no_grad()
def variations(
    pipe: Pipeline, y_norm: Tensor, seeds: Sequence[int], *, num_steps: int, guidance: float = 1.0
) -> Tensor:
    """Images that share the embedding y but not the noise: decode (y, x_T(seed)) for each seed.

    Args:
        y_norm: one normalised embedding (D,) or (1, D), used for every seed, or one per seed (len(seeds), D).
        seeds: one new x_T per seed: the decoder's starting noise for that seed, as `pipe(seeds)` draws it.
    Returns:
        float32 in [-1, 1] (len(seeds), C, H, W).
    """
    y = y_norm.reshape(-1, y_norm.shape[-1])
    if len(y) not in (1, len(seeds)):
        raise VcdmError(f"variations: got {len(y)} embeddings for {len(seeds)} seeds (expected 1 or equal)")
    x_T = seeded_randn(
        seeds, tuple(pipe.latent_shape), COMPONENT_STREAMS["decoder"], START, device=pipe.device
    )
    return reconstruct(pipe, y.expand(len(seeds), -1), x_T, num_steps=num_steps, guidance=guidance)


def slerp(a: Tensor, b: Tensor, t: float | Tensor, *, eps: float = 1e-4) -> Tensor:
    """Spherical linear interpolation along the last dimension (Shoemake 1985).

    slerp(a, b, t) = sin((1 - t) W) / sin(W) a + sin(t W) / sin(W) b with cos W = a.b / (|a| |b|).
    Where sin W < eps (nearly parallel or opposite vectors, or a zero vector) it falls back to the linear
    interpolation (1 - t) a + t b, which is what slerp tends to as W -> 0. t = 0 gives a and t = 1 gives b.

    Args:
        a, b: float tensors (..., D), broadcastable.
        t: a float, or a tensor broadcastable to the leading dims of a and b (e.g. t (F,) with a and b
            (1, D) gives (F, D): one interpolant per t).
    Returns:
        float tensor of the broadcast shape (..., D).
    """
    t = torch.as_tensor(t, dtype=torch.float64, device=a.device)[..., None]
    a64, b64 = a.double(), b.double()
    norms = a64.norm(dim=-1, keepdim=True) * b64.norm(dim=-1, keepdim=True)
    cos = ((a64 * b64).sum(-1, keepdim=True) / norms.clamp_min(1e-30)).clamp(-1, 1)
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    curved = (sin >= eps) & (norms > 0)
    safe_sin = torch.where(curved, sin, torch.ones_like(sin))
    wa = torch.where(curved, torch.sin((1 - t) * omega) / safe_sin, 1 - t)
    wb = torch.where(curved, torch.sin(t * omega) / safe_sin, t)
    return (wa * a64 + wb * b64).to(torch.promote_types(a.dtype, b.dtype))


@torch.no_grad()
def interpolate_latents(
    pipe: Pipeline, y_norm: Tensor, x_T: Tensor, num_frames: int, *, num_steps: int, guidance: float = 1.0
) -> Tensor:
    """Decode num_frames latents slerped from (y[0], x_T[0]) to (y[1], x_T[1]), t evenly spaced in [0, 1].

    Args:
        y_norm: two normalised embeddings (2, D). x_T: their noise (2, C, H, W) (from `invert`).
        num_frames: >= 2; the first and last frames decode the two latents themselves.
    Returns:
        float32 in [-1, 1] (num_frames, C, H, W).
    """
    if num_frames < 2:
        raise VcdmError(f"interpolation: num_frames must be >= 2, got {num_frames}")
    if len(y_norm) != 2 or len(x_T) != 2:
        raise VcdmError(f"interpolation: expected two latents, got {len(y_norm)} and {len(x_T)}")
    t = torch.linspace(0, 1, num_frames, dtype=torch.float64)  # (F,)
    ys = slerp(y_norm[:1], y_norm[1:], t)  # (F, D)
    flat = x_T.flatten(1)
    x_Ts = slerp(flat[:1], flat[1:], t).reshape(num_frames, *x_T.shape[1:])  # (F, C, H, W)
    return reconstruct(pipe, ys, x_Ts, num_steps=num_steps, guidance=guidance)


@torch.no_grad()
def interpolate(
    pipe: Pipeline,
    image_a: Tensor,
    image_b: Tensor,
    num_frames: int,
    *,
    num_steps: int,
    fixed_point_iters: int = 0,
    guidance: float = 1.0,
) -> Tensor:
    """A row of frames from image_a to image_b: invert both, slerp y and x_T, decode.

    Args:
        image_a, image_b: float32 in [-1, 1], (C, H, W) or (1, C, H, W).
        num_frames: >= 2; frame 0 reconstructs image_a and the last one image_b.
        num_steps, fixed_point_iters: of the inversion (and num_steps of the decoding); see `invert`.
    Returns:
        float32 in [-1, 1] (num_frames, C, H, W).
    """
    pair = torch.cat([image_a.reshape(1, *image_a.shape[-3:]), image_b.reshape(1, *image_b.shape[-3:])])
    y, x_T = invert(pipe, pair, num_steps=num_steps, fixed_point_iters=fixed_point_iters)
    return interpolate_latents(pipe, y, x_T, num_frames, num_steps=num_steps, guidance=guidance)


def save_latent(path: str | Path, y_norm: Tensor, x_T: Tensor, meta: dict[str, Any] | None = None) -> None:
    """Write latents (y (B, D), x_T (B, C, H, W)) and string metadata to a .safetensors file, atomically."""
    tensors = {
        "y": y_norm.detach().float().cpu().contiguous(),
        "x_T": x_T.detach().float().cpu().contiguous(),
    }
    atomic_write_bytes(path, save(tensors, metadata={k: str(v) for k, v in (meta or {}).items()}))


def load_latent(path: str | Path) -> tuple[Tensor, Tensor, dict[str, str]]:
    """Read a file written by `save_latent`: (y (B, D), x_T (B, C, H, W), metadata)."""
    path = Path(path)
    if not path.is_file():
        raise VcdmError(f"{path}: latent file not found (write one with `vcdm edit invert`)")
    try:
        with safe_open(str(path), "pt") as f:
            meta, keys = f.metadata() or {}, set(f.keys())
            if keys != {"y", "x_T"}:
                raise VcdmError(f"{path}: expected tensors 'y' and 'x_T', found {sorted(keys)}")
            y, x_T = f.get_tensor("y"), f.get_tensor("x_T")
    except VcdmError:
        raise
    except Exception as e:  # safetensors raises its own error types for a corrupt header
        raise VcdmError(f"{path}: not a readable .safetensors latent file ({e})") from None
    if y.ndim != 2 or x_T.ndim != 4 or len(y) != len(x_T) or y.numel() == 0:
        raise VcdmError(
            f"{path}: expected y (B, D) and x_T (B, C, H, W), got {tuple(y.shape)}, {tuple(x_T.shape)}"
        )
    return y, x_T, meta
