"""CLIP guidance: classifier guidance with log p(a | x) replaced by the scaled cosine similarity between the
embedding of x0_hat and a target embedding (docs/architecture.md, "Guidance"; Nichol et al. 2022, GLIDE, Sec. 2.4, uses
a noised CLIP instead; here the embedder sees the denoised estimate, as in Bansal et al. 2023, Universal
Guidance, forward guidance)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcdm.embedders import LearnedEmbedder
from vcdm.errors import VcdmError
from vcdm.guidance.compose import in_sigma_range, shift_by_gradient
from vcdm.samplers.common import Denoiser

EmbedFn = Callable[[Tensor], Tensor]  # differentiable: images (B, C, H, W) in [-1, 1] -> (B, D)
THROUGH = ("x0", "denoised")


def image_embed_fn(embedder: object) -> EmbedFn:
    """A differentiable image-embedding function for an embedder (`encode_images` runs under no_grad).

    Args:
        embedder: a LearnedEmbedder (its ConvEncoder is called), a ConvEncoder or other nn.Module, or an
            embedder with a differentiable `image_features(x) -> (B, D)` method (ClipEmbedder).
    Returns:
        a function images (B, C, H, W) float in [-1, 1] -> (B, D) whose output carries gradient.
    """
    if isinstance(embedder, LearnedEmbedder):
        embedder = embedder.encoder
    if isinstance(embedder, nn.Module):
        module = embedder.eval()

        def embed(x: Tensor) -> Tensor:
            param = next(module.parameters(), None)
            return module(x.to(param.device) if param is not None else x)

        return embed
    features = getattr(embedder, "image_features", None)
    if callable(features):
        return features
    raise VcdmError(f"CLIP guidance: {type(embedder).__name__} has no differentiable image path "
                    "(expected a LearnedEmbedder, an nn.Module or an `image_features` method)")  # fmt: skip


def clip_target(embedder: object, *, image: Tensor | None = None, text: str | None = None) -> Tensor:
    """The target embedding for CLIP guidance, from an image or a text (exactly one).

    Args:
        embedder: an Embedder (`encode_images`; `encode_text` for a text target).
        image: (C, H, W) or (1, C, H, W) float32 in [-1, 1], the size the embedder expects.
        text: a prompt; embedders without a text encoder raise VcdmError.
    Returns:
        (D,) float32, L2-normalised.
    """
    if (image is None) == (text is None):
        raise VcdmError("CLIP guidance: give exactly one target, an image or a text")
    if text is not None:
        emb = embedder.encode_text([text])
    else:
        emb = embedder.encode_images(image if image.ndim == 4 else image[None])
    return F.normalize(emb.float().reshape(-1), dim=0)


def embedding_similarity(embed_fn: EmbedFn, images: Tensor, target: Tensor) -> Tensor:
    """cos(E(images), target) per sample: (B,); target (D,) or (B, D)."""
    emb = embed_fn(images)  # (B, D)
    emb = emb.to(torch.promote_types(emb.dtype, torch.float32))  # at least float32 (bf16 under autocast)
    return F.cosine_similarity(emb, target.to(emb.device, emb.dtype).expand_as(emb), dim=1)


def clip_guidance(
    denoiser: Denoiser,
    embed_fn: EmbedFn,
    target_emb: Tensor,
    scale: float,
    *,
    through: str = "x0",
    sigma_range: tuple[float, float] | None = None,
) -> Denoiser:
    """Guide x0_hat toward a target embedding: the similarity cos(E(D(x, sigma)), target) plays log p(a | x).

    through="x0": D_s = D + s sigma^2 grad_x cos(E(D(x, sigma)), target), the gradient taken through the
        denoiser (one backward pass through the network per step); the classifier-guidance formula.
    through="denoised": D_s = D + s grad_{x0_hat} cos(E(x0_hat), target), a gradient step on x0_hat itself
        that skips the network's Jacobian (He et al. 2024, Manifold Preserving Guided Diffusion, Eq. 9);
        cheaper, and s is then a step size in image units, not a likelihood weight.

    Args:
        denoiser: any denoiser (e.g. after classifier-free guidance).
        embed_fn: differentiable images -> (B, D), see `image_embed_fn`.
        target_emb: (D,) or (B, D) target embedding(s) (normalised here).
        scale: s >= 0; 0 returns `denoiser` itself.
        through: "x0" or "denoised", as above.
        sigma_range: (lo, hi): guide only for sigma in [lo, hi].
    Returns:
        a denoiser with the same contract.
    """
    if through not in THROUGH:
        raise VcdmError(f"CLIP guidance: through must be one of {THROUGH}, got {through!r}")
    if scale < 0:
        raise VcdmError(f"CLIP guidance scale must be >= 0, got {scale}")
    if scale == 0:
        return denoiser
    target = F.normalize(target_emb.detach().float(), dim=-1)

    def guided(x: Tensor, sigma: Tensor, cond: dict[str, Tensor] | None) -> Tensor:
        if not in_sigma_range(sigma, sigma_range):
            return denoiser(x, sigma, cond)
        if through == "x0":
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                denoised = denoiser(xg, sigma, cond)
                sim = embedding_similarity(embed_fn, denoised, target)
                # Samples do not interact, so the gradient of the sum is each sample's own gradient.
                (grad,) = torch.autograd.grad(sim.sum(), xg)
            return shift_by_gradient(denoised.detach(), sigma, grad, scale)
        denoised = denoiser(x, sigma, cond)
        with torch.enable_grad():
            x0 = denoised.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(embedding_similarity(embed_fn, x0, target).sum(), x0)
        return denoised + scale * grad.to(denoised.dtype)

    return guided
