"""vcdm: two-stage (visual chain-of-thought) diffusion image generation."""

__version__ = "0.1.0"
